//! Compact projections of pods and nodes, read straight from the API server's JSON: only what
//! placement, site accounting and the services' status need (DESIGN §7, memory per object).
//! A pod's requests are summed once, when it is read, not at every lookup; managed fields,
//! annotations, volumes, containers' details are never decoded at all.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Deserializer};

use crate::domain::resources::{Resource, Resources};
use crate::quantity::Amount;

/// The metadata Verbund keeps of a pod or node.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
}

impl From<Meta> for ObjectMeta {
    fn from(m: Meta) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            labels: m.labels,
            owner_references: m.owner_references,
            ..Default::default()
        }
    }
}

#[derive(Deserialize, Default)]
struct Condition {
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    status: String,
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// A pod as the caches keep it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    /// The node it is bound to, once scheduled.
    pub node: Option<String>,
    /// Not Succeeded or Failed: it holds its requests on its node.
    pub holds_resources: bool,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Its containers' CPU and memory requests, and one pod slot.
    pub requests: Resources,
    /// The spec of a pod no workload made (no controller owner), for the baseline audit;
    /// None for the pods of workloads, which are audited through their owner.
    pub standalone_spec: Option<Box<PodSpec>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPod {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: RawPodSpec,
    #[serde(default)]
    status: RawPodStatus,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPodSpec {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    containers: Vec<RawContainer>,
}

#[derive(Deserialize, Default)]
struct RawContainer {
    #[serde(default)]
    resources: RawResources,
}

#[derive(Deserialize, Default)]
struct RawResources {
    #[serde(default)]
    requests: BTreeMap<String, Quantity>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPodStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    conditions: Vec<Condition>,
}

impl<'de> Deserialize<'de> for CachedPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        let raw = RawPod::deserialize(&value).map_err(serde::de::Error::custom)?;
        let standalone = !raw
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true));
        let standalone_spec = standalone
            .then(|| serde_json::from_value(value["spec"].take()).ok())
            .flatten()
            .map(Box::new);
        let mut requests = Resources {
            pods: Amount::count(1),
            ..Resources::ZERO
        };
        for container in &raw.spec.containers {
            let r = Resources::from_map_lenient(&container.resources.requests, Resource::name);
            requests.cpu += r.cpu;
            requests.memory += r.memory;
        }
        Ok(CachedPod {
            metadata: raw.metadata.into(),
            node: raw.spec.node_name,
            holds_resources: !matches!(raw.status.phase.as_deref(), Some("Succeeded" | "Failed")),
            ready: is_true(&raw.status.conditions, "Ready"),
            requests,
            standalone_spec,
        })
    }
}

/// A node as the caches keep it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedNode {
    pub metadata: ObjectMeta,
    pub ready: bool,
    pub unschedulable: bool,
    pub capacity: Resources,
    pub allocatable: Resources,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawNode {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: RawNodeSpec,
    #[serde(default)]
    status: RawNodeStatus,
}

#[derive(Deserialize, Default)]
struct RawNodeSpec {
    #[serde(default)]
    unschedulable: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawNodeStatus {
    #[serde(default)]
    capacity: BTreeMap<String, Quantity>,
    #[serde(default)]
    allocatable: BTreeMap<String, Quantity>,
    #[serde(default)]
    conditions: Vec<Condition>,
}

impl<'de> Deserialize<'de> for CachedNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawNode::deserialize(deserializer)?;
        Ok(CachedNode {
            metadata: raw.metadata.into(),
            ready: is_true(&raw.status.conditions, "Ready"),
            unschedulable: raw.spec.unschedulable.unwrap_or(false),
            capacity: Resources::from_map_lenient(&raw.status.capacity, Resource::name),
            allocatable: Resources::from_map_lenient(&raw.status.allocatable, Resource::name),
        })
    }
}

/// Implements `kube::Resource` for a projection of a core kind.
macro_rules! core_resource {
    ($type:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("")
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_resource!(CachedPod, "Pod", "pods", NamespaceResourceScope);
core_resource!(CachedNode, "Node", "nodes", ClusterResourceScope);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_pod_is_read_down_to_what_verbund_uses() {
        let pod: CachedPod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                          "labels": { "app": "x" }, "annotations": { "big": "x".repeat(1000) },
                          "managedFields": [{ "manager": "kubelet", "fieldsV1": { "f:status": {} } }] },
            "spec": { "nodeName": "n1", "volumes": [{ "name": "tmp", "emptyDir": {} }], "containers": [
                { "name": "a", "image": "x", "resources": { "requests": { "cpu": "250m", "memory": "1Gi" } } },
                { "name": "b", "image": "y", "resources": { "requests": { "cpu": "250m" } } },
            ] },
            "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] }
        }))
        .expect("a pod");
        assert_eq!(pod.node.as_deref(), Some("n1"));
        assert!(pod.ready && pod.holds_resources);
        assert_eq!(pod.requests.cpu, Amount(500));
        assert_eq!(pod.requests.pods, Amount::count(1));
        assert_eq!(pod.meta().annotations, None, "annotations are not kept");
        assert_eq!(pod.meta().managed_fields, None);
        assert_eq!(pod.meta().resource_version.as_deref(), Some("7"));
        assert_eq!(<CachedPod as Resource>::plural(&()), "pods");
        assert!(
            pod.standalone_spec.is_some(),
            "no owner: kept for the audit"
        );
        let owned: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "q", "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                          "name": "r", "uid": "u", "controller": true }] },
            "spec": { "containers": [{ "name": "a", "image": "x" }] }
        }))
        .expect("a pod");
        assert_eq!(owned.standalone_spec, None, "audited through its owner");
    }

    #[test]
    fn a_node_keeps_readiness_and_resources() {
        let node: CachedNode = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "n1", "labels": { "topology.kubernetes.io/zone": "rz-land" } },
            "spec": { "unschedulable": true },
            "status": { "capacity": { "cpu": "32", "pods": "110" }, "allocatable": { "cpu": "31" },
                        "conditions": [{ "type": "Ready", "status": "False" }] }
        }))
        .expect("a node");
        assert!(!node.ready && node.unschedulable);
        assert_eq!(node.capacity.cpu, Amount(32000));
        assert_eq!(node.allocatable.cpu, Amount(31000));
    }
}
