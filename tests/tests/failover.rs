//! Site failover on the kwok-simulated pool: a data centre whose nodes all stop reporting
//! Ready is excluded from placement after the grace period and its services move to the other
//! sites; when it returns, it takes placements again only after the recovery hold.
//!
//! The data centre fails the way a lost site shows in Kubernetes when its machines are
//! decommissioned or its cloud provider reports them gone: its nodes are deleted, and later
//! registered again. (Nodes that stay but turn NotReady take the same path through the Site's
//! `Available` condition; the unit tests of `controller::site::status` cover them, since the
//! kwok controller that plays the pool's kubelets keeps reporting the nodes it manages Ready.)
//! The operator runs as its own process with a short grace and hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use verbund_operator::api::{PortalService, Site};
use verbund_operator::conditions::{self, kind, reason};
use verbund_tests::cluster::ZONE_LABEL;
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{operator_binary, wait};

const TIMEOUT: Duration = Duration::from_secs(180);
const GRACE: Duration = Duration::from_secs(15);
const RECOVERY: Duration = Duration::from_secs(30);
const FAILING: &str = "rz-ego";

/// The nodes of `zone`.
async fn nodes_of(client: &Client, zone: &str) -> Vec<String> {
    Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{ZONE_LABEL}={zone}")))
        .await
        .expect("nodes")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

/// Ready pods of the service, per zone.
async fn ready_per_zone(client: &Client, ns: &str, name: &str) -> BTreeMap<String, usize> {
    let zones: BTreeMap<String, String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .expect("pods");
    let mut per_zone = BTreeMap::new();
    for pod in pods.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if let (true, None, Some(node)) = (
            ready,
            pod.metadata.deletion_timestamp.as_ref(),
            pod.spec.and_then(|s| s.node_name),
        ) {
            *per_zone
                .entry(zones.get(&node).cloned().unwrap_or(node))
                .or_default() += 1;
        }
    }
    per_zone
}

