//! A site's status from its nodes and the pods scheduled on them (pure).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::read::Observed;
use crate::api::site::{NodeCounts, Site, SiteStatus, Utilisation};
use crate::conditions::{Desired, find, kind, reason, set_condition};
use crate::domain::resources::{Resource, Resources};

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// How long a site may have no Ready node before it fails over, and how long its nodes must
/// be Ready again before it takes placements again (hysteresis: a flapping site does not pull
/// services back and forth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    pub grace: Duration,
    pub recovery: Duration,
}

impl Default for Failover {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
            recovery: Duration::from_secs(120),
        }
    }
}

/// The status of `site`, given what the caches say about it, at `now`.
pub fn build(site: &Site, observed: &Observed, failover: Failover, now: Timestamp) -> SiteStatus {
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
    let was = find(&conditions, kind::READY).cloned();
    set_condition(
        &mut conditions,
        available(&observed.zone, total, ready),
        generation,
        now,
    );
    let since = find(&conditions, kind::AVAILABLE)
        .map(transition_time)
        .unwrap_or(now);
    for condition in [
        ready_condition(site, was.as_ref(), ready > 0, since, failover, now),
        degraded(total, ready),
        cordoned(site),
    ] {
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

fn transition_time(c: &Condition) -> Timestamp {
    c.last_transition_time.0
}

/// `now + wait`, readable in a message.
fn at(since: Timestamp, wait: Duration) -> String {
    let when = since
        .checked_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::ZERO))
        .unwrap_or(since);
    when.strftime("%H:%M:%S UTC").to_string()
}

/// `Available`: whether any node of the site is Ready; its transition time is when the site
/// lost its last Ready node, or got one back.
fn available(zone: &str, total: usize, ready: usize) -> Desired {
    if ready > 0 {
        Desired::new(
            kind::AVAILABLE,
            true,
            reason::NODES_READY,
            format!("{ready} of {total} nodes Ready"),
        )
    } else if total == 0 {
        Desired::new(
            kind::AVAILABLE,
            false,
            reason::NO_READY_NODES,
            format!("no node has the label topology.kubernetes.io/zone={zone}"),
        )
    } else {
        Desired::new(
            kind::AVAILABLE,
            false,
            reason::NO_READY_NODES,
            format!("none of its {total} nodes is Ready"),
        )
    }
}

/// `Ready`: the site takes placements. It fails over only after `failover.grace` without a
/// Ready node, and takes placements again only after `failover.recovery` with one.
fn ready_condition(
    site: &Site,
    was: Option<&Condition>,
    has_ready_nodes: bool,
    since: Timestamp,
    failover: Failover,
    now: Timestamp,
) -> Desired {
    let elapsed = now.duration_since(since).unsigned_abs();
    let was_ready = was.is_some_and(|c| c.status == "True");
    let was_failed = was.is_some_and(|c| {
        c.status == "False"
            && [reason::SITE_FAILED, reason::RECOVERING].contains(&c.reason.as_str())
    });
    if site.spec.cordoned {
        let why = site
            .spec
            .cordon_reason
            .as_deref()
            .unwrap_or("no reason given");
        return Desired::new(
            kind::READY,
            false,
            reason::CORDONED,
            format!("the site is cordoned: no new placements, services move away ({why})"),
        );
    }
    match (has_ready_nodes, was_ready, was_failed) {
        (true, _, true) if elapsed < failover.recovery => Desired::new(
            kind::READY,
            false,
            reason::RECOVERING,
            format!(
                "nodes Ready again; the site takes placements again at {} if they stay Ready",
                at(since, failover.recovery)
            ),
        ),
        (true, _, _) => Desired::new(
            kind::READY,
            true,
            reason::NODES_READY,
            "the site takes placements",
        ),
        (false, true, _) if elapsed < failover.grace => Desired::new(
            kind::READY,
            true,
            reason::NODES_LOST,
            format!(
                "no Ready node; the site fails over at {} unless one returns",
                at(since, failover.grace)
            ),
        ),
        (false, true, _) | (false, _, true) => Desired::new(
            kind::READY,
            false,
            reason::SITE_FAILED,
            format!(
                "no Ready node for {} s or more: no new placements, its services move to the other sites",
                failover.grace.as_secs()
            ),
        ),
        (false, false, false) => Desired::new(
            kind::READY,
            false,
            reason::NO_READY_NODES,
            "no Ready node: no placements until one joins",
        ),
    }
}

/// When the site's `Ready` must be looked at again although nothing else changes: at the end
/// of a grace or recovery period.
pub fn next_check(status: &SiteStatus, failover: Failover, now: Timestamp) -> Option<Duration> {
    let ready = find(&status.conditions, kind::READY)?;
    let since = transition_time(find(&status.conditions, kind::AVAILABLE)?);
    let wait = match ready.reason.as_str() {
        reason::NODES_LOST => failover.grace,
        reason::RECOVERING => failover.recovery,
        _ => return None,
    };
    let elapsed = now.duration_since(since).unsigned_abs();
    Some(wait.saturating_sub(elapsed) + Duration::from_secs(1))
}

fn degraded(total: usize, ready: usize) -> Desired {
    if ready < total {
        Desired::new(
            kind::DEGRADED,
            true,
            reason::NODES_NOT_READY,
            format!(
                "{} of {total} nodes are not Ready: the site's allocatable counts only Ready nodes",
                total - ready
            ),
        )
    } else {
        Desired::new(
            kind::DEGRADED,
            false,
            reason::ALL_NODES_READY,
            format!("all {total} nodes are Ready"),
        )
    }
}

