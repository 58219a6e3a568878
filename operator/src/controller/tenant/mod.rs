//! The Tenant controller: each organisation's namespaces, with quota, default limits, admin
//! rights and network isolation; released or deleted by `deletionPolicy` when they leave.

pub mod build;
pub mod quota;
pub mod rbac;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};

use self::build::{Desired, NamespaceChildren, QUOTA_NAME};
use self::quota::{Amounts, NamespaceQuota, RESOURCES};
use super::{Context, Error, apply, apply_status, delete_namespaced, publish};
use crate::api::security_baseline::PodSecurityLevel;
use crate::api::tenant::{DeletionPolicy, QuotaStatus, Tenant, TenantStatus};
use crate::cache::Caches;
use crate::conditions::{Desired as Condition, set_condition};
use crate::meta::{self, MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL};
use crate::quantity::Amount;

const CONTROLLER: &str = "tenant";

/// Held by every Tenant until its namespaces are released or deleted.
pub const FINALIZER: &str = "verbund.saarland.de/tenant-namespaces";

/// Annotation on a tenant namespace's ResourceQuota: the hards Verbund intends, so that an edit
/// of `spec.hard` by someone else is reverted to them.
pub const SHARE_ANNOTATION: &str = "verbund.saarland.de/tenant-share";

