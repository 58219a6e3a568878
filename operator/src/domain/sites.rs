//! Sites and zones: a site's nodes are those labelled `topology.kubernetes.io/zone=<zone>`.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::Site;
use crate::domain::projections::CachedNode;

/// The node label that places a node in a site.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The zone a site's nodes are labelled with: `spec.zone`, or the Site's name.
pub fn zone_of(site: &Site) -> String {
    site.spec.zone.clone().unwrap_or_else(|| site.name_any())
}

/// The zone a node is labelled into, if any.
pub fn zone_of_node(node: &CachedNode) -> Option<&str> {
    node.labels().get(ZONE_LABEL).map(String::as_str)
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
