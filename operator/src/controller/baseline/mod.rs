//! The SecurityBaseline controller: compiles each baseline into a ValidatingAdmissionPolicy
//! and binding (enforcement inside the API server, independent of this process), and audits
//! what runs in the bound namespaces on change and every minute.
//!
//! Stages: build (`crate::baseline::policy`, pure) -> [`apply`] (policy and binding; what the
//! API server made of them) -> [`read`] (what runs in the bound namespaces, from the caches) ->
//! audit (`crate::baseline::audit`, pure) -> [`report`] (Events, PolicyReports) -> [`status`].
//! Triggers: the baseline, standalone pods, spec changes of workloads and network policies in
//! bound namespaces.

pub mod apply;
pub mod read;
pub mod report;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use self::apply::Admission;
use self::report::Reported;
use super::{Context, Error, reconciled};
use crate::api::security_baseline::SecurityBaseline;
use crate::baseline::workload::CachedWorkload;
use crate::baseline::{audit, policy};
use crate::cache::Caches;
use crate::meta::BASELINE_LABEL;

const CONTROLLER: &str = "baseline";

/// How often every baseline is audited even when nothing was seen to change.
pub const AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// The controller's context: the shared one, and what the audit remembers between runs.
#[derive(Debug)]
struct AuditContext {
    ctx: Arc<Context>,
    reported: Reported,
}

/// The baseline bound to `namespace`, from the label Verbund keeps on tenant namespaces.
fn baseline_of(
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    namespace: Option<String>,
) -> Option<ObjectRef<SecurityBaseline>> {
    let ns = namespaces.get(&ObjectRef::new(&namespace?))?;
    ns.labels().get(BASELINE_LABEL).map(|b| ObjectRef::new(b))
}

/// The namespace of a workload someone declared (None for one another workload made).
fn declared<K>(workload: &CachedWorkload<K>) -> Option<String> {
    (!workload.derived)
        .then(|| workload.metadata.namespace.clone())
        .flatten()
}

/// The controller, subscribed to the shared caches; runs until `shutdown` when polled.
pub fn run(
    ctx: Arc<Context>,
    caches: &Caches,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + use<> {
    let namespaces = ctx.stores.namespaces.clone();
    // Every trigger maps an object to the baseline of its namespace.
    let to_baseline = move |namespace: Option<String>| baseline_of(&namespaces, namespace);
    let (pods, deployments, statefulsets, daemonsets, replicasets, jobs, cronjobs, policies) = (
        to_baseline.clone(),
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
        reported: Reported::default(),
    });
    Controller::for_shared_stream(caches.baselines().all(), ctx.stores.baselines.clone())
        // Standalone pods; pods made by a workload are audited through it.
        .watches_shared_stream(caches.pods().all(), move |pod| {
            if pod.standalone_spec.is_some() {
                pods(pod.namespace())
            } else {
                None
            }
        })
        // Workloads whose spec changed (a new generation), created or deleted.
        .watches_shared_stream(caches.deployments().spec(), move |o| {
            deployments(declared(&*o))
        })
        .watches_shared_stream(caches.statefulsets().spec(), move |o| {
            statefulsets(declared(&*o))
        })
        .watches_shared_stream(caches.daemonsets().spec(), move |o| {
            daemonsets(declared(&*o))
        })
        .watches_shared_stream(caches.replicasets().spec(), move |o| {
            replicasets(declared(&*o))
        })
        .watches_shared_stream(caches.jobs().spec(), move |o| jobs(declared(&*o)))
        .watches_shared_stream(caches.cronjobs().spec(), move |o| cronjobs(declared(&*o)))
        .watches_shared_stream(caches.audited_policies().all(), move |o| {
            policies(o.namespace())
        })
        // No debounce (a trailing one starves a busy baseline): the audit reads the caches,
        // and triggers during an audit collapse into one more.
        .with_config(Config::default().concurrency(2))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            reconcile,
            |b, e, c: Arc<AuditContext>| super::error_policy(CONTROLLER, b, e, c.ctx.clone()),
            audit_ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

async fn reconcile(
    baseline: Arc<SecurityBaseline>,
    actx: Arc<AuditContext>,
) -> Result<Action, Error> {
    reconciled(
        CONTROLLER,
        &*baseline,
        &actx.ctx,
        reconcile_baseline(&baseline, &actx),
    )
    .await
}

#[instrument(skip_all, fields(baseline = %baseline.name_any()))]
async fn reconcile_baseline(
    baseline: &SecurityBaseline,
    actx: &AuditContext,
) -> Result<Action, Error> {
    let ctx = &actx.ctx;
    let now = Timestamp::now();

    // build + apply: the admission policy, as the API server will enforce it.
    let compiled = policy::compile(baseline, now)?;
    let admission = apply::apply_policy(ctx, compiled).await?;

    // audit: read what runs in the bound namespaces, check it, report it.
    // A refused policy binds nothing (its name may not even be a valid label value): no audit.
    let facts = match admission {
        Admission::Rejected(_) => Vec::new(),
        _ => read::read_namespaces(&ctx.stores, &baseline.name_any()),
    };
    let findings = audit::audit(baseline, &facts, now);
    report::report_events(ctx, &actx.reported, baseline, &findings).await?;
    report::write_policy_reports(ctx, &actx.reported, baseline, &facts, &findings).await?;
    let summary = audit::summarise(&findings);

    // status: only when something changed.
    let namespaces: Vec<String> = facts.iter().map(|f| f.name.clone()).collect();
    let status = status::build(baseline, &admission, namespaces, summary, now);
    if baseline.status.as_ref() != Some(&status) {
        let api: Api<SecurityBaseline> = Api::all(ctx.client.clone());
        ctx.writer.apply_status(&api, baseline, &status).await?;
    }

    // Come back when an exception expires, when the API server should have type-checked the
    // policy, or for the next periodic audit.
    let mut wait = AUDIT_INTERVAL;
    if admission == Admission::Pending {
        wait = Duration::from_secs(1);
    }
    if let Some(expiry) = policy::next_expiry(baseline, now) {
        let until = expiry.duration_since(now);
        let until = Duration::try_from(until).unwrap_or_default() + Duration::from_millis(100);
        wait = wait.min(until);
    }
    Ok(Action::requeue(wait))
}
