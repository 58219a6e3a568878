//! The Site controller: keeps each site's status current from its nodes and the pods
//! scheduled on them. A Site has no children; its status is what operators read.

pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::{Context, Error, apply_status};
use crate::api::Site;
use crate::cache::Caches;

const CONTROLLER: &str = "site";

/// The node label that places a node in a site.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The zone a site's nodes are labelled with: `spec.zone`, or the Site's name.
pub fn zone_of(site: &Site) -> String {
    site.spec.zone.clone().unwrap_or_else(|| site.name_any())
}

/// Sites whose zone is `zone`.
fn sites_in_zone(sites: &Store<Site>, zone: &str) -> Vec<ObjectRef<Site>> {
    sites
        .state()
        .iter()
        .filter(|s| zone_of(s) == zone)
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// The controller, subscribed to the shared caches; runs until `shutdown` when polled.
pub fn run(
    ctx: Arc<Context>,
    caches: &Caches,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let sites_for_nodes = ctx.stores.sites.clone();
    let sites_for_pods = ctx.stores.sites.clone();
    let nodes = ctx.stores.nodes.clone();
    Controller::for_shared_stream(caches.sites(), ctx.stores.sites.clone())
        .watches_shared_stream(caches.nodes(), move |node: Arc<Node>| {
            node.labels()
                .get(ZONE_LABEL)
                .map(|zone| sites_in_zone(&sites_for_nodes, zone))
                .unwrap_or_default()
        })
        .watches_shared_stream(caches.pods(), move |pod| {
            let node: Option<String> = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let zone: Option<String> = node
                .and_then(|n: String| nodes.get(&ObjectRef::new(&n)))
                .and_then(|n| n.labels().get(ZONE_LABEL).cloned());
            zone.map(|zone: String| sites_in_zone(&sites_for_pods, &zone))
                .unwrap_or_default()
        })
        // Pods come and go in bursts; one status update per burst is enough.
        .with_config(Config::default().debounce(Duration::from_secs(1)))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            reconcile,
            |s, e, c| super::error_policy(CONTROLLER, s, e, c),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

#[instrument(skip_all, fields(site = %site.name_any()))]
async fn reconcile(site: Arc<Site>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[CONTROLLER])
        .start_timer();
    // read: the site's nodes and the pods bound to them, from the caches.
    let zone = zone_of(&site);
    let nodes: Vec<Arc<Node>> = ctx
        .stores
        .nodes
        .state()
        .into_iter()
        .filter(|n| n.labels().get(ZONE_LABEL) == Some(&zone))
        .collect();
    let node_names: std::collections::BTreeSet<String> =
        nodes.iter().map(|n| n.name_any()).collect();
    let pods: Vec<_> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| node_names.contains(n))
        })
        .collect();

    // build: the status, a pure function of the above.
    let status = status::build(&site, &zone, &nodes, &pods, Timestamp::now());
    status::record_metrics(&site.name_any(), &status, &ctx.metrics);

    // status: written only when it changed.
    if site.status.as_ref() != Some(&status) {
        let api: Api<Site> = Api::all(ctx.client.clone());
        let value = serde_json::to_value(&status).map_err(|e| Error::Invalid {
            reason: "Internal",
            message: e.to_string(),
        })?;
        apply_status(&ctx, &api, &site.name_any(), value).await?;
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}
