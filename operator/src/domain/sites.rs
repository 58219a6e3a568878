//! Sites and zones: a site's nodes are those labelled `topology.kubernetes.io/zone=<zone>`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use crate::api::Site;
use crate::domain::resources::{Resource, Resources};

/// The node label that places a node in a site.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The zone a site's nodes are labelled with: `spec.zone`, or the Site's name.
pub fn zone_of(site: &Site) -> String {
    site.spec.zone.clone().unwrap_or_else(|| site.name_any())
}

/// The zone a node is labelled into, if any.
pub fn zone_of_node(node: &Node) -> Option<&str> {
    node.labels().get(ZONE_LABEL).map(String::as_str)
}

/// A node whose Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A node marked unschedulable (`kubectl cordon`).
pub fn node_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// A node's capacity of the pool's resources.
pub fn node_capacity(node: &Node) -> Resources {
    node.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .map(|m| Resources::from_map_lenient(m, Resource::name))
        .unwrap_or_default()
}

/// A node's allocatable resources.
pub fn node_allocatable(node: &Node) -> Resources {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(|m| Resources::from_map_lenient(m, Resource::name))
        .unwrap_or_default()
}

/// Site names by zone, for turning a node's zone label into its site.
pub fn sites_by_zone<'a>(sites: impl IntoIterator<Item = &'a Site>) -> BTreeMap<String, String> {
    sites
        .into_iter()
        .map(|s| (zone_of(s), s.name_any()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_is_found_by_its_zone_or_its_name() {
        let site = |name: &str, zone: Option<&str>| -> Site {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
                "metadata": { "name": name },
                "spec": { "displayName": name, "operatedBy": { "kind": "State", "name": "x" }, "zone": zone }
            }))
            .expect("site")
        };
        let sites = [site("rz-land", None), site("rz-uds", Some("campus-sb"))];
        let by_zone = sites_by_zone(&sites);
        assert_eq!(by_zone["rz-land"], "rz-land");
        assert_eq!(by_zone["campus-sb"], "rz-uds");
    }
}
