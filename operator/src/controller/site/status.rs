//! A site's status from its nodes and the pods scheduled on them (pure).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;

use crate::api::site::{NodeCounts, Site, SiteStatus, Utilisation};
use crate::conditions::{Desired, set_condition};
use crate::metrics::Metrics;
use crate::quantity::Amount;

/// The resources a site accounts for.
const RESOURCES: [&str; 3] = ["cpu", "memory", "pods"];

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// A pod that holds resources on its node (not finished).
fn holds_resources(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Sums a per-node resource map over nodes.
fn sum_nodes<'a>(
    nodes: impl Iterator<Item = &'a BTreeMap<String, Quantity>>,
) -> BTreeMap<&'static str, Amount> {
    let mut sums: BTreeMap<&'static str, Amount> =
        RESOURCES.iter().map(|r| (*r, Amount::ZERO)).collect();
    for resources in nodes {
        for r in RESOURCES {
            if let Some(amount) = resources.get(r).and_then(|q| Amount::of(q).ok()) {
                *sums.entry(r).or_default() += amount;
            }
        }
    }
    sums
}

/// The resources pods request: the sum of their containers' requests, and one pod slot each.
fn requested(pods: &[Arc<Pod>]) -> BTreeMap<&'static str, Amount> {
    let mut sums: BTreeMap<&'static str, Amount> =
        RESOURCES.iter().map(|r| (*r, Amount::ZERO)).collect();
    for pod in pods.iter().filter(|p| holds_resources(p)) {
        *sums.entry("pods").or_default() += Amount::count(1);
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        for container in containers {
            let requests = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref());
            for r in ["cpu", "memory"] {
                if let Some(amount) = requests
                    .and_then(|q| q.get(r))
                    .and_then(|q| Amount::of(q).ok())
                {
                    *sums.entry(r).or_default() += amount;
                }
            }
        }
    }
    sums
}

fn quantities(amounts: &BTreeMap<&'static str, Amount>) -> BTreeMap<String, Quantity> {
    amounts
        .iter()
        .map(|(r, a)| (r.to_string(), a.to_quantity(r)))
        .collect()
}

