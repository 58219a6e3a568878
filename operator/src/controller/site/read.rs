//! What the caches say about a site: its nodes and the pods bound to them.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::Site;
use crate::cache::Stores;
use crate::domain::projections::{CachedNode, CachedPod};
use crate::domain::sites::{zone_of, zone_of_node};

/// A site's share of the world.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The zone its nodes were looked up by.
    pub zone: String,
    pub nodes: Vec<Arc<CachedNode>>,
    /// Pods bound to those nodes.
    pub pods: Vec<Arc<CachedPod>>,
}

/// Sites whose zone is `zone`.
pub fn sites_in_zone(sites: &Store<Site>, zone: &str) -> Vec<ObjectRef<Site>> {
    sites
        .state()
        .iter()
        .filter(|s| zone_of(s) == zone)
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

pub fn read(site: &Site, stores: &Stores) -> Observed {
    let zone = zone_of(site);
    let nodes: Vec<Arc<CachedNode>> = stores
        .nodes
        .state()
        .into_iter()
        .filter(|n| zone_of_node(n) == Some(zone.as_str()))
        .collect();
    let pods = nodes
        .iter()
        .flat_map(|n| stores.pods_on_node(&n.name_any()))
        .collect();
    Observed { zone, nodes, pods }
}
