//! Where a baseline finds a pod spec (in a Pod, or in the pod template of a workload), and the
//! compact form the caches keep workloads and network policies in for the audit.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::rules::{Workload, WorkloadFacts};

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

/// A workload as the caches keep it: its metadata (managed fields without their field sets),
/// its replica count, whether another workload made it, and the audit's facts of a workload
/// someone declared (the pod template itself is not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedWorkload<K> {
    pub metadata: ObjectMeta,
    pub replicas: Option<i32>,
    /// Made by another workload (a Deployment's ReplicaSet, a CronJob's Job): audited through
    /// its owner.
    pub derived: bool,
    /// None for derived workloads, and for objects without a readable pod spec.
    pub facts: Option<WorkloadFacts>,
    kind: PhantomData<fn() -> K>,
}

impl<K> CachedWorkload<K> {
    /// A workload known only by its metadata (tests, and objects without a pod spec).
    pub fn new(metadata: ObjectMeta, replicas: Option<i32>) -> Self {
        Self {
            metadata,
            replicas,
            derived: false,
            facts: None,
            kind: PhantomData,
        }
    }
}

/// True when `metadata` names a controller owner.
pub fn has_controller(metadata: &ObjectMeta) -> bool {
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

impl<'de, K: Resource<DynamicType = ()>> Deserialize<'de> for CachedWorkload<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = Value::deserialize(deserializer)?;
        // List items come without their kind; the facts need it.
        value["kind"] = Value::String(K::kind(&()).into_owned());
        value["apiVersion"] = Value::String(K::api_version(&()).into_owned());
        let mut metadata: ObjectMeta =
            serde_json::from_value(value["metadata"].take()).map_err(serde::de::Error::custom)?;
        crate::meta::strip_managed_fields(&mut metadata);
        crate::meta::keep_own_annotations(&mut metadata);
        let derived = has_controller(&metadata);
        let replicas = value["spec"]["replicas"]
            .as_i64()
            .and_then(|r| i32::try_from(r).ok());
        let facts = (!derived)
            .then(|| workload_of(&value))
            .flatten()
            .map(|w| super::rules::facts(&w.as_workload()));
        Ok(Self {
            metadata,
            replicas,
            derived,
            facts,
            kind: PhantomData,
        })
    }
}

impl<K: Resource<DynamicType = ()>> Resource for CachedWorkload<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A NetworkPolicy as the audit sees it: whether it denies all ingress or all egress of its
/// namespace by default (selects every pod and allows nothing in that direction).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedNetworkPolicy {
    pub metadata: ObjectMeta,
    pub denies_ingress: bool,
    pub denies_egress: bool,
}

impl<'de> Deserialize<'de> for CachedNetworkPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let policy = NetworkPolicy::deserialize(deserializer)?;
        let (denies_ingress, denies_egress) = super::audit::default_denies(&policy);
        let mut metadata = policy.metadata;
        crate::meta::strip_managed_fields(&mut metadata);
        metadata.annotations = None;
        Ok(Self {
            metadata,
            denies_ingress,
            denies_egress,
        })
    }
}

impl Resource for CachedNetworkPolicy {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        NetworkPolicy::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        NetworkPolicy::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        NetworkPolicy::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        NetworkPolicy::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
