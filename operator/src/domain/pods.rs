//! Which portal service a pod belongs to. What a pod requests, whether it is Ready and holds
//! resources are read once, into `projections::CachedPod`.

use kube::ResourceExt;

use crate::domain::projections::CachedPod;
use crate::meta::{MANAGED_BY, MANAGED_BY_LABEL};

/// The label naming the portal service a pod (and every child) belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// The portal service a pod was made for: `(namespace, name)` when Verbund manages it.
pub fn portal_service_of(pod: &CachedPod) -> Option<(String, String)> {
    let labels = pod.labels();
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    Some((pod.namespace()?, labels.get(INSTANCE_LABEL)?.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(labels: serde_json::Value) -> CachedPod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "labels": labels },
            "spec": { "nodeName": "n1", "containers": [] },
        }))
        .expect("pod")
    }

    #[test]
    fn only_managed_pods_belong_to_a_portal_service() {
        let managed =
            pod(serde_json::json!({ MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_LABEL: "wohnsitz" }));
        assert_eq!(
            portal_service_of(&managed),
            Some(("ns".to_string(), "wohnsitz".to_string()))
        );
        let foreign = pod(serde_json::json!({ INSTANCE_LABEL: "wohnsitz" }));
        assert_eq!(portal_service_of(&foreign), None);
    }
}
