//! Reporting the audit: a Warning Event on each object whose violations changed, and a
//! `wgpolicyk8s.io/v1alpha2` PolicyReport per bound namespace where that kind is served.
//!
//! What was reported is remembered, so that an unchanged audit sends nothing; after a restart
//! the memory is read back from the cluster once (the Events and PolicyReports Verbund wrote),
//! not rebuilt by writing everything again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::api::security_baseline::SecurityBaseline;
use crate::baseline::audit::{self, Finding, NamespaceFacts};
use crate::controller::Context;
use crate::controller::error::{ApiError, BuildError, Error};
use crate::meta::{self, BASELINE_LABEL};

/// The reason of the Events on offending objects.
pub const VIOLATED: &str = "BaselineViolated";

/// How long the answer to "is the PolicyReport kind served?" is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// What the audit has reported, per baseline.
#[derive(Debug, Default)]
pub struct Reported {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The note of the last Event per (baseline, object): a new Event only when it changes.
    events: BTreeMap<(String, String), String>,
    /// Whether the Events Verbund published before a restart have been read back.
    events_seeded: bool,
    /// The hash of each namespace's PolicyReport as last written or read, per baseline.
    reports: BTreeMap<(String, String), String>,
    /// Baselines whose PolicyReports have been read back.
    reports_seeded: BTreeSet<String>,
    /// Whether the API server serves PolicyReports, and when that was last asked.
    served: Option<(bool, Instant)>,
}

fn object_key(namespace: &str, kind: &str, name: &str) -> String {
    format!("{namespace}/{kind}/{name}")
}

impl Reported {
    fn lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// The findings due an Event: violating, and not reported with the same note before.
    /// Objects that are gone or fixed are forgotten, so that a relapse is reported again.
    pub fn due(&self, baseline: &str, findings: &[Finding]) -> Vec<(Finding, String)> {
        let Some(mut state) = self.lock() else {
            return Vec::new();
        };
        let current: BTreeMap<(String, String), (&Finding, String)> = findings
            .iter()
            .filter(|f| !f.violations.is_empty())
            .map(|f| {
                let key = (
                    baseline.to_string(),
                    object_key(&f.namespace, &f.kind, &f.name),
                );
                (key, (f, audit::event_note(baseline, &f.violations)))
            })
            .collect();
        state
            .events
            .retain(|key, _| key.0 != baseline || current.contains_key(key));
        let mut due = Vec::new();
        for (key, (finding, note)) in current {
            if state.events.get(&key) != Some(&note) {
                state.events.insert(key, note.clone());
                due.push((finding.clone(), note));
            }
        }
        due
    }

    /// Remembers the Events published before a restart (once): their notes say what was
    /// reported. A list of Events, not an Event per offender again.
    async fn seed_events(&self, ctx: &Context) -> Result<(), ApiError> {
        if self.lock().is_some_and(|s| s.events_seeded) {
            return Ok(());
        }
        let events: Api<CoreEvent> = Api::all(ctx.client.clone());
        let list = events
            .list(&ListParams::default().fields(&format!("reason={VIOLATED}")))
            .await
            .map_err(ApiError::with("list the audit's Events"))?;
        let Some(mut state) = self.lock() else {
            return Ok(());
        };
        for event in list.items {
            let note = event.message.unwrap_or_default();
            // "violates security baseline <name>: ..."
            let Some(baseline) = note
                .strip_prefix("violates security baseline ")
                .and_then(|rest| rest.split(':').next())
            else {
                continue;
            };
            let object = &event.involved_object;
            let key = object_key(
                object.namespace.as_deref().unwrap_or_else(|| {
                    // Namespaces are reported on the namespace itself.
                    object.name.as_deref().unwrap_or_default()
                }),
                object.kind.as_deref().unwrap_or_default(),
                object.name.as_deref().unwrap_or_default(),
            );
            state
                .events
                .insert((baseline.to_string(), key), note.clone());
        }
        state.events_seeded = true;
        Ok(())
    }
}

