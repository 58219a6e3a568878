//! Reporting the audit: a Warning Event on each object whose violations changed, and a
//! `wgpolicyk8s.io/v1alpha2` PolicyReport per bound namespace where that kind is served.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::api::security_baseline::{RuleName, SecurityBaseline};
use crate::baseline::audit::{self, Finding, NamespaceFacts};
use crate::controller::Context;
use crate::controller::error::{ApiError, BuildError, Error};
use crate::meta::{self, BASELINE_LABEL};

/// The violations last reported by an Event, per baseline and object: an object gets a new
/// Event only when what it violates changes.
#[derive(Debug, Default)]
pub struct Reported(Mutex<BTreeMap<(String, String), Vec<RuleName>>>);

fn object_key(finding: &Finding) -> String {
    format!("{}/{}/{}", finding.namespace, finding.kind, finding.name)
}

impl Reported {
    /// The findings due an Event: violating, and not reported with the same violations before.
    /// Objects that are gone or fixed are forgotten, so that a relapse is reported again.
    pub fn due(&self, baseline: &str, findings: &[Finding]) -> Vec<Finding> {
        let Ok(mut reported) = self.0.lock() else {
            return Vec::new();
        };
        let current: BTreeMap<(String, String), &Finding> = findings
            .iter()
            .filter(|f| !f.violations.is_empty())
            .map(|f| ((baseline.to_string(), object_key(f)), f))
            .collect();
        reported.retain(|key, _| key.0 != baseline || current.contains_key(key));
        let mut due = Vec::new();
        for (key, finding) in current {
            if reported.get(&key) != Some(&finding.violations) {
                reported.insert(key, finding.violations.clone());
                due.push(finding.clone());
            }
        }
        due
    }
}

/// A Warning event on each object whose violations changed since it was last reported.
pub async fn report_events(
    ctx: &Context,
    reported: &Reported,
    baseline: &SecurityBaseline,
    findings: &[Finding],
) {
    let name = baseline.name_any();
    for finding in reported.due(&name, findings) {
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
        ctx.writer.publish(&reference, event).await;
    }
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
pub async fn write_policy_reports(
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
        Err(e) => return Err(ApiError::new("discover the PolicyReport kind", e).into()),
    }
    let owner = meta::owner_reference(baseline)?;
    for namespace in facts.iter().map(|f| &f.name) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), namespace, &resource);
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
            (BASELINE_LABEL.to_string(), baseline.name_any()),
        ]));
        desired.metadata.owner_references = Some(vec![owner.clone()]);
        let stored = api
            .get_opt(audit::REPORT_NAME)
            .await
            .map_err(ApiError::with(format!("read PolicyReport in {namespace}")))?;
        ctx.writer
            .apply_dynamic_if_changed(&api, desired, stored.as_ref().map(|s| &s.metadata))
            .await?;
    }
    Ok(())
}
