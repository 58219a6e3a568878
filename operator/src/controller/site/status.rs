//! A site's status from its nodes and the pods scheduled on them (pure).

use k8s_openapi::jiff::Timestamp;

use super::read::Observed;
use crate::api::site::{NodeCounts, Site, SiteStatus, Utilisation};
use crate::conditions::{Desired, kind, reason, set_condition};
use crate::domain::resources::{Resource, Resources};

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The status of `site`, given what the caches say about it, at `now`.
pub fn build(site: &Site, observed: &Observed, now: Timestamp) -> SiteStatus {
    let nodes = &observed.nodes;
    let total = nodes.len();
    let ready = nodes.iter().filter(|n| n.ready).count();
    let unschedulable = nodes.iter().filter(|n| n.unschedulable).count();
    let capacity: Resources = nodes.iter().map(|n| n.capacity).sum();
    // Only Ready nodes can take pods.
    let allocatable: Resources = nodes
        .iter()
        .filter(|n| n.ready)
        .map(|n| n.allocatable)
        .sum();
    let requested: Resources = observed
        .pods
        .iter()
        .filter(|p| p.holds_resources)
        .map(|p| p.requests)
        .sum();
    let percent = |r: Resource| requested.get(r).percent_of(allocatable.get(r));

    let generation = site.metadata.generation;
    let mut conditions = site
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    for condition in conditions_of(site, &observed.zone, total, ready) {
        set_condition(&mut conditions, condition, generation, now);
    }
    SiteStatus {
        zone: Some(observed.zone.clone()),
        nodes: NodeCounts {
            total: count(total),
            ready: count(ready),
            unschedulable: count(unschedulable),
        },
        capacity: capacity.by_name(),
        allocatable: allocatable.by_name(),
        requested: requested.by_name(),
        utilisation: Utilisation {
            cpu: percent(Resource::Cpu),
            memory: percent(Resource::Memory),
            pods: percent(Resource::Pods),
        },
        observed_generation: generation,
        conditions,
    }
}

