//! Pod predicates: whether a pod holds resources on its node, whether it is Ready, what it
//! requests, and which portal service it belongs to.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::domain::resources::Resources;
use crate::meta::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::quantity::Amount;

/// The label naming the portal service a pod (and every child) belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// A pod that holds resources on its node: not finished (Succeeded or Failed).
pub fn holds_resources(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A pod whose Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node a pod is bound to, once scheduled.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// What a pod requests: its containers' CPU and memory requests, and one pod slot.
pub fn requests(pod: &Pod) -> Resources {
    let mut sum = Resources {
        pods: Amount::count(1),
        ..Resources::ZERO
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    for container in containers {
        if let Some(requests) = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
        {
            let r = Resources::from_map_lenient(requests, crate::domain::resources::Resource::name);
            sum.cpu += r.cpu;
            sum.memory += r.memory;
        }
    }
    sum
}

/// The portal service a pod was made for: `(namespace, name)` when Verbund manages it.
pub fn portal_service_of(pod: &Pod) -> Option<(String, String)> {
    let labels = pod.labels();
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    Some((pod.namespace()?, labels.get(INSTANCE_LABEL)?.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, ready: bool, labels: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "labels": labels },
            "spec": { "nodeName": "n1", "containers": [
                { "name": "a", "resources": { "requests": { "cpu": "250m", "memory": "1Gi" } } },
                { "name": "b", "resources": { "requests": { "cpu": "250m" } } },
            ] },
            "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] }
        }))
        .expect("pod")
    }

    #[test]
    fn a_running_pod_requests_the_sum_of_its_containers() {
        let p = pod("Running", true, serde_json::json!({}));
        assert!(holds_resources(&p) && is_ready(&p));
        let r = requests(&p);
        assert_eq!(r.cpu, Amount(500));
        assert_eq!(r.memory, Amount::parse("1Gi").expect("q"));
        assert_eq!(r.pods, Amount::count(1));
        assert_eq!(node_of(&p), Some("n1"));
        assert!(!holds_resources(&pod(
            "Succeeded",
            false,
            serde_json::json!({})
        )));
    }

    #[test]
    fn only_managed_pods_belong_to_a_portal_service() {
        let managed = pod(
            "Running",
            true,
            serde_json::json!({ MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: "wohnsitz" }),
        );
        assert_eq!(
            portal_service_of(&managed),
            Some(("ns".to_string(), "wohnsitz".to_string()))
        );
        let foreign = pod(
            "Running",
            true,
            serde_json::json!({ INSTANCE_LABEL: "wohnsitz" }),
        );
        assert_eq!(portal_service_of(&foreign), None);
    }
}