/// The controller, subscribed to the shared caches; runs until `shutdown` when polled.
pub fn run(
    ctx: Arc<Context>,
    caches: &Caches,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let tenants = ctx.stores.tenants.clone();
    let namespaces = ctx.stores.namespaces.clone();
    let tenants_for_baselines = tenants.clone();
    Controller::for_shared_stream(caches.tenants(), tenants)
        .owns_shared_stream(caches.quotas())
        .owns_shared_stream(caches.limit_ranges())
        .owns_shared_stream(caches.role_bindings())
        .owns_shared_stream(caches.network_policies())
        // Namespaces carry no owner reference (they may outlive the tenant): map by label.
        .watches_shared_stream(caches.namespaces(), |ns| {
            ns.labels()
                .get(TENANT_LABEL)
                .map(|t| ObjectRef::<Tenant>::new(t))
        })
        // A baseline's Pod Security level goes into the namespace labels.
        .watches_shared_stream(caches.baselines(), move |baseline| {
            let name = baseline.name_any();
            tenants_for_baselines
                .state()
                .into_iter()
                .filter(|t| build::baseline_name(t) == name)
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
        // The status counts the tenant's services.
        .watches_shared_stream(caches.portal_services(), move |service| {
            tenant_of_namespace(
                &namespaces,
                service.namespace().as_deref().unwrap_or_default(),
            )
        })
        .with_config(Config::default().debounce(Duration::from_millis(200)))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            reconcile,
            |t, e, c| super::error_policy(CONTROLLER, t, e, c),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

/// The tenant owning `namespace`, by the label Verbund put on it.
fn tenant_of_namespace(
    namespaces: &Store<kube::core::PartialObjectMeta<Namespace>>,
    namespace: &str,
) -> Option<ObjectRef<Tenant>> {
    let ns = namespaces.get(&ObjectRef::new(namespace))?;
    ns.labels().get(TENANT_LABEL).map(|t| ObjectRef::new(t))
}

#[instrument(skip_all, fields(tenant = %tenant.name_any()))]
async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[CONTROLLER])
        .start_timer();
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    finalizer::finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(tenant) => reconcile_tenant(&tenant, &ctx).await,
            Finalizer::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|error| match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// What the caches say about the world around a tenant.
struct Observed {
    /// Spec namespaces another tenant has claimed, with that tenant.
    claimed_by_others: Vec<(String, String)>,
    /// Namespaces labelled for this tenant that are no longer in its spec.
    released: Vec<String>,
    /// The bound baseline's Pod Security level, if the baseline exists.
    pod_security: Option<PodSecurityLevel>,
}

fn read(tenant: &Tenant, ctx: &Context) -> Observed {
    let name = tenant.name_any();
    let spec: BTreeSet<&str> = tenant.spec.namespaces.iter().map(String::as_str).collect();
    let mut claimed_by_others = Vec::new();
    let mut released = Vec::new();
    for ns in ctx.stores.namespaces.state() {
        let ns_name = ns.name_any();
        match ns.labels().get(TENANT_LABEL) {
            Some(owner) if owner != &name && spec.contains(ns_name.as_str()) => {
                claimed_by_others.push((ns_name, owner.clone()))
            }
            Some(owner) if owner == &name && !spec.contains(ns_name.as_str()) => {
                released.push(ns_name)
            }
            _ => {}
        }
    }
    let pod_security = ctx
        .stores
        .baselines
        .get(&ObjectRef::new(&build::baseline_name(tenant)))
        .map(|b| b.spec.pod_security);
    Observed {
        claimed_by_others,
        released,
        pod_security,
    }
}

/// Checks what the schema cannot: namespaces that are reserved or belong to another tenant.
fn validate(tenant: &Tenant, observed: &Observed) -> Result<(), Error> {
    if let Some(reserved) = tenant
        .spec
        .namespaces
        .iter()
        .find(|ns| build::RESERVED_NAMESPACES.contains(&ns.as_str()))
    {
        return Err(Error::Invalid {
            reason: "ReservedNamespace",
            message: format!(
                "namespace {reserved} is reserved for the cluster and cannot belong to a tenant; remove it from spec.namespaces"
            ),
        });
    }
    if let Some((ns, owner)) = observed.claimed_by_others.first() {
        return Err(Error::Invalid {
            reason: "NamespaceOwnedByOtherTenant",
            message: format!(
                "namespace {ns} belongs to tenant {owner}; choose another name in spec.namespaces"
            ),
        });
    }
    quota::tenant_total(&tenant.spec.quota).map_err(|e| Error::Invalid {
        reason: "InvalidQuota",
        message: format!("spec.quota: {e}"),
    })?;
    Ok(())
}

async fn reconcile_tenant(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let observed = read(tenant, ctx);
    if let Err(error) = validate(tenant, &observed) {
        publish(
            ctx,
            tenant,
            EventType::Warning,
            error.reason(),
            error.to_string(),
        )
        .await;
        update_status(tenant, ctx, Err(&error), observed.pod_security.is_some()).await?;
        return Err(error);
    }
    let pod_security = observed
        .pod_security
        .unwrap_or(PodSecurityLevel::Restricted);
    let desired = build::build(tenant, pod_security, &ctx.settings)?;
    apply_children(tenant, desired, ctx).await?;
    reconcile_quotas(tenant, ctx).await?;
    for namespace in &observed.released {
        release_namespace(tenant, namespace, ctx).await?;
    }
    update_status(tenant, ctx, Ok(()), observed.pod_security.is_some()).await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Applies every child whose desired state differs from what is stored (or that someone else
/// changed), and removes network policies that are no longer wanted.
async fn apply_children(tenant: &Tenant, desired: Desired, ctx: &Context) -> Result<(), Error> {
    let Desired { namespaces } = desired;
    for children in namespaces {
        let NamespaceChildren {
            mut namespace,
            mut limit_range,
            mut role_binding,
            network_policies,
        } = children;
        let ns = namespace.name_any();

        let hash = meta::stamp(&mut namespace);
        let stored = ctx.stores.namespaces.get(&ObjectRef::new(&ns));
        if meta::needs_apply(&hash, stored.as_ref().map(|m| &m.metadata)) {
            apply(ctx, &Api::<Namespace>::all(ctx.client.clone()), &namespace).await?;
        }

        let hash = meta::stamp(&mut limit_range);
        let stored = ctx
            .stores
            .limit_ranges
            .get(&ObjectRef::new(build::LIMIT_RANGE_NAME).within(&ns));
        if meta::needs_apply(&hash, stored.as_ref().map(|m| &m.metadata)) {
            apply(
                ctx,
                &Api::<LimitRange>::namespaced(ctx.client.clone(), &ns),
                &limit_range,
            )
            .await?;
        }

        let hash = meta::stamp(&mut role_binding);
        let stored = ctx
            .stores
            .role_bindings
            .get(&ObjectRef::new(build::ROLE_BINDING_NAME).within(&ns));
        if meta::needs_apply(&hash, stored.as_ref().map(|m| &m.metadata)) {
            apply(
                ctx,
                &Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns),
                &role_binding,
            )
            .await?;
        }

        let policies_api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &ns);
        let mut wanted = BTreeSet::new();
        for mut policy in network_policies {
            let name = policy.name_any();
            let hash = meta::stamp(&mut policy);
            let stored = ctx
                .stores
                .network_policies
                .get(&ObjectRef::new(&name).within(&ns));
            if meta::needs_apply(&hash, stored.as_ref().map(|m| &m.metadata)) {
                apply(ctx, &policies_api, &policy).await?;
            }
            wanted.insert(name);
        }
        for stale in ctx.stores.network_policies.state() {
            let owned = stale
                .owner_references()
                .iter()
                .any(|o| o.uid == tenant.uid().unwrap_or_default());
            if owned
                && stale.namespace().as_deref() == Some(&ns)
                && !wanted.contains(&stale.name_any())
            {
                delete_namespaced::<NetworkPolicy>(ctx, &ns, &stale.name_any()).await?;
            }
        }
    }
    Ok(())
}

/// The quota of each namespace as stored, with the hards Verbund intends (from the share
/// annotation) in place of `spec.hard` where someone edited it.
fn intended(namespace: &str, stored: Option<&ResourceQuota>) -> (NamespaceQuota, Option<Amounts>) {
    let actual = quota::namespace_quota(namespace, stored);
    let share = stored
        .and_then(|q| q.annotations().get(SHARE_ANNOTATION))
        .and_then(|text| parse_share(text));
    (actual, share)
}

fn format_share(amounts: &Amounts) -> String {
    amounts
        .iter()
        .map(|(k, v)| format!("{k}={}", v.0))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_share(text: &str) -> Option<Amounts> {
    text.split(',')
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = RESOURCES.iter().find(|(k, _)| *k == key)?.0;
            Some((key, Amount(value.parse().ok()?)))
        })
        .collect()
}

/// Keeps each namespace's ResourceQuota at its share of the tenant's quota (see `quota`).
async fn reconcile_quotas(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    let total = quota::tenant_total(&tenant.spec.quota).map_err(|e| Error::Invalid {
        reason: "InvalidQuota",
        message: format!("spec.quota: {e}"),
    })?;
    let namespaces = &tenant.spec.namespaces;
    let stored: Vec<Option<Arc<ResourceQuota>>> = namespaces
        .iter()
        .map(|ns| {
            ctx.stores
                .quotas
                .get(&ObjectRef::new(QUOTA_NAME).within(ns))
        })
        .collect();
    let mut current = Vec::new();
    for (ns, quota) in namespaces.iter().zip(&stored) {
        let (actual, share) = intended(ns, quota.as_deref());
        // What Verbund meant this namespace to have, if someone changed spec.hard since.
        let hard = share.unwrap_or_else(|| actual.hard.clone());
        current.push(NamespaceQuota { hard, ..actual });
    }
    let targets: BTreeMap<String, Amounts> = if quota::needs_redraw(&total, &current) {
        quota::fair_hards(&total, &current)
    } else {
        current
            .iter()
            .map(|ns| (ns.namespace.clone(), ns.hard.clone()))
            .collect()
    };

    // Step one: lower what goes down (only quotas that exist; new ones start in step two).
    let actual: Vec<NamespaceQuota> = namespaces
        .iter()
        .zip(&stored)
        .map(|(ns, q)| quota::namespace_quota(ns, q.as_deref()))
        .collect();
    let lowered = quota::lowered_hards(&actual, &targets);
    for (ns, quota) in namespaces.iter().zip(&stored) {
        let Some(quota) = quota else { continue };
        let now = quota::namespace_quota(ns, Some(quota));
        let lower = &lowered[ns];
        // Someone else's edit is taken back here: lowered to the share, or kept low until step two.
        if lower != &now.hard || meta::written_by_others(quota.meta()) {
            write_quota(tenant, ns, lower, &targets[ns], Some(quota.meta()), ctx).await?;
        }
    }

    // Step two: raise what goes up, within what is really free, from a fresh read.
    let wants_more = namespaces.iter().zip(&lowered).any(|(ns, _)| {
        let target = &targets[ns];
        let now = &lowered[ns];
        RESOURCES.iter().any(|(k, _)| target.get(k) > now.get(k))
    });
    let missing = stored.iter().any(Option::is_none);
    if !(wants_more || missing) {
        return Ok(());
    }
    let api: Api<ResourceQuota> = Api::all(ctx.client.clone());
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={}",
        tenant.name_any()
    );
    let fresh_list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::api("list tenant quotas"))?;
    let fresh_by_ns: BTreeMap<String, ResourceQuota> = fresh_list
        .items
        .into_iter()
        .filter(|q| q.name_any() == QUOTA_NAME)
        .filter_map(|q| Some((q.namespace()?, q)))
        .collect();
    let fresh: Vec<NamespaceQuota> = namespaces
        .iter()
        .map(|ns| quota::namespace_quota(ns, fresh_by_ns.get(ns)))
        .collect();
    let raised = quota::raised_hards(&total, &fresh, &targets);
    for ns in namespaces {
        let stored = fresh_by_ns.get(ns);
        let now = quota::namespace_quota(ns, stored);
        if stored.is_none() || raised[ns] != now.hard {
            write_quota(
                tenant,
                ns,
                &raised[ns],
                &targets[ns],
                stored.map(|q| q.meta()),
                ctx,
            )
            .await?;
        }
    }
    Ok(())
}