/// A Warning event on each object whose violations changed since it was last reported.
pub async fn report_events(
    ctx: &Context,
    reported: &Reported,
    baseline: &SecurityBaseline,
    findings: &[Finding],
) -> Result<(), Error> {
    reported.seed_events(ctx).await?;
    let name = baseline.name_any();
    for (finding, note) in reported.due(&name, findings) {
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
            reason: VIOLATED.into(),
            note: Some(note),
            action: "Audit".into(),
            secondary: Some(baseline.object_ref(&())),
        };
        ctx.writer.publish(&reference, event).await;
    }
    Ok(())
}

/// The PolicyReport kind, when its CRD is installed.
fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    )
}

/// Whether the API server serves PolicyReports (asked at most every `DISCOVERY_TTL`).
async fn reports_served(ctx: &Context, reported: &Reported) -> Result<bool, ApiError> {
    if let Some((served, at)) = reported.lock().and_then(|s| s.served)
        && at.elapsed() < DISCOVERY_TTL
    {
        return Ok(served);
    }
    let resource = report_resource();
    let served = match ctx
        .client
        .list_api_group_resources(&resource.api_version)
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == resource.plural),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(e) => return Err(ApiError::new("discover the PolicyReport kind", e)),
    };
    if let Some(mut state) = reported.lock() {
        state.served = Some((served, Instant::now()));
    }
    Ok(served)
}

/// Reads back, once per baseline, the hashes of the PolicyReports written before a restart.
async fn seed_reports(ctx: &Context, reported: &Reported, baseline: &str) -> Result<(), ApiError> {
    if reported
        .lock()
        .is_some_and(|s| s.reports_seeded.contains(baseline))
    {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &report_resource());
    let list = api
        .list(&ListParams::default().labels(&format!("{BASELINE_LABEL}={baseline}")))
        .await
        .map_err(ApiError::with(format!(
            "list the PolicyReports of {baseline}"
        )))?;
    if let Some(mut state) = reported.lock() {
        for report in list.items {
            if let (Some(ns), Some(hash)) =
                (report.namespace(), meta::stored_hash(&report.metadata))
            {
                state
                    .reports
                    .insert((baseline.to_string(), ns), hash.to_string());
            }
        }
        state.reports_seeded.insert(baseline.to_string());
    }
    Ok(())
}

/// Writes each bound namespace's PolicyReport when it differs from what was last written.
/// Skipped when the API server does not serve the PolicyReport kind (its CRD is not
/// installed): reports are an integration, not a requirement.
pub async fn write_policy_reports(
    ctx: &Context,
    reported: &Reported,
    baseline: &SecurityBaseline,
    facts: &[NamespaceFacts],
    findings: &[Finding],
) -> Result<(), Error> {
    // No bound namespace, no report (and a refused baseline may not even have a name a label
    // selector could carry).
    if facts.is_empty() || !reports_served(ctx, reported).await? {
        return Ok(());
    }
    let name = baseline.name_any();
    seed_reports(ctx, reported, &name).await?;
    let owner = meta::owner_reference(baseline)?;
    for namespace in facts.iter().map(|f| &f.name) {
        let mut desired: DynamicObject = serde_json::from_value(audit::policy_report(
            baseline, namespace, findings,
        ))
        .map_err(|e| BuildError::Encoding {
            what: format!("PolicyReport in {namespace}"),
            message: e.to_string(),
        })?;
        desired.metadata.labels = Some(BTreeMap::from([
            (
                meta::MANAGED_BY_LABEL.to_string(),
                meta::MANAGED_BY.to_string(),
            ),
            (BASELINE_LABEL.to_string(), name.clone()),
        ]));
        desired.metadata.owner_references = Some(vec![owner.clone()]);
        let hash = meta::stamp(&mut desired);
        let key = (name.clone(), namespace.clone());
        if reported
            .lock()
            .is_some_and(|s| s.reports.get(&key) == Some(&hash))
        {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), namespace, &report_resource());
        ctx.writer
            .apply_dynamic_if_changed(&api, desired, None)
            .await?;
        if let Some(mut state) = reported.lock() {
            state.reports.insert(key, hash);
        }
    }
    Ok(())
}
