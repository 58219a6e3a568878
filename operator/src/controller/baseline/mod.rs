//! The SecurityBaseline controller: compiles each baseline into a ValidatingAdmissionPolicy
//! and binding (enforcement inside the API server, independent of this process), and audits
//! what runs in the bound namespaces on change and every few minutes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{instrument, warn};

use super::{Context, Error, apply, apply_status};
use crate::api::security_baseline::{RuleName, SecurityBaseline, SecurityBaselineStatus};
use crate::baseline::audit::{self, Finding, NamespaceFacts};
use crate::baseline::policy::{self, Compiled};
use crate::baseline::rules;
use crate::baseline::workload::KINDS;
use crate::cache::Caches;
use crate::conditions::{Desired as Condition, set_condition};
use crate::meta::{self, BASELINE_LABEL, FIELD_MANAGER};

const CONTROLLER: &str = "baseline";

/// How often every baseline is audited even when nothing was seen to change.
pub const AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// The controller's context: the shared one, and what the audit remembers between runs.
struct AuditContext {
    ctx: Arc<Context>,
    /// The violations last reported by an Event, per baseline and object: an object gets a new
    /// Event only when what it violates changes.
    reported: Mutex<BTreeMap<(String, String), Vec<RuleName>>>,
}

impl std::fmt::Debug for AuditContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditContext").finish_non_exhaustive()
    }
}

/// The baseline bound to `namespace`, from the label Verbund keeps on tenant namespaces.
fn baseline_of(
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    namespace: Option<String>,
) -> Option<ObjectRef<SecurityBaseline>> {
    let ns = namespaces.get(&ObjectRef::new(&namespace?))?;
    ns.labels().get(BASELINE_LABEL).map(|b| ObjectRef::new(b))
}

/// Spec changes of one workload kind, cluster-wide, metadata only.
fn workload_changes<K>(
    client: &Client,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + use<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(
        Api::<PartialObjectMeta<K>>::all(client.clone()),
        watcher::Config::default(),
    )
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default())
}