/// Applies one namespace's quota with `hards`, remembering `share` as what Verbund intends.
async fn write_quota(
    tenant: &Tenant,
    namespace: &str,
    hards: &Amounts,
    share: &Amounts,
    stored: Option<&ObjectMeta>,
    ctx: &Context,
) -> Result<(), Error> {
    let mut quota = build::quota(tenant, namespace, hards)?;
    quota
        .annotations_mut()
        .insert(SHARE_ANNOTATION.into(), format_share(share));
    let hash = meta::stamp(&mut quota);
    if meta::needs_apply(&hash, stored) {
        apply(
            ctx,
            &Api::<ResourceQuota>::namespaced(ctx.client.clone(), namespace),
            &quota,
        )
        .await?;
    }
    Ok(())
}

/// A namespace leaves the tenant: `Retain` removes Verbund's labels and guard rails and keeps
/// the namespace with everything in it; `Delete` deletes it.
async fn release_namespace(tenant: &Tenant, namespace: &str, ctx: &Context) -> Result<(), Error> {
    match tenant.spec.deletion_policy {
        DeletionPolicy::Delete => {
            info!(namespace, "deleting namespace (deletionPolicy Delete)");
            ctx.metrics
                .api_writes
                .with_label_values(&["Namespace", "delete"])
                .inc();
            let api: Api<Namespace> = Api::all(ctx.client.clone());
            match api.delete(namespace, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::api(format!("delete namespace {namespace}"))(e)),
            }
        }
        DeletionPolicy::Retain => {
            info!(namespace, "releasing namespace (deletionPolicy Retain)");
            delete_namespaced::<ResourceQuota>(ctx, namespace, QUOTA_NAME).await?;
            delete_namespaced::<LimitRange>(ctx, namespace, build::LIMIT_RANGE_NAME).await?;
            delete_namespaced::<RoleBinding>(ctx, namespace, build::ROLE_BINDING_NAME).await?;
            for policy in [
                build::POLICY_DEFAULT_DENY,
                build::POLICY_DNS,
                build::POLICY_TENANT,
                build::POLICY_GATEWAY,
                build::POLICY_EGRESS,
            ] {
                delete_namespaced::<NetworkPolicy>(ctx, namespace, policy).await?;
            }
            // Applying the namespace with no fields removes every label Verbund set on it.
            let bare = Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            apply(ctx, &Api::<Namespace>::all(ctx.client.clone()), &bare).await?;
        }
    }
    publish(
        ctx,
        tenant,
        EventType::Normal,
        "NamespaceReleased",
        format!(
            "namespace {namespace} left the tenant (deletionPolicy {:?})",
            tenant.spec.deletion_policy
        ),
    )
    .await;
    Ok(())
}

