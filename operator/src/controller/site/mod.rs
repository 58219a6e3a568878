//! The Site controller: keeps each site's status current from its nodes and the pods
//! scheduled on them. A Site has no children; its status is what operators read.
//!
//! Stages: [`read`] (the site's nodes and pods from the caches) -> [`status`] (pure) -> write
//! when changed. Triggers: the Site, its nodes, pods bound to its nodes, and the end of a
//! failover grace or recovery period.
//!
//! Failover: a site without a Ready node stays `Ready` for `--site-failure-grace-seconds`
//! (a blip moves nothing), then turns `Ready=False` (`SiteFailed`, with a Warning Event) and
//! placement leaves it out, so its services roll onto the other eligible sites. Its nodes must
//! be Ready for `--site-recovery-seconds` before it takes placements again.

pub mod read;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use kube::runtime::events::EventType;

use super::status::Written;
use super::{Context, Error, reconciled};
use crate::api::Site;
use crate::cache::Caches;
use crate::conditions::{self, kind, reason};
use crate::domain::projections::CachedNode;
use crate::domain::sites::zone_of_node;

/// Reconciles running at once: bounded, so that a burst shares the API server fairly.
const CONCURRENCY: u16 = 2;

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
    Controller::for_shared_stream(caches.sites().all(), ctx.stores.sites.clone())
        .watches_shared_stream(caches.nodes().all(), move |node: Arc<CachedNode>| {
            zone_of_node(&node)
                .map(|zone| read::sites_in_zone(&sites_for_nodes, zone))
                .unwrap_or_default()
        })
        .watches_shared_stream(caches.pods().all(), move |pod| {
            pod.node
                .as_ref()
                .and_then(|n| nodes.get(&ObjectRef::new(n)))
                .and_then(|node| {
                    zone_of_node(&node).map(|z| read::sites_in_zone(&sites_for_pods, z))
                })
                .unwrap_or_default()
        })
        // No debounce (a trailing one would starve a busy site); status writes are paced.
        .with_config(Config::default().concurrency(CONCURRENCY))
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
    let now = Timestamp::now();
    let failover = ctx.settings.failover;
    let status = status::build(site, &observed, failover, now);
    let next_check = status::next_check(&status, failover, now);
    let event = failover_event(site, &status);
    let api = Api::<Site>::all(ctx.client.clone());
    let written =
        super::status::write(ctx, &api, site, site.status.as_ref(), &status, None).await?;
    if let Some((type_, reason, note)) = event {
        ctx.writer.event(site, type_, reason, note).await;
    }
    Ok(match (written, next_check) {
        (Written::Paced(wait), Some(check)) => Action::requeue(wait.min(check)),
        (Written::Paced(wait), None) | (Written::Done, Some(wait)) => Action::requeue(wait),
        (Written::Done, None) => ctx.settings.next_resync(),
    })
}

/// The Event for a change of the site's `Ready` that the people on call must hear of.
fn failover_event(
    site: &Site,
    status: &crate::api::site::SiteStatus,
) -> Option<(EventType, &'static str, String)> {
    let old = site
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, kind::READY))
        .map(|c| c.reason.as_str());
    let new = conditions::find(&status.conditions, kind::READY)?;
    if old == Some(new.reason.as_str()) {
        return None;
    }
    match (old, new.reason.as_str()) {
        (_, reason::NODES_LOST) | (_, reason::SITE_FAILED) => Some((
            EventType::Warning,
            reason_of(&new.reason),
            new.message.clone(),
        )),
        (Some(reason::SITE_FAILED | reason::RECOVERING), reason::RECOVERING) => {
            Some((EventType::Normal, reason::RECOVERING, new.message.clone()))
        }
        (Some(reason::RECOVERING | reason::NODES_LOST), reason::NODES_READY) => Some((
            EventType::Normal,
            reason::NODES_READY,
            "the site's nodes are Ready: it takes placements again".to_string(),
        )),
        _ => None,
    }
}

fn reason_of(reason: &str) -> &'static str {
    if reason == reason::SITE_FAILED {
        reason::SITE_FAILED
    } else {
        reason::NODES_LOST
    }
}