/// The controller, subscribed to the shared caches; runs until `shutdown` when polled.
pub fn run(
    ctx: Arc<Context>,
    caches: &Caches,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let client = ctx.client.clone();
    let namespaces = ctx.stores.namespaces.clone();
    // Every trigger maps an object to the baseline of its namespace.
    let to_baseline = move |namespace: Option<String>| baseline_of(&namespaces, namespace);
    let (pods, deployments, statefulsets, daemonsets, replicasets, jobs, cronjobs) = (
        to_baseline.clone(),
        to_baseline.clone(),
        to_baseline.clone(),
        to_baseline.clone(),
        to_baseline.clone(),
        to_baseline.clone(),
        to_baseline,
    );
    let audit_ctx = Arc::new(AuditContext {
        ctx: ctx.clone(),
        reported: Mutex::new(BTreeMap::new()),
    });
    Controller::for_shared_stream(caches.baselines(), ctx.stores.baselines.clone())
        // Standalone pods; pods made by a workload are audited through it.
        .watches_shared_stream(caches.pods(), move |pod| {
            let standalone = pod
                .owner_references()
                .iter()
                .all(|o| o.controller != Some(true));
            if standalone {
                pods(pod.namespace())
            } else {
                None
            }
        })
        .watches_stream(workload_changes::<Deployment>(&client), move |o| {
            deployments(o.namespace())
        })
        .watches_stream(workload_changes::<StatefulSet>(&client), move |o| {
            statefulsets(o.namespace())
        })
        .watches_stream(workload_changes::<DaemonSet>(&client), move |o| {
            daemonsets(o.namespace())
        })
        .watches_stream(workload_changes::<ReplicaSet>(&client), move |o| {
            replicasets(o.namespace())
        })
        .watches_stream(workload_changes::<Job>(&client), move |o| {
            jobs(o.namespace())
        })
        .watches_stream(workload_changes::<CronJob>(&client), move |o| {
            cronjobs(o.namespace())
        })
        // One audit per burst of changes.
        .with_config(Config::default().debounce(Duration::from_secs(2)))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            reconcile,
            |b, e, c: Arc<AuditContext>| super::error_policy(CONTROLLER, b, e, c.ctx.clone()),
            audit_ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

/// What the API server made of the compiled policy.
#[derive(Debug, Clone, PartialEq)]
enum Admission {
    /// Policy and binding stored and type-checked without complaint.
    Active,
    /// Stored; the API server has not type-checked this generation yet.
    Pending,
    /// The API server refused the policy or binding: its message.
    Rejected(String),
    /// Stored, but type checking found problems: the API server's warnings.
    TypeCheckFailed(String),
}

#[instrument(skip_all, fields(baseline = %baseline.name_any()))]
async fn reconcile(
    baseline: Arc<SecurityBaseline>,
    actx: Arc<AuditContext>,
) -> Result<Action, Error> {
    let ctx = &actx.ctx;
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[CONTROLLER])
        .start_timer();
    let now = Timestamp::now();

    // build + apply: the admission policy, as the API server will enforce it.
    let compiled = policy::compile(&baseline, now)?;
    let admission = apply_policy(ctx, compiled).await?;

    // audit: read what runs in the bound namespaces, check it, report it.
    // A refused policy binds nothing (its name may not even be a valid label value): no audit.
    let facts = match admission {
        Admission::Rejected(_) => Vec::new(),
        _ => read_namespaces(ctx, &baseline.name_any()).await?,
    };
    let findings = audit::audit(&baseline, &facts, now);
    report_events(&actx, &baseline, &findings).await;
    write_policy_reports(ctx, &baseline, &facts, &findings).await?;
    let summary = audit::summarise(&findings);
    record_metrics(ctx, &baseline.name_any(), &summary);

    // status: only when something changed.
    let namespaces: Vec<String> = facts.iter().map(|f| f.name.clone()).collect();
    let status = build_status(&baseline, &admission, namespaces, summary, now);
    if baseline.status.as_ref() != Some(&status) {
        let api: Api<SecurityBaseline> = Api::all(ctx.client.clone());
        let value = serde_json::to_value(&status).map_err(|e| Error::Invalid {
            reason: "Internal",
            message: e.to_string(),
        })?;
        apply_status(ctx, &api, &baseline.name_any(), value).await?;
    }

    // Come back when an exception expires, when the API server should have type-checked the
    // policy, or for the next periodic audit.
    let mut wait = AUDIT_INTERVAL;
    if admission == Admission::Pending {
        wait = Duration::from_secs(1);
    }
    if let Some(expiry) = policy::next_expiry(&baseline, now) {
        let until = expiry.duration_since(now);
        let until = Duration::try_from(until).unwrap_or_default() + Duration::from_millis(100);
        wait = wait.min(until);
    }
    Ok(Action::requeue(wait))
}

/// Applies policy and binding when they differ from what is stored, and reports what the API
/// server made of them. A refusal is a result (the condition says why), not a retry.
async fn apply_policy(ctx: &Context, compiled: Compiled) -> Result<Admission, Error> {
    let Compiled {
        mut policy,
        mut binding,
    } = compiled;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(ctx.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ctx.client.clone());
    let name = policy.name_any();

    let hash = meta::stamp(&mut policy);
    let mut stored = policies
        .get_opt(&name)
        .await
        .map_err(Error::api(format!("read ValidatingAdmissionPolicy {name}")))?;
    if meta::needs_apply(&hash, stored.as_ref().map(|p| &p.metadata)) {
        match apply(ctx, &policies, &policy).await {
            Ok(applied) => stored = Some(applied),
            Err(error) => return refusal(error),
        }
    }
    let hash = meta::stamp(&mut binding);
    let stored_binding = bindings.get_opt(&name).await.map_err(Error::api(format!(
        "read ValidatingAdmissionPolicyBinding {name}"
    )))?;
    if meta::needs_apply(&hash, stored_binding.as_ref().map(|b| &b.metadata))
        && let Err(error) = apply(ctx, &bindings, &binding).await
    {
        return refusal(error);
    }

    let Some(stored) = stored else {
        return Ok(Admission::Pending);
    };
    let status = stored.status.unwrap_or_default();
    if status.observed_generation < stored.metadata.generation {
        return Ok(Admission::Pending);
    }
    let warnings: Vec<String> = status
        .type_checking
        .and_then(|t| t.expression_warnings)
        .unwrap_or_default()
        .into_iter()
        .map(|w| format!("{}: {}", w.field_ref, w.warning))
        .collect();
    if warnings.is_empty() {
        Ok(Admission::Active)
    } else {
        Ok(Admission::TypeCheckFailed(warnings.join("; ")))
    }
}

