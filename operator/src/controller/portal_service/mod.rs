//! The PortalService controller: runs each online service as a hardened, highly available
//! workload on the sites certified for it, scaled for the calendar's peaks within the
//! tenant's share of the pool.

pub mod build;
pub mod scaling;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use self::build::{Desired, Inputs};
use self::scaling::{Ceiling, Floor, Resources};
use super::site::{ZONE_LABEL, zone_of};
use super::{Context, Error, apply, apply_status, publish};
use crate::api::portal_service::{PortalService, PortalServiceStatus, ReplicaCounts, SitePods};
use crate::api::{SecurityBaseline, Site, Tenant};
use crate::cache::Caches;
use crate::conditions::{Desired as Condition, set_condition};
use crate::controller::tenant::build::{QUOTA_NAME, baseline_name};
use crate::controller::tenant::quota;
use crate::meta::{self, MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL};
use crate::placement::{self, Placement};
use crate::quantity::Amount;

const CONTROLLER: &str = "portalservice";

/// Portal services in the namespaces of the tenant `tenant`.
fn services_of_tenant(
    services: &Store<PortalService>,
    tenants: &Store<Tenant>,
    tenant: &str,
) -> Vec<ObjectRef<PortalService>> {
    let Some(tenant) = tenants.get(&ObjectRef::new(tenant)) else {
        return Vec::new();
    };
    services
        .state()
        .iter()
        .filter(|s| {
            s.namespace()
                .is_some_and(|ns| tenant.spec.namespaces.contains(&ns))
        })
        .map(|s| ObjectRef::from_obj(&**s))
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
    Controller::for_shared_stream(caches.portal_services(), stores.portal_services.clone())
        .owns_shared_stream(caches.deployments())
        .owns_shared_stream(caches.services())
        .owns_shared_stream(caches.service_accounts())
        .owns_shared_stream(caches.autoscalers())
        .owns_shared_stream(caches.disruption_budgets())
        .owns_shared_stream(caches.network_policies())
        .owns_shared_stream(caches.ingresses())
        // Pods becoming ready change the status.
        .watches_shared_stream(caches.pods(), |pod: Arc<Pod>| {
            let labels = pod.labels();
            (labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
                .then(|| labels.get("app.kubernetes.io/instance").cloned())
                .flatten()
                .zip(pod.namespace())
                .map(|(name, ns)| ObjectRef::<PortalService>::new(&name).within(&ns))
        })
        // A site cordoned, added or recertified: re-place every service.
        .watches_shared_stream(caches.sites(), move |_| all_services(&s1.portal_services))
        .watches_shared_stream(caches.baselines(), move |_| {
            all_services(&s2.portal_services)
        })
        // The tenant's quota or allowed sites changed, or its use (quota status) did.
        .watches_shared_stream(caches.tenants(), move |t: Arc<Tenant>| {
            services_of_tenant(&s3.portal_services, &s3.tenants, &t.name_any())
        })
        .watches_shared_stream(caches.quotas(), move |q| {
            q.labels()
                .get(TENANT_LABEL)
                .map(|t| services_of_tenant(&s4.portal_services, &s4.tenants, t))
                .unwrap_or_default()
        })
        .with_config(Config::default().debounce(Duration::from_millis(500)))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            reconcile,
            |s, e, c| super::error_policy(CONTROLLER, s, e, c),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

/// What the caches say about the world around one service.
struct Observed {
    tenant: Arc<Tenant>,
    baseline: Option<Arc<SecurityBaseline>>,
    sites: Vec<Arc<Site>>,
    pods: Vec<Arc<Pod>>,
    /// What the tenant's pods request, summed over its quotas.
    tenant_used: Resources,
}

fn read(ps: &PortalService, ctx: &Context) -> Result<Observed, Error> {
    let namespace = ps.namespace().unwrap_or_default();
    let ns: Option<Arc<PartialObjectMeta<Namespace>>> =
        ctx.stores.namespaces.get(&ObjectRef::new(&namespace));
    let tenant = ns
        .and_then(|ns| ns.labels().get(TENANT_LABEL).cloned())
        .and_then(|t| ctx.stores.tenants.get(&ObjectRef::new(&t)))
        .ok_or_else(|| Error::Invalid {
            reason: "NoTenant",
            message: format!(
                "namespace {namespace} belongs to no Tenant: list it in a Tenant's spec.namespaces"
            ),
        })?;
    let baseline = ctx
        .stores
        .baselines
        .get(&ObjectRef::new(&baseline_name(&tenant)));
    let name = ps.name_any();
    let pods = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|p| p.labels().get("app.kubernetes.io/instance") == Some(&name))
        .filter(|p| p.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
        .collect();
    let mut tenant_used = Resources::default();
    for ns in &tenant.spec.namespaces {
        let stored = ctx
            .stores
            .quotas
            .get(&ObjectRef::new(QUOTA_NAME).within(ns));
        let q = quota::namespace_quota(ns, stored.as_deref());
        tenant_used.cpu += q.used.get("requests.cpu").copied().unwrap_or_default();
        tenant_used.memory += q.used.get("requests.memory").copied().unwrap_or_default();
        tenant_used.pods += q.used.get("pods").copied().unwrap_or_default();
    }
    Ok(Observed {
        tenant,
        baseline,
        sites: ctx.stores.sites.state(),
        pods,
        tenant_used,
    })
}

fn validate(ps: &PortalService, tenant: &Tenant) -> Result<(), Error> {
    if ps.spec.protection_level > tenant.spec.max_protection_level {
        return Err(Error::Invalid {
            reason: "ProtectionAboveTenant",
            message: format!(
                "spec.protectionLevel {} exceeds what tenant {} may run ({}); lower it or raise the tenant's maxProtectionLevel",
                ps.spec.protection_level,
                tenant.name_any(),
                tenant.spec.max_protection_level
            ),
        });
    }
    Ok(())
}

fn holds_resources(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What this service's own pods request now.
fn own_use(ps: &PortalService, pods: &[Arc<Pod>]) -> Resources {
    let running = pods.iter().filter(|p| holds_resources(p)).count() as i64;
    let each = per_pod(ps);
    Resources {
        cpu: Amount(each.cpu.0 * i128::from(running)),
        memory: Amount(each.memory.0 * i128::from(running)),
        pods: Amount::count(running),
    }
}

fn per_pod(ps: &PortalService) -> Resources {
    Resources {
        cpu: Amount::of(&ps.spec.resources.cpu).unwrap_or_default(),
        memory: Amount::of(&ps.spec.resources.memory).unwrap_or_default(),
        pods: Amount::count(1),
    }
}

#[instrument(skip_all, fields(service = %ps.name_any(), namespace = %ps.namespace().unwrap_or_default()))]
async fn reconcile(ps: Arc<PortalService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[CONTROLLER])
        .start_timer();
    let now = jiff::Timestamp::now();
    let observed = match read(&ps, &ctx).and_then(|o| validate(&ps, &o.tenant).map(|()| o)) {
        Ok(observed) => observed,
        Err(error) => {
            refuse(&ps, &ctx, &error, &["Ready", "Placed"]).await?;
            return Err(error);
        }
    };

    let placement = placement::place(&ps, &observed.tenant, observed.sites.iter().map(|s| &**s));
    let rules = observed
        .baseline
        .as_ref()
        .map(|b| b.spec.rules.clone())
        .unwrap_or_default();
    let floor = scaling::floor(&ps.spec, rules.min_replicas, now);
    let total = quota::tenant_total(&observed.tenant.spec.quota)
        .map(|t| Resources {
            cpu: t["requests.cpu"],
            memory: t["requests.memory"],
            pods: t["pods"],
        })
        .unwrap_or_default();
    let own = own_use(&ps, &observed.pods);
    let others = Resources {
        cpu: observed.tenant_used.cpu.saturating_sub(own.cpu),
        memory: observed.tenant_used.memory.saturating_sub(own.memory),
        pods: observed.tenant_used.pods.saturating_sub(own.pods),
    };
    let ceiling = scaling::ceiling(
        ps.spec.replicas.max.max(floor.min),
        per_pod(&ps),
        total,
        others,
    );

    let desired = build::build(
        &ps,
        &Inputs {
            tenant: &observed.tenant.name_any(),
            eligible: &placement.eligible,
            min_replicas: floor.min,
            max_replicas: ceiling.max,
            gateway_namespace: &ctx.settings.gateway_namespace,
        },
    )?;
    let findings = compliance_findings(&ps, &desired, &observed, floor.min, now);
    if let Err(error) = apply_children(&ps, desired, floor.min, &ctx).await {
        // A workload the baseline's admission policy refuses cannot be fixed by retrying: say
        // so and wait for a change of the service or its baseline.
        let error = admission_refusal(error);
        if let Error::Invalid { .. } = &error {
            refuse(&ps, &ctx, &error, &["Ready", "Compliant"]).await?;
        }
        return Err(error);
    }

    let status = build_status(&ps, &ctx, &observed, &placement, &floor, &ceiling, findings);
    if placement.eligible.is_empty() && !condition_false(&ps, "Placed") {
        publish(
            &ctx,
            &*ps,
            EventType::Warning,
            "NoEligibleSite",
            format!(
                "no site can take the service: {}; running pods are left as they are",
                placement.exclusions()
            ),
        )
        .await;
    }
    write_status(&ps, &ctx, status).await?;

    // Come back when a scaling window opens or closes.
    let wait = scaling::next_boundary(&ps.spec, now)
        .and_then(|at| at.duration_since(now).try_into().ok())
        .map(|d: Duration| d + Duration::from_secs(1))
        .unwrap_or(Duration::from_secs(600))
        .min(Duration::from_secs(600));
    Ok(Action::requeue(wait))
}

fn condition_false(ps: &PortalService, type_: &str) -> bool {
    ps.status
        .as_ref()
        .and_then(|s| crate::conditions::find(&s.conditions, type_))
        .is_some_and(|c| c.status == "False")
}

/// The bound baseline's rules the rendered workload would break (those Verbund cannot satisfy
/// by construction, such as the image's registry), less the namespace's exceptions in force.
fn compliance_findings(
    ps: &PortalService,
    desired: &Desired,
    observed: &Observed,
    replicas: i32,
    now: jiff::Timestamp,
) -> Vec<String> {
    let (Some(baseline), Some(deployment)) =
        (observed.baseline.as_ref(), desired.deployment.as_ref())
    else {
        return Vec::new();
    };
    let Some(pod) = deployment.spec.template.spec.as_ref() else {
        return Vec::new();
    };
    let workload = crate::baseline::rules::Workload {
        kind: "Deployment",
        replicas: Some(replicas),
        pod,
    };
    let namespace = ps.namespace().unwrap_or_default();
    crate::baseline::rules::violations(&baseline.spec.rules, &workload)
        .into_iter()
        .filter(|rule| {
            !crate::baseline::policy::exempt_namespaces(baseline, *rule, now).contains(&namespace)
        })
        .map(|rule| crate::baseline::rules::message(crate::baseline::rules::rule(rule)))
        .collect()
}

/// Applies `object` if it differs from what `store` holds (or someone else changed it).
async fn apply_if_changed<K, S>(ctx: &Context, store: &Store<S>, object: K) -> Result<(), Error>
where
    K: NamespacedChild,
    S: Resource<DynamicType = ()> + Clone + 'static,
{
    apply_if_changed_then(ctx, store, object, |_, _| {}).await
}

/// A namespaced kind Verbund renders and applies.
trait NamespacedChild:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> NamespacedChild for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Like `apply_if_changed`; `finish` sets fields that do not count as a change (they are
/// outside the hash), from what is stored.
async fn apply_if_changed_then<K, S>(
    ctx: &Context,
    store: &Store<S>,
    mut object: K,
    finish: impl FnOnce(&mut K, Option<&S>),
) -> Result<(), Error>
where
    K: NamespacedChild,
    S: Resource<DynamicType = ()> + Clone + 'static,
{
    let hash = meta::stamp(&mut object);
    let (name, namespace) = (object.name_any(), object.namespace().unwrap_or_default());
    let stored: Option<Arc<S>> = store.get(&ObjectRef::new(&name).within(&namespace));
    let stored_meta: Option<&ObjectMeta> = stored.as_deref().map(|s| s.meta());
    if meta::needs_apply(&hash, stored_meta) {
        finish(&mut object, stored.as_deref());
        apply(
            ctx,
            &Api::<K>::namespaced(ctx.client.clone(), &namespace),
            &object,
        )
        .await?;
    }
    Ok(())
}

async fn apply_children(
    ps: &PortalService,
    desired: Desired,
    floor: i32,
    ctx: &Context,
) -> Result<(), Error> {
    let Desired {
        service_account,
        deployment,
        service,
        autoscaler,
        disruption_budget,
        network_policy,
        ingress,
    } = desired;
    let stores = &ctx.stores;
    apply_if_changed::<ServiceAccount, _>(ctx, &stores.service_accounts, service_account).await?;
    if let Some(deployment) = deployment {
        // The replica count belongs to the autoscaler: Verbund sends what is stored (raised to
        // the floor), so that a baseline's replica rule holds from the first apply on and the
        // autoscaler's choice is never undone.
        apply_if_changed_then(
            ctx,
            &stores.deployments,
            deployment,
            |d: &mut Deployment, stored: Option<&Deployment>| {
                let current = stored.and_then(|s| s.spec.replicas);
                d.spec.replicas = Some(current.unwrap_or(floor).max(floor));
            },
        )
        .await?;
    }
    apply_if_changed::<Service, _>(ctx, &stores.services, service).await?;
    apply_if_changed::<HorizontalPodAutoscaler, _>(ctx, &stores.autoscalers, autoscaler).await?;
    apply_if_changed::<PodDisruptionBudget, _>(ctx, &stores.disruption_budgets, disruption_budget)
        .await?;
    apply_if_changed::<NetworkPolicy, _>(ctx, &stores.network_policies, network_policy).await?;
    match ingress {
        Some(ingress) => apply_if_changed::<Ingress, _>(ctx, &stores.ingresses, ingress).await?,
        None => {
            let (name, ns) = (ps.name_any(), ps.namespace().unwrap_or_default());
            if stores
                .ingresses
                .get(&ObjectRef::new(&name).within(&ns))
                .is_some()
            {
                super::delete_namespaced::<Ingress>(ctx, &ns, &name).await?;
            }
        }
    }
    Ok(())
}

/// An apply refused by a ValidatingAdmissionPolicy (a baseline) becomes `Invalid`.
fn admission_refusal(error: Error) -> Error {
    match error {
        Error::Api {
            source: kube::Error::Api(status),
            ..
        } if status.code == 403 && status.message.contains("ValidatingAdmissionPolicy") => {
            Error::Invalid {
                reason: "AdmissionRefused",
                message: format!("the API server refused the workload: {}", status.message),
            }
        }
        other => other,
    }
}

/// Says why Verbund refuses to run a service: a Warning event, and the conditions `types`
/// False with the error's reason.
async fn refuse(
    ps: &PortalService,
    ctx: &Context,
    error: &Error,
    types: &[&'static str],
) -> Result<(), Error> {
    publish(
        ctx,
        ps,
        EventType::Warning,
        error.reason(),
        error.to_string(),
    )
    .await;
    let generation = ps.metadata.generation;
    let mut status = ps.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let now = k8s_openapi::jiff::Timestamp::now();
    for type_ in types {
        set_condition(
            &mut status.conditions,
            Condition::new(type_, false, error.reason(), error.to_string()),
            generation,
            now,
        );
    }
    write_status(ps, ctx, status).await
}

fn build_status(
    ps: &PortalService,
    ctx: &Context,
    observed: &Observed,
    placement: &Placement,
    floor: &Floor,
    ceiling: &Ceiling,
    findings: Vec<String>,
) -> PortalServiceStatus {
    let generation = ps.metadata.generation;
    let old = ps.status.clone().unwrap_or_default();
    let (name, namespace) = (ps.name_any(), ps.namespace().unwrap_or_default());

    // Ready pods per site: pod -> node -> zone -> site.
    let site_of_zone: BTreeMap<String, String> = observed
        .sites
        .iter()
        .map(|s| (zone_of(s), s.name_any()))
        .collect();
    // Every site of the pool is listed, so a site the service left shows 0.
    let mut per_site: BTreeMap<String, i32> =
        observed.sites.iter().map(|s| (s.name_any(), 0)).collect();
    let mut ready = 0;
    for pod in observed.pods.iter().filter(|p| pod_ready(p)) {
        ready += 1;
        let site = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| ctx.stores.nodes.get(&ObjectRef::new(n)))
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
            .and_then(|z| site_of_zone.get(&z).cloned());
        if let Some(site) = site {
            *per_site.entry(site).or_default() += 1;
        }
    }
    let desired = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(&name).within(&namespace))
        .and_then(|d| d.spec.replicas)
        .unwrap_or(0);

    let mut conditions = old.conditions.clone();
    let now = k8s_openapi::jiff::Timestamp::now();
    let placed = if placement.eligible.is_empty() {
        Condition::new(
            "Placed",
            false,
            "NoEligibleSite",
            format!(
                "no site can take the service: {}; running pods are left as they are",
                placement.exclusions()
            ),
        )
    } else {
        let sites: Vec<&str> = placement.eligible.iter().map(|s| s.site.as_str()).collect();
        Condition::new(
            "Placed",
            true,
            "Placed",
            format!("placed on {}", sites.join(", ")),
        )
    };
    let is_placed = placed.status;
    set_condition(&mut conditions, placed, generation, now);
    let limited = match &ceiling.limited {
        Some(message) => Condition::new("ScalingLimited", true, "TenantQuota", message.clone()),
        None => Condition::new(
            "ScalingLimited",
            false,
            "WithinQuota",
            format!(
                "the tenant's quota holds spec.replicas.max ({})",
                ceiling.max
            ),
        ),
    };
    set_condition(&mut conditions, limited, generation, now);
    let compliant = if findings.is_empty() {
        Condition::new(
            "Compliant",
            true,
            "BaselineSatisfied",
            format!(
                "the workload satisfies baseline {}",
                baseline_name(&observed.tenant)
            ),
        )
    } else {
        Condition::new("Compliant", false, "BaselineViolated", findings.join("; "))
    };
    set_condition(&mut conditions, compliant, generation, now);
    let ready_condition = if !is_placed {
        Condition::new(
            "Ready",
            false,
            "NoEligibleSite",
            "no site can take the service",
        )
    } else if ready >= floor.min {
        Condition::new(
            "Ready",
            true,
            "Available",
            format!("{ready} pods ready (at least {} wanted)", floor.min),
        )
    } else {
        Condition::new(
            "Ready",
            false,
            "PodsNotReady",
            format!("{ready} of at least {} pods ready", floor.min),
        )
    };
    set_condition(&mut conditions, ready_condition, generation, now);

    let sites: Vec<SitePods> = per_site
        .iter()
        .map(|(site, ready)| SitePods {
            site: site.clone(),
            ready: *ready,
        })
        .collect();
    let summary = sites
        .iter()
        .map(|s| format!("{}:{}", s.site, s.ready))
        .collect::<Vec<_>>()
        .join(" ");
    PortalServiceStatus {
        replicas: ReplicaCounts { desired, ready },
        sites,
        site_summary: (!summary.is_empty()).then_some(summary),
        active_window: floor.active_window.clone(),
        url: ps
            .spec
            .exposure
            .as_ref()
            .map(|e| format!("https://{}{}", e.host, e.path)),
        observed_generation: generation,
        conditions,
    }
}

async fn write_status(
    ps: &PortalService,
    ctx: &Context,
    status: PortalServiceStatus,
) -> Result<(), Error> {
    if ps.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<PortalService> =
        Api::namespaced(ctx.client.clone(), &ps.namespace().unwrap_or_default());
    let value = serde_json::to_value(&status).map_err(|e| Error::Invalid {
        reason: "Internal",
        message: e.to_string(),
    })?;
    apply_status(ctx, &api, &ps.name_any(), value).await
}