fn cordoned(site: &Site) -> Desired {
    if site.spec.cordoned {
        let why = site
            .spec
            .cordon_reason
            .as_deref()
            .unwrap_or("no reason given");
        Desired::new(kind::CORDONED, true, reason::CORDONED, why)
    } else {
        Desired::new(
            kind::CORDONED,
            false,
            reason::NOT_CORDONED,
            "the site takes new placements",
        )
    }
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
        let status = build(
            &site(false),
            &observed(nodes, pods),
            Failover::default(),
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
            Failover::default(),
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
            Failover::default(),
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
        let first = build(&s, &o, Failover::default(), Timestamp::UNIX_EPOCH);
        let mut again = s.clone();
        again.status = Some(first.clone());
        let later = Timestamp::from_second(3600).expect("t");
        assert_eq!(
            build(&again, &o, Failover::default(), later),
            first,
            "nothing to write"
        );
    }

    /// The site after one reconcile at second `t` with these nodes.
    fn step(site: &mut Site, nodes: Vec<Arc<CachedNode>>, t: i64) -> (String, String) {
        let now = Timestamp::from_second(t).expect("t");
        let status = build(site, &observed(nodes, vec![]), FAST, now);
        site.status = Some(status);
        let ready = find(
            &site.status.as_ref().expect("status").conditions,
            kind::READY,
        )
        .expect("Ready");
        (ready.status.clone(), ready.reason.clone())
    }

    const FAST: Failover = Failover {
        grace: Duration::from_secs(60),
        recovery: Duration::from_secs(120),
    };

    fn pair(status: &str, reason: &str) -> (String, String) {
        (status.to_string(), reason.to_string())
    }

    #[test]
    fn a_site_fails_over_only_after_the_grace_and_returns_only_after_the_recovery() {
        let mut s = site(false);
        let up = || vec![node("n1", true), node("n2", true)];
        let down = || vec![node("n1", false), node("n2", false)];
        assert_eq!(step(&mut s, up(), 0), pair("True", reason::NODES_READY));
        // Lost at 100: still placed on until 160.
        assert_eq!(step(&mut s, down(), 100), pair("True", reason::NODES_LOST));
        let status = s.status.clone().expect("status");
        let now = Timestamp::from_second(130).expect("t");
        assert_eq!(
            next_check(&status, FAST, now),
            Some(Duration::from_secs(31)),
            "looked at again when the grace ends"
        );
        assert_eq!(step(&mut s, down(), 159), pair("True", reason::NODES_LOST));
        assert_eq!(
            step(&mut s, down(), 160),
            pair("False", reason::SITE_FAILED)
        );
        // Nodes gone altogether: still failed.
        assert_eq!(
            step(&mut s, vec![], 200),
            pair("False", reason::SITE_FAILED)
        );
        // Back at 300: recovering until 420, a relapse fails it again at once.
        assert_eq!(step(&mut s, up(), 300), pair("False", reason::RECOVERING));
        assert_eq!(
            step(&mut s, down(), 310),
            pair("False", reason::SITE_FAILED)
        );
        assert_eq!(step(&mut s, up(), 320), pair("False", reason::RECOVERING));
        assert_eq!(step(&mut s, up(), 439), pair("False", reason::RECOVERING));
        assert_eq!(step(&mut s, up(), 440), pair("True", reason::NODES_READY));
        let conditions = &s.status.as_ref().expect("status").conditions;
        assert!(is_true(conditions, kind::AVAILABLE));
    }

    #[test]
    fn a_blip_within_the_grace_moves_nothing() {
        let mut s = site(false);
        assert_eq!(
            step(&mut s, vec![node("n1", true)], 0),
            pair("True", reason::NODES_READY)
        );
        assert_eq!(
            step(&mut s, vec![node("n1", false)], 10),
            pair("True", reason::NODES_LOST)
        );
        assert_eq!(
            step(&mut s, vec![node("n1", true)], 40),
            pair("True", reason::NODES_READY)
        );
        assert_eq!(
            next_check(
                s.status.as_ref().expect("status"),
                FAST,
                Timestamp::from_second(41).expect("t")
            ),
            None
        );
    }

    #[test]
    fn a_new_site_without_ready_nodes_takes_no_placements_and_no_hysteresis_once_they_join() {
        let mut s = site(false);
        assert_eq!(
            step(&mut s, vec![], 0),
            pair("False", reason::NO_READY_NODES)
        );
        assert_eq!(
            step(&mut s, vec![node("n1", false)], 10),
            pair("False", reason::NO_READY_NODES)
        );
        assert_eq!(
            step(&mut s, vec![node("n1", true)], 20),
            pair("True", reason::NODES_READY)
        );
    }

    #[test]
    fn a_partial_failure_degrades_capacity_without_failing_the_site() {
        let mut s = site(false);
        step(&mut s, vec![node("n1", true), node("n2", true)], 0);
        let ready = step(&mut s, vec![node("n1", true), node("n2", false)], 1000);
        assert_eq!(ready, pair("True", reason::NODES_READY));
        let status = s.status.as_ref().expect("status");
        assert!(is_true(&status.conditions, kind::DEGRADED));
        assert_eq!(status.allocatable["cpu"], Quantity("32".into()));
        assert_eq!(status.capacity["cpu"], Quantity("64".into()));
    }
}
