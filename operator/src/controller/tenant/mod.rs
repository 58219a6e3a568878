//! The Tenant controller: each organisation's namespaces, with quota, default limits, admin
//! rights and network isolation; released or deleted by `deletionPolicy` when they leave.
//!
//! Stages: [`read`] -> [`validate`] -> [`build`] (namespaces, limits, admins, network
//! policies) -> [`apply`] (guard rails) -> [`quota`] (the tenant's quota split over its
//! namespaces) -> [`apply::bind_admins`] (admins last, once the rails hold) -> [`status`]. [`rbac`] is the role tenant admins get. Triggers: the Tenant, its children, its
//! namespaces (by label), its baseline, the PortalServices in its namespaces.

pub mod apply;
pub mod build;
pub mod quota;
pub mod rbac;
pub mod read;
pub mod status;
pub mod validate;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use self::read::Observed;
use super::error::Failure;
use super::status::Written;
use super::{Context, Error, reconciled};
use crate::api::tenant::Tenant;
use crate::baseline::pod_security;
use crate::cache::Caches;
use crate::domain::tenancy;

/// Reconciles running at once: bounded, so that a burst shares the API server fairly.
const CONCURRENCY: u16 = 4;

const CONTROLLER: &str = "tenant";

/// Held by every Tenant until its namespaces are released or deleted.
pub const FINALIZER: &str = "verbund.saarland.de/tenant-namespaces";

