//! The Site controller: keeps each site's status current from its nodes and the pods
//! scheduled on them. A Site has no children; its status is what operators read.
//!
//! Stages: [`read`] (the site's nodes and pods from the caches) -> [`status`] (pure) -> write
//! when changed. Triggers: the Site, its nodes, pods bound to its nodes.

pub mod read;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::{Context, Error, reconciled};
use crate::api::Site;
use crate::cache::Caches;
use crate::domain::pods;
use crate::domain::sites::zone_of_node;

const CONTROLLER: &str = "site";

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
            zone_of_node(&node)
                .map(|zone| read::sites_in_zone(&sites_for_nodes, zone))
                .unwrap_or_default()
        })
        .watches_shared_stream(caches.pods(), move |pod| {
            pods::node_of(&pod)
                .and_then(|n| nodes.get(&ObjectRef::new(n)))
                .and_then(|node| {
                    zone_of_node(&node).map(|z| read::sites_in_zone(&sites_for_pods, z))
                })
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

async fn reconcile(site: Arc<Site>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconciled(CONTROLLER, &*site, &ctx, reconcile_site(&site, &ctx)).await
}

#[instrument(skip_all, fields(site = %site.name_any()))]
async fn reconcile_site(site: &Site, ctx: &Context) -> Result<Action, Error> {
    let observed = read::read(site, &ctx.stores);
    let status = status::build(site, &observed, Timestamp::now());
    status::record_metrics(&site.name_any(), &status, &ctx.metrics);
    if site.status.as_ref() != Some(&status) {
        ctx.writer
            .apply_status(&Api::<Site>::all(ctx.client.clone()), site, &status)
            .await?;
    }
    Ok(ctx.settings.next_resync())
}