/// `Ready`, `Degraded` and `Cordoned`.
fn conditions_of(site: &Site, zone: &str, total: usize, ready: usize) -> [Desired; 3] {
    let cordon_reason = site
        .spec
        .cordon_reason
        .as_deref()
        .unwrap_or("no reason given");
    let ready_condition = if site.spec.cordoned {
        Desired::new(
            kind::READY,
            false,
            reason::CORDONED,
            format!(
                "the site is cordoned: no new placements, services move away ({cordon_reason})"
            ),
        )
    } else if ready == 0 {
        Desired::new(
            kind::READY,
            false,
            reason::NO_READY_NODES,
            format!("no Ready node has the label topology.kubernetes.io/zone={zone}"),
        )
    } else {
        Desired::new(
            kind::READY,
            true,
            reason::NODES_READY,
            format!("{ready} of {total} nodes Ready"),
        )
    };
    let degraded = if ready < total {
        Desired::new(
            kind::DEGRADED,
            true,
            reason::NODES_NOT_READY,
            format!("{} of {total} nodes are not Ready", total - ready),
        )
    } else {
        Desired::new(
            kind::DEGRADED,
            false,
            reason::ALL_NODES_READY,
            format!("all {total} nodes are Ready"),
        )
    };
    let cordoned = if site.spec.cordoned {
        Desired::new(kind::CORDONED, true, reason::CORDONED, cordon_reason)
    } else {
        Desired::new(
            kind::CORDONED,
            false,
            reason::NOT_CORDONED,
            "the site takes new placements",
        )
    };
    [ready_condition, degraded, cordoned]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::site::SiteSpec;
    use crate::conditions::{find, is_true};
    use crate::domain::projections::{CachedNode, CachedPod};
    use crate::quantity::Amount;
    use crate::testing;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::sync::Arc;

    fn site(cordoned: bool) -> Site {
        let spec: SiteSpec = serde_json::from_value(serde_json::json!({
            "displayName": "RZ", "operatedBy": { "kind": "State", "name": "IT-DLZ" },
            "cordoned": cordoned, "cordonReason": if cordoned { Some("Wartung") } else { None },
        }))
        .expect("spec");
        let mut site = Site::new("rz-land", spec);
        site.metadata.generation = Some(3);
        site
    }

    fn node(name: &str, ready: bool) -> Arc<CachedNode> {
        Arc::new(testing::node(name, "rz-land", ready))
    }

    fn pod(cpu: &str, phase: &str) -> Arc<CachedPod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "p" },
                "spec": { "nodeName": "n1", "containers": [{ "name": "c", "resources": { "requests": { "cpu": cpu, "memory": "1Gi" } } }] },
                "status": { "phase": phase }
            }))
            .expect("pod"),
        )
    }

    fn observed(nodes: Vec<Arc<CachedNode>>, pods: Vec<Arc<CachedPod>>) -> Observed {
        Observed {
            zone: "rz-land".into(),
            nodes,
            pods,
        }
    }

    #[test]
    fn counts_nodes_and_sums_requests_of_running_pods() {
        let nodes = vec![node("n1", true), node("n2", true), node("n3", false)];
        let pods = vec![
            pod("4", "Running"),
            pod("4", "Running"),
            pod("8", "Succeeded"),
        ];
        let status = build(&site(false), &observed(nodes, pods), Timestamp::UNIX_EPOCH);
        assert_eq!(
            status.nodes,
            NodeCounts {
                total: 3,
                ready: 2,
                unschedulable: 0
            }
        );
        assert_eq!(status.capacity["cpu"], Quantity("96".into()));
        assert_eq!(
            status.allocatable["cpu"],
            Quantity("64".into()),
            "only Ready nodes"
        );
        assert_eq!(
            status.requested["cpu"],
            Quantity("8".into()),
            "finished pods hold nothing"
        );
        assert_eq!(status.requested["memory"], Quantity("2Gi".into()));
        assert_eq!(status.requested["pods"], Quantity("2".into()));
        assert_eq!(status.utilisation.cpu, 12);
        assert_eq!(status.observed_generation, Some(3));
        assert!(is_true(&status.conditions, kind::READY));
        assert!(is_true(&status.conditions, kind::DEGRADED));
        assert!(!is_true(&status.conditions, kind::CORDONED));
    }

    #[test]
    fn a_cordoned_site_is_not_ready_and_says_why() {
        let status = build(
            &site(true),
            &observed(vec![node("n1", true)], vec![]),
            Timestamp::UNIX_EPOCH,
        );
        let ready = find(&status.conditions, kind::READY).expect("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, reason::CORDONED);
        assert!(ready.message.contains("Wartung"));
        let cordoned = find(&status.conditions, kind::CORDONED).expect("Cordoned");
        assert_eq!(
            (cordoned.status.as_str(), cordoned.message.as_str()),
            ("True", "Wartung")
        );
    }

    #[test]
    fn a_site_without_nodes_is_not_ready() {
        let status = build(
            &site(false),
            &observed(vec![], vec![]),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            find(&status.conditions, kind::READY).map(|c| c.reason.as_str()),
            Some(reason::NO_READY_NODES)
        );
        assert_eq!(status.utilisation.cpu, 0);
        assert_eq!(status.requested["cpu"], Amount::ZERO.to_cpu());
    }

    #[test]
    fn an_unchanged_world_gives_an_unchanged_status() {
        let s = site(false);
        let o = observed(vec![node("n1", true)], vec![pod("1", "Running")]);
        let first = build(&s, &o, Timestamp::UNIX_EPOCH);
        let mut again = s.clone();
        again.status = Some(first.clone());
        let later = Timestamp::from_second(3600).expect("t");
        assert_eq!(build(&again, &o, later), first, "nothing to write");
    }
}