/// Builds the status of `site` (zone `zone`) from its nodes and their pods.
pub fn build(
    site: &Site,
    zone: &str,
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> SiteStatus {
    let total = nodes.len();
    let ready_nodes: Vec<&Arc<Node>> = nodes.iter().filter(|n| node_ready(n)).collect();
    let ready = ready_nodes.len();
    let unschedulable = nodes.iter().filter(|n| node_unschedulable(n)).count();
    let capacity = sum_nodes(
        nodes
            .iter()
            .filter_map(|n| n.status.as_ref()?.capacity.as_ref()),
    );
    let allocatable = sum_nodes(
        ready_nodes
            .iter()
            .filter_map(|n| n.status.as_ref()?.allocatable.as_ref()),
    );
    let requested = requested(pods);
    let percent = |r: &str| requested[r].percent_of(allocatable[r]);
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);

    let generation = site.metadata.generation;
    let mut conditions = site
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let ready_condition = if site.spec.cordoned {
        Desired::new(
            "Ready",
            false,
            "Cordoned",
            format!(
                "the site is cordoned: no new placements, services move away ({})",
                site.spec
                    .cordon_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        )
    } else if ready == 0 {
        Desired::new(
            "Ready",
            false,
            "NoReadyNodes",
            format!("no Ready node has the label topology.kubernetes.io/zone={zone}"),
        )
    } else {
        Desired::new(
            "Ready",
            true,
            "NodesReady",
            format!("{ready} of {total} nodes Ready"),
        )
    };
    set_condition(&mut conditions, ready_condition, generation, now);
    let degraded = if ready < total {
        Desired::new(
            "Degraded",
            true,
            "NodesNotReady",
            format!("{} of {total} nodes are not Ready", total - ready),
        )
    } else {
        Desired::new(
            "Degraded",
            false,
            "AllNodesReady",
            format!("all {total} nodes are Ready"),
        )
    };
    set_condition(&mut conditions, degraded, generation, now);

    SiteStatus {
        zone: Some(zone.to_string()),
        nodes: NodeCounts {
            total: count(total),
            ready: count(ready),
            unschedulable: count(unschedulable),
        },
        capacity: quantities(&capacity),
        allocatable: quantities(&allocatable),
        requested: quantities(&requested),
        utilisation: Utilisation {
            cpu: percent("cpu"),
            memory: percent("memory"),
            pods: percent("pods"),
        },
        observed_generation: generation,
        conditions,
    }
}

/// Exports the status as gauges for the dashboards.
pub fn record_metrics(site: &str, status: &SiteStatus, metrics: &Metrics) {
    metrics
        .site_nodes
        .with_label_values(&[site, "total"])
        .set(f64::from(status.nodes.total));
    metrics
        .site_nodes
        .with_label_values(&[site, "ready"])
        .set(f64::from(status.nodes.ready));
    for (kind, map) in [
        ("capacity", &status.capacity),
        ("allocatable", &status.allocatable),
        ("requested", &status.requested),
    ] {
        for (resource, quantity) in map {
            if let Ok(amount) = Amount::of(quantity) {
                metrics
                    .site_resources
                    .with_label_values(&[site, resource, kind])
                    .set(amount.0 as f64 / 1000.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::site::SiteSpec;

    fn site(cordoned: bool) -> Site {
        let spec: SiteSpec = serde_json::from_value(serde_json::json!({
            "displayName": "RZ", "operatedBy": { "kind": "State", "name": "IT-DLZ" },
            "cordoned": cordoned, "cordonReason": if cordoned { Some("Wartung") } else { None },
        }))
        .expect("spec");
        Site::new("rz-land", spec)
    }

    fn node(name: &str, ready: bool, cpu: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "labels": { "topology.kubernetes.io/zone": "rz-land" } },
                "status": {
                    "capacity": { "cpu": cpu, "memory": "64Gi", "pods": "110" },
                    "allocatable": { "cpu": cpu, "memory": "64Gi", "pods": "110" },
                    "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }]
                }
            }))
            .expect("node"),
        )
    }

    fn pod(cpu: &str, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "p" },
                "spec": { "nodeName": "n1", "containers": [{ "name": "c", "resources": { "requests": { "cpu": cpu, "memory": "1Gi" } } }] },
                "status": { "phase": phase }
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn counts_nodes_and_sums_requests_of_running_pods() {
        let nodes = [
            node("n1", true, "32"),
            node("n2", true, "32"),
            node("n3", false, "32"),
        ];
        let pods = [
            pod("4", "Running"),
            pod("4", "Running"),
            pod("8", "Succeeded"),
        ];
        let status = build(
            &site(false),
            "rz-land",
            &nodes,
            &pods,
            Timestamp::UNIX_EPOCH,
        );
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
        assert!(crate::conditions::is_true(&status.conditions, "Ready"));
        assert!(crate::conditions::is_true(&status.conditions, "Degraded"));
    }

    #[test]
    fn a_cordoned_site_is_not_ready_and_says_why() {
        let status = build(
            &site(true),
            "rz-land",
            &[node("n1", true, "8")],
            &[],
            Timestamp::UNIX_EPOCH,
        );
        let ready = crate::conditions::find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "Cordoned");
        assert!(ready.message.contains("Wartung"));
    }

    #[test]
    fn a_site_without_nodes_is_not_ready() {
        let status = build(&site(false), "rz-land", &[], &[], Timestamp::UNIX_EPOCH);
        assert_eq!(
            crate::conditions::find(&status.conditions, "Ready").map(|c| c.reason.as_str()),
            Some("NoReadyNodes")
        );
        assert_eq!(status.utilisation.cpu, 0);
    }
}
