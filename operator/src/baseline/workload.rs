//! Where a baseline finds a pod spec: in a Pod, or in the pod template of a workload.

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::Value;

use super::rules::Workload;

/// The kinds a baseline covers, with their API group/version and plural; the admission policy
/// matches exactly these.
pub const KINDS: [(&str, &str, &str, &str); 7] = [
    // (group, version, kind, plural)
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

/// A workload's kind, replica count and pod spec, owned.
#[derive(Debug, Clone, Default)]
pub struct OwnedWorkload {
    pub kind: String,
    pub replicas: Option<i32>,
    pub pod: PodSpec,
}

impl OwnedWorkload {
    pub fn as_workload(&self) -> Workload<'_> {
        Workload {
            kind: &self.kind,
            replicas: self.replicas,
            pod: &self.pod,
        }
    }
}

/// The JSON path of the pod spec inside an object of `kind` (the same paths the policy's
/// `podSpec` variable follows).
fn pod_spec_value<'a>(kind: &str, object: &'a Value) -> &'a Value {
    match kind {
        "Pod" => &object["spec"],
        "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &object["spec"]["template"]["spec"],
    }
}

/// Reads a serialised Pod or workload; `None` when it is not a kind baselines cover or has no
/// readable pod spec.
pub fn workload_of(object: &Value) -> Option<OwnedWorkload> {
    let kind = object["kind"].as_str()?;
    if !KINDS.iter().any(|(_, _, k, _)| *k == kind) {
        return None;
    }
    let pod: PodSpec = serde_json::from_value(pod_spec_value(kind, object).clone()).ok()?;
    let replicas = object["spec"]["replicas"]
        .as_i64()
        .and_then(|r| i32::try_from(r).ok());
    Some(OwnedWorkload {
        kind: kind.to_string(),
        replicas,
        pod,
    })
}

/// True when `object` is made by another workload (a ReplicaSet's pods, a Deployment's
/// ReplicaSets, a CronJob's Jobs): the audit reports the owner, once.
pub fn derived(object: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["controller"] == Value::Bool(true)))
}
