//! The PortalService controller: runs each online service as a hardened, highly available
//! workload on the sites certified for it, scaled for the calendar's peaks within the
//! tenant's share of the pool.
//!
//! Stages: [`read`] -> [`validate`] -> placement (`crate::placement`: where a service may
//! run) and [`scaling`] (floor from windows, ceiling from the tenant's quota) -> [`build`] ->
//! [`apply`] -> [`status`]. Triggers: the service, its children, its pods, the sites and
//! baselines, its tenant and the tenant's quotas.

pub mod apply;
pub mod build;
pub mod read;
pub mod scaling;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use self::build::Inputs;
use self::status::Facts;
use super::error::Failure;
use super::status::Written;
use super::{Context, Error, reconciled};
use crate::api::Tenant;
use crate::api::portal_service::{PortalService, PortalServiceStatus};
use crate::cache::Caches;
use crate::cache::Stores;
use crate::conditions::{self, kind};
use crate::controller::apply::cached;
use crate::domain::pods;
use crate::domain::resources::Resource;
use crate::domain::tenancy::{self, QUOTA_NAME};
use crate::placement;

/// Reconciles running at once: bounded, so that a burst shares the API server fairly.
const CONCURRENCY: u16 = 16;

const CONTROLLER: &str = "portalservice";

/// Portal services in the namespaces of the tenant `tenant`.
fn services_of_tenant(stores: &Stores, tenant: &str) -> Vec<ObjectRef<PortalService>> {
    let Some(tenant) = stores.tenants.get(&ObjectRef::new(tenant)) else {
        return Vec::new();
    };
    tenant
        .spec
        .namespaces
        .iter()
        .flat_map(|ns| stores.services_in(ns))
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

/// The services of `tenant` whose ceiling the tenant's use can move: those already limited,
/// and those whose maximum no longer fits in what the tenant has left.
fn services_near_ceiling(stores: &Stores, tenant: &str) -> Vec<ObjectRef<PortalService>> {
    let Some(tenant) = stores.tenants.get(&ObjectRef::new(tenant)) else {
        return Vec::new();
    };
    let total = tenancy::tenant_total(&tenant.spec.quota).unwrap_or_default();
    let quotas = tenancy::tenant_quotas(&tenant, |ns| cached(&stores.quotas, ns, QUOTA_NAME));
    let free = total.saturating_sub(tenancy::tenant_used(&quotas));
    tenant
        .spec
        .namespaces
        .iter()
        .flat_map(|ns| stores.services_in(ns))
        .filter(|ps| {
            let limited = ps
                .status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, kind::SCALING_LIMITED));
            let wanted = scaling::per_pod(&ps.spec).times(i64::from(ps.spec.replicas.max));
            limited || Resource::ALL.iter().any(|r| wanted.get(*r) > free.get(*r))
        })
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