/// The Tenant is being deleted: every namespace follows `deletionPolicy`.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    let labelled: Vec<String> = ctx
        .stores
        .namespaces
        .state()
        .iter()
        .filter(|ns| ns.labels().get(TENANT_LABEL) == Some(&name))
        .map(|ns| ns.name_any())
        .collect();
    for namespace in labelled {
        release_namespace(tenant, &namespace, ctx).await?;
    }
    Ok(Action::await_change())
}

/// Sum of `status.used` over the tenant's quotas, per tenant resource name.
fn used(tenant: &Tenant, ctx: &Context) -> BTreeMap<String, Quantity> {
    let mut sums: BTreeMap<&str, Amount> = BTreeMap::new();
    for ns in &tenant.spec.namespaces {
        let stored = ctx
            .stores
            .quotas
            .get(&ObjectRef::new(QUOTA_NAME).within(ns));
        let q = quota::namespace_quota(ns, stored.as_deref());
        for (key, amount) in q.used {
            *sums.entry(key).or_default() += amount;
        }
    }
    [
        ("cpu", "requests.cpu"),
        ("memory", "requests.memory"),
        ("pods", "pods"),
    ]
    .into_iter()
    .map(|(name, key)| {
        (
            name.to_string(),
            sums.get(key).copied().unwrap_or_default().to_quantity(key),
        )
    })
    .collect()
}