/// The zones the Deployment's pods may run in (its required node affinity).
async fn allowed_zones(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment");
    d.spec
        .template
        .spec
        .and_then(|s| s.affinity)
        .and_then(|a| a.node_affinity)
        .and_then(|a| a.required_during_scheduling_ignored_during_execution)
        .map(|r| {
            r.node_selector_terms
                .iter()
                .flat_map(|t| t.match_expressions.clone().unwrap_or_default())
                .filter(|e| e.key == ZONE_LABEL)
                .flat_map(|e| e.values.unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the failing site's Ready condition has `status` and `reason`.
async fn until_site(sites: &Api<Site>, what: &str, status: &str, reason: &str) {
    wait::until(TIMEOUT, what, || async {
        let site = sites.get(FAILING).await.map_err(|e| e.to_string())?;
        match site_ready(&site) {
            (s, r) if s == status && r == reason => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

fn site_ready(site: &Site) -> (String, String) {
    site.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, kind::READY))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_site_is_left_after_the_grace_and_used_again_after_the_hold() {
    let (pool, client, kubeconfig) = verbund_tests::faults::pool().await;
    let grace = format!("--site-failure-grace-seconds={}", GRACE.as_secs());
    let recovery = format!("--site-recovery-seconds={}", RECOVERY.as_secs());
    let mut operator =
        OperatorProcess::start(operator_binary!(), &kubeconfig, &[&grace, &recovery])
            .await
            .expect("operator starts");
    operator.await_ready(TIMEOUT).await.expect("operator ready");

    // A tenant of the Land with one service on every site.
    let name = verbund_tests::faults::tenant(&client, "fallback").await;
    let services: Api<PortalService> = Api::namespaced(client.clone(), &name);
    let service = json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService", "metadata": { "name": "formular" },
        "spec": {
            "image": "registry.saarland.de/portal/test@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ports": [{ "name": "http", "port": 8080 }],
            "replicas": { "min": 3, "max": 3 },
            "resources": { "cpu": "100m", "memory": "128Mi", "cpuLimit": "200m", "memoryLimit": "256Mi" },
            "protectionLevel": "Normal",
        }
    });
    services
        .patch(
            "formular",
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(&service),
        )
        .await
        .expect("service");
    wait::ready(&services, "formular", TIMEOUT).await;
    wait::until(TIMEOUT, "one pod per site", || async {
        let seen = ready_per_zone(&client, &name, "formular").await;
        if seen.len() == 3 {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;

    // The data centre fails.
    let sites: Api<Site> = Api::all(client.clone());
    let failing = nodes_of(&client, FAILING).await;
    assert!(!failing.is_empty());
    let failed_at = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    for node in &failing {
        nodes
            .delete(node, &DeleteParams::default())
            .await
            .expect("node deleted");
    }
    // Within the grace it stays Ready (a blip moves nothing) and says what is coming.
    until_site(
        &sites,
        "the site reporting its nodes lost",
        "True",
        reason::NODES_LOST,
    )
    .await;
    let lost = failed_at.elapsed();
    assert!(lost < GRACE, "NodesLost came after the grace ({lost:?})");
    assert!(
        allowed_zones(&client, &name, "formular")
            .await
            .contains(&FAILING.to_string()),
        "still placed on within the grace"
    );
    // Then it fails over, with a Warning Event, and placement leaves it out.
    until_site(&sites, "the site failed over", "False", reason::SITE_FAILED).await;
    assert!(
        failed_at.elapsed() >= GRACE,
        "failed over before the grace ended ({:?})",
        failed_at.elapsed()
    );
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields(&format!("involvedObject.name={FAILING}")))
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason::SITE_FAILED)
                && e.type_.as_deref() == Some("Warning")),
        "a Warning Event SiteFailed: {:?}",
        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    // Every pod of the service Ready on the other two sites.
    wait::until(
        TIMEOUT,
        "the service Ready on the remaining sites",
        || async {
            let seen = ready_per_zone(&client, &name, "formular").await;
            let ps = services.get("formular").await.map_err(|e| e.to_string())?;
            let ready = ps
                .status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, kind::READY));
            if ready && !seen.contains_key(FAILING) && seen.values().sum::<usize>() >= 3 {
                Ok(())
            } else {
                Err(format!("ready {ready}, pods {seen:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "failover: nodes gone -> service Ready elsewhere in {:.1} s (grace {} s)",
        failed_at.elapsed().as_secs_f64(),
        GRACE.as_secs()
    );
    // The service says why the site is left out, and its pods may no longer go there.
    wait::until(TIMEOUT, "the service re-placed", || async {
        let ps = services.get("formular").await.map_err(|e| e.to_string())?;
        let placed = ps
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, kind::PLACED))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let zones = allowed_zones(&client, &name, "formular").await;
        if placed.contains(&format!("{FAILING} (not Ready)"))
            && !zones.contains(&FAILING.to_string())
        {
            Ok(())
        } else {
            Err(format!("Placed: {placed}; zones {zones:?}"))
        }
    })
    .await;
    eprintln!(
        "failover: nodes gone -> service re-placed in {:.1} s (grace {} s)",
        failed_at.elapsed().as_secs_f64(),
        GRACE.as_secs()
    );

    // The data centre returns: held back for the recovery period, then used again.
    let returned_at = Instant::now();
    pool.add_nodes(FAILING, failing.len())
        .await
        .expect("the nodes return");
    until_site(&sites, "the site recovering", "False", reason::RECOVERING).await;
    assert!(
        !allowed_zones(&client, &name, "formular")
            .await
            .contains(&FAILING.to_string()),
        "no placement while recovering"
    );
    until_site(&sites, "the site Ready again", "True", reason::NODES_READY).await;
    assert!(
        returned_at.elapsed() >= RECOVERY,
        "used again before the hold ended ({:?})",
        returned_at.elapsed()
    );
    wait::until(TIMEOUT, "a pod back on the site", || async {
        let seen = ready_per_zone(&client, &name, "formular").await;
        if seen.get(FAILING).copied().unwrap_or(0) >= 1 {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    wait::ready(&services, "formular", TIMEOUT).await;

    operator.signal("TERM").await.expect("stop");
    let (status, log) = operator.wait(Duration::from_secs(30)).await.expect("stops");
    assert!(status.success(), "{log}");
}