fn all_services(services: &Store<PortalService>) -> Vec<ObjectRef<PortalService>> {
    services
        .state()
        .iter()
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// The controller, subscribed to the shared caches; runs until `shutdown` when polled.
pub fn run(
    ctx: Arc<Context>,
    caches: &Caches,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let stores = ctx.stores.clone();
    let (s1, s2, s3, s4) = (
        stores.clone(),
        stores.clone(),
        stores.clone(),
        stores.clone(),
    );
    Controller::for_shared_stream(
        caches.portal_services().all(),
        stores.portal_services.clone(),
    )
    .owns_shared_stream(caches.deployments().all())
    .owns_shared_stream(caches.services().all())
    .owns_shared_stream(caches.service_accounts().all())
    .owns_shared_stream(caches.autoscalers().all())
    .owns_shared_stream(caches.disruption_budgets().all())
    .owns_shared_stream(caches.network_policies().all())
    .owns_shared_stream(caches.ingresses().all())
    // Pods becoming ready change the status.
    .watches_shared_stream(caches.pods().all(), |pod| {
        pods::portal_service_of(&pod)
            .map(|(ns, name)| ObjectRef::<PortalService>::new(&name).within(&ns))
    })
    // A site cordoned, added, recertified or failed over (its spec and whether it takes
    // placements, not the figures that follow every pod), or a baseline changed: re-place
    // and re-check every service.
    .watches_shared_stream(
        caches
            .sites()
            .changed_in(|site| (site.metadata.generation, placement::takes_placements(site))),
        move |_| all_services(&s1.portal_services),
    )
    .watches_shared_stream(caches.baselines().spec(), move |_| {
        all_services(&s2.portal_services)
    })
    // The tenant's quota, level or allowed sites changed.
    .watches_shared_stream(caches.tenants().spec(), move |t: Arc<Tenant>| {
        services_of_tenant(&s3, &t.name_any())
    })
    // The tenant's use changed: only services whose ceiling it can move care.
    .watches_shared_stream(caches.quotas().all(), move |q| {
        tenancy::tenant_label(&*q)
            .map(|t| services_near_ceiling(&s4, t))
            .unwrap_or_default()
    })
    // No debounce (a trailing one starves a busy service): triggers for a service already
    // being reconciled collapse into one more run; status writes are paced instead.
    .with_config(Config::default().concurrency(CONCURRENCY))
    .graceful_shutdown_on(async move { shutdown.cancelled().await })
    .run(
        reconcile,
        |s, e, c| super::error_policy(CONTROLLER, s, e, c),
        ctx,
    )
    .for_each(|_| futures::future::ready(()))
}

async fn reconcile(ps: Arc<PortalService>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconciled(CONTROLLER, &*ps, &ctx, reconcile_service(&ps, &ctx)).await
}

#[instrument(skip_all, fields(service = %ps.name_any(), namespace = %ps.namespace().unwrap_or_default()))]
async fn reconcile_service(ps: &PortalService, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let observed = match read::read(ps, &ctx.stores)
        .and_then(|o| validate::validate(ps, &o.tenant).map(|()| o))
    {
        Ok(observed) => observed,
        Err(error) => {
            let error = Error::from(error);
            let failure = Failure::from(&error);
            write_status(ps, ctx, status::refused(ps, &failure, now), Some(&failure)).await?;
            return Err(error);
        }
    };

    let placement = placement::place(ps, &observed.tenant, observed.sites.iter().map(|s| &**s));
    let min_replicas = observed
        .baseline
        .as_ref()
        .and_then(|b| b.spec.rules.min_replicas);
    let floor = scaling::floor(&ps.spec, min_replicas, now);
    let running = observed.pods.iter().filter(|p| p.holds_resources).count();
    let ceiling = scaling::ceiling_for(
        &ps.spec,
        floor.min,
        tenancy::tenant_total(&observed.tenant.spec.quota).unwrap_or_default(),
        observed.tenant_used,
        i64::try_from(running).unwrap_or(i64::MAX),
    );
    let desired = build::build(
        ps,
        &Inputs {
            tenant: &observed.tenant.name_any(),
            eligible: &placement.eligible,
            min_replicas: floor.min,
            max_replicas: ceiling.max,
            gateway_namespace: &ctx.settings.gateway_namespace,
        },
    )?;
    let findings = status::findings(ps, &desired, observed.baseline.as_deref(), floor.min, now);

    let outcome = apply::apply_children(ps, desired, floor.min, ctx)
        .await
        .map_err(Error::from);
    let wrote_children = outcome.as_ref().is_ok_and(|wrote| *wrote);
    let failure = outcome.as_ref().err().map(Failure::from);
    let facts = Facts {
        observed: &observed,
        placement: &placement,
        floor: &floor,
        ceiling: &ceiling,
        findings: &findings,
    };
    let status = status::build(ps, &facts, failure.as_ref(), now);
    let old = ps
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if placement.eligible.is_empty() && !conditions::is_false(old, kind::PLACED) {
        let message = format!(
            "no site can take the service: {}; running pods are left as they are",
            placement.exclusions()
        );
        ctx.writer
            .event(
                ps,
                EventType::Warning,
                conditions::reason::NO_ELIGIBLE_SITE,
                message,
            )
            .await;
    }
    if failure.is_none()
        && let Some(wait) = first_status_wait(ps, &status, wrote_children, now)
    {
        return Ok(Action::requeue(wait));
    }
    let written = write_status(ps, ctx, status, failure.as_ref()).await?;
    outcome?;
    if let Written::Paced(wait) = written {
        return Ok(Action::requeue(wait));
    }

    // Come back when a scaling window opens or closes, or for the resync.
    let boundary = scaling::next_boundary(&ps.spec, now)
        .and_then(|at| at.duration_since(now).try_into().ok())
        .map(|d: Duration| d + Duration::from_secs(1));
    Ok(match boundary {
        Some(wait) if wait < ctx.settings.resync => Action::requeue(wait),
        _ => ctx.settings.next_resync(),
    })
}

/// Writes the status when it changed (see `controller::status`).
async fn write_status(
    ps: &PortalService,
    ctx: &Context,
    status: PortalServiceStatus,
    failure: Option<&Failure>,
) -> Result<Written, Error> {
    let api: Api<PortalService> =
        Api::namespaced(ctx.client.clone(), &ps.namespace().unwrap_or_default());
    super::status::write(ctx, &api, ps, ps.status.as_ref(), &status, failure).await
}

/// How long a new service's first status may wait for its pods: one status that says Ready,
/// rather than one per pod that comes up (DESIGN §7: writes per service).
pub const FIRST_STATUS_WAIT: Duration = Duration::from_secs(10);

/// How much longer a new service's first status waits: while its children were just written
/// or its pods are coming up, and the service is younger than [`FIRST_STATUS_WAIT`].
fn first_status_wait(
    ps: &PortalService,
    status: &PortalServiceStatus,
    wrote_children: bool,
    now: Timestamp,
) -> Option<Duration> {
    if ps.status.is_some() {
        return None;
    }
    let created = ps.metadata.creation_timestamp.as_ref()?.0;
    let age = Duration::try_from(now.duration_since(created)).unwrap_or_default();
    let coming_up = wrote_children || !conditions::is_true(&status.conditions, kind::READY);
    (coming_up && age < FIRST_STATUS_WAIT)
        .then(|| (FIRST_STATUS_WAIT - age).min(Duration::from_secs(2)))
}