/// A refused apply (invalid or forbidden object) becomes `Rejected`; anything else is retried.
fn refusal(error: Error) -> Result<Admission, Error> {
    match error {
        Error::Api {
            source: kube::Error::Api(status),
            ..
        } if status.code == 422 || status.code == 400 => Ok(Admission::Rejected(status.message)),
        other => Err(other),
    }
}

/// Lists what the audit checks in every namespace bound to `baseline`.
async fn read_namespaces(ctx: &Context, baseline: &str) -> Result<Vec<NamespaceFacts>, Error> {
    let client = &ctx.client;
    let bound = Api::<PartialObjectMeta<Namespace>>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&format!("{BASELINE_LABEL}={baseline}")))
        .await
        .map_err(Error::api("list bound namespaces"))?;
    let mut facts = Vec::new();
    for namespace in bound.items {
        let name = namespace.name_any();
        let mut objects = Vec::new();
        for (group, version, kind, plural) in KINDS {
            let resource = ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: if group.is_empty() {
                    version.into()
                } else {
                    format!("{group}/{version}")
                },
                kind: kind.into(),
                plural: plural.into(),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &resource);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(Error::api(format!("list {plural} in {name}")))?;
            for object in list.items {
                let mut value = serde_json::to_value(&object).unwrap_or_default();
                value["apiVersion"] = resource.api_version.clone().into();
                value["kind"] = kind.into();
                objects.push(value);
            }
        }
        let network_policies = Api::<NetworkPolicy>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .map_err(Error::api(format!("list networkpolicies in {name}")))?
            .items;
        facts.push(NamespaceFacts {
            name,
            objects,
            network_policies,
        });
    }
    facts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(facts)
}

/// A Warning event on each object whose violations changed since it was last reported.
async fn report_events(actx: &AuditContext, baseline: &SecurityBaseline, findings: &[Finding]) {
    let name = baseline.name_any();
    let mut due = Vec::new();
    {
        let Ok(mut reported) = actx.reported.lock() else {
            return;
        };
        // Forget objects that are gone or fixed, so that a relapse is reported again.
        let current: BTreeMap<(String, String), &Finding> = findings
            .iter()
            .filter(|f| !f.violations.is_empty())
            .map(|f| ((name.clone(), object_key(f)), f))
            .collect();
        reported.retain(|key, _| key.0 != name || current.contains_key(key));
        for (key, finding) in current {
            if reported.get(&key) != Some(&finding.violations) {
                reported.insert(key, finding.violations.clone());
                due.push(finding.clone());
            }
        }
    }
    for finding in due {
        let reference = ObjectReference {
            api_version: Some(finding.api_version.clone()),
            kind: Some(finding.kind.clone()),
            name: Some(finding.name.clone()),
            namespace: (finding.kind != "Namespace").then(|| finding.namespace.clone()),
            uid: (!finding.uid.is_empty()).then(|| finding.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "BaselineViolated".into(),
            note: Some(audit::event_note(&name, &finding.violations)),
            action: "Audit".into(),
            secondary: Some(baseline.object_ref(&())),
        };
        if let Err(error) = actx.ctx.recorder.publish(&event, &reference).await {
            warn!(%error, object = %finding.name, "cannot publish audit event");
        }
    }
}

fn object_key(finding: &Finding) -> String {
    format!("{}/{}/{}", finding.namespace, finding.kind, finding.name)
}

/// The PolicyReport kind, when its CRD is installed.
fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    )
}