/// The controller, subscribed to the shared caches; runs until `shutdown` when polled.
pub fn run(
    ctx: Arc<Context>,
    caches: &Caches,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let tenants = ctx.stores.tenants.clone();
    let namespaces = ctx.stores.namespaces.clone();
    let tenants_for_baselines = tenants.clone();
    let tenants_for_routes = tenants.clone();
    let tenants_for_namespaces = tenants.clone();
    let tenants_for_sites = tenants.clone();
    // The children, mapped by `owning_tenant` rather than `owns_shared_stream` (see there).
    Controller::for_shared_stream(caches.tenants().all(), tenants)
        .watches_shared_stream(caches.quotas().all(), owning_tenant)
        .watches_shared_stream(caches.limit_ranges().all(), owning_tenant)
        .watches_shared_stream(caches.role_bindings().all(), owning_tenant)
        .watches_shared_stream(caches.network_policies().all(), owning_tenant)
        // The isolation binding: deleted or edited, it is restored at once.
        .watches_shared_stream(caches.policy_bindings().all(), owning_tenant)
        // Namespaces carry no owner reference (they may outlive the tenant): map by label,
        // and an unlabelled one (released, then handed over) to the tenants listing it.
        .watches_shared_stream(
            caches.namespaces().all(),
            move |ns| match tenancy::tenant_label(&*ns) {
                Some(tenant) => vec![ObjectRef::<Tenant>::new(tenant)],
                None => tenants_for_namespaces
                    .state()
                    .into_iter()
                    .filter(|t| t.spec.namespaces.contains(&ns.name_any()))
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect(),
            },
        )
        // A baseline's Pod Security level goes into the namespace labels.
        .watches_shared_stream(caches.baselines().spec(), move |baseline| {
            let name = baseline.name_any();
            tenants_for_baselines
                .state()
                .into_iter()
                .filter(|t| tenancy::baseline_name(t) == name)
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
        // Routes on a shared host: another tenant's longer prefix is carved out of this one's.
        .watches_shared_stream(caches.tenants().spec(), move |changed| {
            let hosts: Vec<&str> = changed
                .spec
                .routes
                .iter()
                .map(|r| r.host.as_str())
                .collect();
            tenants_for_routes
                .state()
                .into_iter()
                .filter(|t| t.name_any() != changed.name_any())
                .filter(|t| {
                    t.spec
                        .routes
                        .iter()
                        .any(|r| hosts.contains(&r.host.as_str()))
                })
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
        // The status lists the sites a tenant may use, for admission to place its pods.
        .watches_shared_stream(caches.sites().spec(), move |site| {
            let name = site.name_any();
            tenants_for_sites
                .state()
                .into_iter()
                .filter(|t| tenancy::may_use(t, &name))
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
        // The status counts the tenant's services: created or deleted.
        .watches_shared_stream(caches.portal_services().spec(), move |service| {
            tenant_of_namespace(
                &namespaces,
                service.namespace().as_deref().unwrap_or_default(),
            )
        })
        // No debounce (a trailing one starves a busy tenant): triggers for a tenant already
        // being reconciled collapse into one more run; status writes are paced instead.
        .with_config(Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            reconcile,
            |t, e, c| super::error_policy(CONTROLLER, t, e, c),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

/// The Tenant owning `child`, named as the cluster-scoped object it is. kube's
/// `owns_shared_stream` names an owner in its child's namespace, so a tenant with ten
/// namespaces was queued under eleven names and reconciled up to [`CONCURRENCY`] times at once,
/// each run writing the same status.
fn owning_tenant<K: Resource>(child: Arc<K>) -> Option<ObjectRef<Tenant>> {
    let (kind, api_version) = (Tenant::kind(&()), Tenant::api_version(&()));
    child
        .owner_references()
        .iter()
        .find(|owner| owner.kind == kind && owner.api_version == api_version)
        .map(|owner| ObjectRef::new(&owner.name))
}

/// The tenant owning `namespace`, by the label Verbund put on it.
fn tenant_of_namespace(
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    namespace: &str,
) -> Option<ObjectRef<Tenant>> {
    let ns = namespaces.get(&ObjectRef::new(namespace))?;
    tenancy::tenant_label(&*ns).map(ObjectRef::new)
}

async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let work = finalizer::finalizer(&api, FINALIZER, tenant.clone(), |event| async {
        match event {
            Finalizer::Apply(tenant) => reconcile_tenant(&tenant, &ctx).await,
            Finalizer::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    });
    reconciled(CONTROLLER, &*tenant, &ctx, async {
        work.await.map_err(|error| match error {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            other => Error::Finalizer(other.to_string()),
        })
    })
    .await
}

#[instrument(skip_all, fields(tenant = %tenant.name_any()))]
async fn reconcile_tenant(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let observed = read::read(tenant, &ctx.stores);
    let outcome = converge(tenant, &observed, ctx).await;
    let failure = outcome.as_ref().err().map(Failure::from);
    let written = write_status(tenant, &observed, failure.as_ref(), ctx).await?;
    outcome?;
    Ok(match written {
        Written::Paced(wait) => Action::requeue(wait),
        Written::Done => ctx.settings.next_resync(),
    })
}

/// Validate, build and apply: the cluster as the tenant asks for it.
async fn converge(tenant: &Tenant, observed: &Observed, ctx: &Context) -> Result<(), Error> {
    validate::validate(tenant, observed)?;
    let pod_security = observed
        .pod_security
        .unwrap_or(pod_security::WITHOUT_BASELINE);
    let desired = build::build(tenant, pod_security, &ctx.settings)?;
    let bindings = apply::apply_children(tenant, desired, ctx).await?;
    quota::reconcile_quotas(tenant, ctx).await?;
    apply::bind_admins(bindings, ctx).await?;
    for namespace in &observed.released {
        apply::release_namespace(tenant, namespace, ctx).await?;
    }
    Ok(())
}

/// Writes the status when it changed (see `controller::status`).
async fn write_status(
    tenant: &Tenant,
    observed: &Observed,
    failure: Option<&Failure>,
    ctx: &Context,
) -> Result<Written, Error> {
    let status = status::build(tenant, observed, failure, Timestamp::now());
    let api = Api::<Tenant>::all(ctx.client.clone());
    super::status::write(ctx, &api, tenant, tenant.status.as_ref(), &status, failure).await
}

/// The Tenant is being deleted: every namespace follows `deletionPolicy`.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    let labelled: Vec<String> = ctx
        .stores
        .namespaces
        .state()
        .iter()
        .filter(|ns| tenancy::tenant_label(&***ns) == Some(name.as_str()))
        .map(|ns| ns.name_any())
        .collect();
    for namespace in labelled {
        apply::release_namespace(tenant, &namespace, ctx).await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    #[test]
    fn a_child_in_a_namespace_names_its_tenant_without_one() {
        let tenant = testing::tenant("lhs", &["lhs-portal", "lhs-intern"], json!({}));
        let mut quota = testing::quota("lhs-intern", json!({ "pods": "4" }), json!({}));
        quota.metadata.owner_references = Some(vec![
            tenant.controller_owner_ref(&()).expect("owner reference"),
        ]);
        let owner = owning_tenant(Arc::new(quota)).expect("owned");
        assert_eq!(owner, ObjectRef::<Tenant>::new("lhs"));
        assert_eq!(
            owner.namespace, None,
            "one name per tenant, not one per namespace"
        );
        let unowned = testing::quota("lhs-intern", json!({ "pods": "4" }), json!({}));
        assert_eq!(owning_tenant(Arc::new(unowned)), None);
    }
}