async fn update_status(
    tenant: &Tenant,
    ctx: &Context,
    outcome: Result<(), &Error>,
    baseline_found: bool,
) -> Result<(), Error> {
    let generation = tenant.metadata.generation;
    let old = tenant.status.clone().unwrap_or_default();
    let mut status = TenantStatus {
        namespaces: tenant.spec.namespaces.clone(),
        namespace_count: i32::try_from(tenant.spec.namespaces.len()).unwrap_or(i32::MAX),
        quota: QuotaStatus {
            hard: [
                ("cpu".to_string(), tenant.spec.quota.cpu.clone()),
                ("memory".to_string(), tenant.spec.quota.memory.clone()),
                (
                    "pods".to_string(),
                    Quantity(tenant.spec.quota.pods.to_string()),
                ),
            ]
            .into(),
            used: used(tenant, ctx),
        },
        services: i32::try_from(
            ctx.stores
                .portal_services
                .state()
                .iter()
                .filter(|s| {
                    s.namespace()
                        .is_some_and(|ns| tenant.spec.namespaces.contains(&ns))
                })
                .count(),
        )
        .unwrap_or(i32::MAX),
        observed_generation: generation,
        conditions: old.conditions.clone(),
    };
    let now = Timestamp::now();
    let ready = match outcome {
        Err(error) => Condition::new("Ready", false, error.reason(), error.to_string()),
        Ok(()) if !baseline_found => Condition::new(
            "Ready",
            false,
            "BaselineNotFound",
            format!(
                "SecurityBaseline {} does not exist: the namespaces are labelled for it but no admission policy protects them yet",
                build::baseline_name(tenant)
            ),
        ),
        Ok(()) => Condition::new(
            "Ready",
            true,
            "Reconciled",
            format!(
                "{} namespace(s) with quota, default limits, admin rights and network isolation in place",
                tenant.spec.namespaces.len()
            ),
        ),
    };
    set_condition(&mut status.conditions, ready, generation, now);
    let exhausted = exhausted_resources(&status.quota);
    let quota_condition = if exhausted.is_empty() {
        Condition::new(
            "QuotaExceeded",
            false,
            "WithinQuota",
            "the tenant uses less than its quota of every resource",
        )
    } else {
        Condition::new(
            "QuotaExceeded",
            true,
            "QuotaExhausted",
            format!("fully used: {}", exhausted.join(", ")),
        )
    };
    set_condition(&mut status.conditions, quota_condition, generation, now);
    record_metrics(tenant, &status, ctx);
    if status == old {
        return Ok(());
    }
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let value = serde_json::to_value(&status).map_err(|e| Error::Invalid {
        reason: "Internal",
        message: e.to_string(),
    })?;
    apply_status(ctx, &api, &tenant.name_any(), value).await
}

/// Resources whose use has reached the quota, as "cpu 8 of 8".
fn exhausted_resources(quota: &QuotaStatus) -> Vec<String> {
    quota
        .hard
        .iter()
        .filter_map(|(name, hard)| {
            let hard_amount = Amount::of(hard).ok()?;
            let used = quota.used.get(name)?;
            (hard_amount > Amount::ZERO && Amount::of(used).ok()? >= hard_amount)
                .then(|| format!("{name} {} of {}", used.0, hard.0))
        })
        .collect()
}

fn record_metrics(tenant: &Tenant, status: &TenantStatus, ctx: &Context) {
    let name = tenant.name_any();
    for (resource, quantity) in &status.quota.hard {
        if let Ok(amount) = Amount::of(quantity) {
            ctx.metrics
                .tenant_quota
                .with_label_values(&[&name, resource, "hard"])
                .set(amount.0 as f64 / 1000.0);
        }
    }
    for (resource, quantity) in &status.quota.used {
        if let Ok(amount) = Amount::of(quantity) {
            ctx.metrics
                .tenant_quota
                .with_label_values(&[&name, resource, "used"])
                .set(amount.0 as f64 / 1000.0);
        }
    }
}