/// Writes each bound namespace's PolicyReport when it changed. Skipped when the API server does
/// not serve the PolicyReport kind (its CRD is not installed): reports are an integration, not
/// a requirement.
async fn write_policy_reports(
    ctx: &Context,
    baseline: &SecurityBaseline,
    facts: &[NamespaceFacts],
    findings: &[Finding],
) -> Result<(), Error> {
    let resource = report_resource();
    match ctx
        .client
        .list_api_group_resources(&resource.api_version)
        .await
    {
        Ok(list) if list.resources.iter().any(|r| r.name == resource.plural) => {}
        // Not served: the PolicyReport CRD is not installed.
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(e) => return Err(Error::api("discover the PolicyReport kind")(e)),
    }
    let owner = meta::owner_reference(baseline)?;
    for namespace in facts.iter().map(|f| &f.name) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), namespace, &resource);
        let mut desired: DynamicObject = serde_json::from_value(audit::policy_report(
            baseline, namespace, findings,
        ))
        .map_err(|e| Error::Invalid {
            reason: "Internal",
            message: e.to_string(),
        })?;
        desired.metadata.labels = Some(BTreeMap::from([
            (
                meta::MANAGED_BY_LABEL.to_string(),
                meta::MANAGED_BY.to_string(),
            ),
            (BASELINE_LABEL.to_string(), baseline.name_any()),
        ]));
        desired.metadata.owner_references = Some(vec![owner.clone()]);
        let hash = meta::stamp(&mut desired);
        let stored = api
            .get_opt(audit::REPORT_NAME)
            .await
            .map_err(Error::api(format!("read PolicyReport in {namespace}")))?;
        if meta::needs_apply(&hash, stored.as_ref().map(|s| &s.metadata)) {
            ctx.metrics
                .api_writes
                .with_label_values(&["PolicyReport", "apply"])
                .inc();
            api.patch(
                audit::REPORT_NAME,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(Error::api(format!("apply PolicyReport in {namespace}")))?;
        }
    }
    Ok(())
}

fn record_metrics(ctx: &Context, baseline: &str, summary: &audit::Summary) {
    let m = &ctx.metrics;
    m.baseline_objects
        .with_label_values(&[baseline, "checked"])
        .set(f64::from(summary.checked));
    m.baseline_objects
        .with_label_values(&[baseline, "compliant"])
        .set(f64::from(summary.compliant));
    for rule in &rules::CATALOGUE {
        let count = summary
            .violations
            .iter()
            .find(|v| v.rule == rule.name)
            .map_or(0, |v| v.count);
        m.baseline_violations
            .with_label_values(&[baseline, &rules::rule_key(rule.name), &rule.bsi.join(",")])
            .set(f64::from(count));
    }
}

fn build_status(
    baseline: &SecurityBaseline,
    admission: &Admission,
    namespaces: Vec<String>,
    summary: audit::Summary,
    now: Timestamp,
) -> SecurityBaselineStatus {
    let generation = baseline.metadata.generation;
    let previous = baseline.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone();
    let rule_count = rules::enabled_rules(&baseline.spec.rules).count();
    let ready = match admission {
        Admission::Active => Condition::new(
            "Ready",
            true,
            "PolicyActive",
            format!(
                "the API server enforces {rule_count} rules ({:?}) on {} namespaces",
                baseline.spec.enforcement,
                namespaces.len()
            ),
        ),
        Admission::Pending => Condition::new(
            "Ready",
            false,
            "PolicyPending",
            "waiting for the API server to type-check the admission policy",
        ),
        Admission::Rejected(message) => Condition::new(
            "Ready",
            false,
            "PolicyRejected",
            format!("the API server refused the admission policy: {message}"),
        ),
        Admission::TypeCheckFailed(message) => Condition::new(
            "Ready",
            false,
            "PolicyTypeCheckFailed",
            format!("the API server found problems in the admission policy: {message}"),
        ),
    };
    set_condition(&mut conditions, ready, generation, now);
    let offenders = summary.checked - summary.compliant;
    let compliant = if offenders == 0 {
        Condition::new(
            "Compliant",
            true,
            "NoViolations",
            format!("all {} checked objects satisfy every rule", summary.checked),
        )
    } else {
        let rules: Vec<String> = summary
            .violations
            .iter()
            .map(|v| format!("{} {}", rules::rule_key(v.rule), v.count))
            .collect();
        Condition::new(
            "Compliant",
            false,
            "ViolationsFound",
            format!(
                "{offenders} of {} checked objects violate rules: {}",
                summary.checked,
                rules.join(", ")
            ),
        )
    };
    set_condition(&mut conditions, compliant, generation, now);
    let results_changed = previous.checked != summary.checked
        || previous.compliant != summary.compliant
        || previous.violations != summary.violations
        || previous.top_offenders != summary.top_offenders;
    SecurityBaselineStatus {
        policy: Some(policy::policy_name(&baseline.name_any())),
        namespaces,
        checked: summary.checked,
        compliant: summary.compliant,
        violation_count: offenders,
        violations: summary.violations,
        top_offenders: summary.top_offenders,
        // Moves only when the results do: an unchanged audit writes nothing.
        last_audit: if results_changed || previous.last_audit.is_none() {
            Some(Time(now))
        } else {
            previous.last_audit
        },
        observed_generation: generation,
        conditions,
    }
}
