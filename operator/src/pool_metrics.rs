//! The pool as metrics: Sites, Tenants, PortalServices and SecurityBaselines, computed at each
//! scrape from the caches (as kube-state-metrics does), so the series always match the objects'
//! status and those of a deleted object disappear with it.
//!
//! Only the leading replica exports them: with two replicas, a sum over the pool still counts
//! each object once. `docs/observability.md` lists every family.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntGauge, Opts};

use crate::api::portal_service::PortalService;
use crate::api::security_baseline::SecurityBaseline;
use crate::api::site::Site;
use crate::api::tenant::Tenant;
use crate::baseline::rules;
use crate::cache::Stores;
use crate::domain::resources::{Resource, Resources};
use crate::meta::TENANT_LABEL;

/// The families, with their help texts and labels.
struct Families {
    site_info: GaugeVec,
    site_capacity: GaugeVec,
    site_allocatable: GaugeVec,
    site_requested: GaugeVec,
    site_nodes: GaugeVec,
    site_nodes_ready: GaugeVec,
    site_cordoned: GaugeVec,
    site_condition: GaugeVec,
    tenant_info: GaugeVec,
    tenant_quota_hard: GaugeVec,
    tenant_quota_used: GaugeVec,
    tenant_namespaces: GaugeVec,
    tenant_portalservices: GaugeVec,
    tenant_condition: GaugeVec,
    service_info: GaugeVec,
    service_replicas_desired: GaugeVec,
    service_replicas_ready: GaugeVec,
    service_site_replicas_ready: GaugeVec,
    service_window_active: GaugeVec,
    service_condition: GaugeVec,
    baseline_info: GaugeVec,
    baseline_namespaces: GaugeVec,
    baseline_checked: GaugeVec,
    baseline_compliant: GaugeVec,
    baseline_violations: GaugeVec,
    baseline_last_audit: GaugeVec,
    baseline_condition: GaugeVec,
}

const SITE: &[&str] = &["site"];
const SITE_RESOURCE: &[&str] = &["site", "resource", "unit"];
const TENANT: &[&str] = &["tenant"];
const TENANT_RESOURCE: &[&str] = &["tenant", "resource", "unit"];
const SERVICE: &[&str] = &["namespace", "portalservice", "tenant"];
const BASELINE: &[&str] = &["baseline"];

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    // Names and labels are constants of this module: a failure is a bug caught by the tests.
    #[allow(clippy::expect_used)]
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn with(base: &[&str], more: &[&str]) -> Vec<String> {
    base.iter().chain(more).map(|s| (*s).to_string()).collect()
}

fn gauge_with(name: &str, help: &str, base: &[&str], more: &[&str]) -> GaugeVec {
    let labels = with(base, more);
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    gauge(name, help, &labels)
}

impl Families {
    fn new() -> Self {
        Self {
            site_info: gauge(
                "verbund_site_info",
                "A site of the pool and the organisation operating it (always 1).",
                &[
                    "site",
                    "display_name",
                    "zone",
                    "organisation_kind",
                    "organisation",
                    "max_protection_level",
                ],
            ),
            site_capacity: gauge(
                "verbund_site_capacity",
                "Capacity of a site's nodes.",
                SITE_RESOURCE,
            ),
            site_allocatable: gauge(
                "verbund_site_allocatable",
                "Allocatable resources of a site's nodes.",
                SITE_RESOURCE,
            ),
            site_requested: gauge(
                "verbund_site_requested",
                "Resources requested by the pods running at a site.",
                SITE_RESOURCE,
            ),
            site_nodes: gauge("verbund_site_nodes", "Nodes of a site.", SITE),
            site_nodes_ready: gauge(
                "verbund_site_nodes_ready",
                "Nodes of a site that are Ready.",
                SITE,
            ),
            site_cordoned: gauge(
                "verbund_site_cordoned",
                "1 while a site is cordoned (takes no new placements).",
                SITE,
            ),
            site_condition: gauge_with(
                "verbund_site_condition",
                "A site's conditions: 1 on the status that holds.",
                SITE,
                &["condition", "status"],
            ),
            tenant_info: gauge(
                "verbund_tenant_info",
                "A tenant and its organisation (always 1).",
                &[
                    "tenant",
                    "display_name",
                    "organisation_kind",
                    "organisation",
                    "max_protection_level",
                    "baseline",
                ],
            ),
            tenant_quota_hard: gauge(
                "verbund_tenant_quota_hard",
                "A tenant's quota over all its namespaces.",
                TENANT_RESOURCE,
            ),
            tenant_quota_used: gauge(
                "verbund_tenant_quota_used",
                "What a tenant's pods request, over all its namespaces.",
                TENANT_RESOURCE,
            ),
            tenant_namespaces: gauge(
                "verbund_tenant_namespaces",
                "Namespaces of a tenant.",
                TENANT,
            ),
            tenant_portalservices: gauge(
                "verbund_tenant_portalservices",
                "Portal services in a tenant's namespaces.",
                TENANT,
            ),
            tenant_condition: gauge_with(
                "verbund_tenant_condition",
                "A tenant's conditions: 1 on the status that holds.",
                TENANT,
                &["condition", "status"],
            ),
            service_info: gauge_with(
                "verbund_portalservice_info",
                "A portal service, its protection need and its LeiKa service key (always 1).",
                SERVICE,
                &["protection_level", "service_key"],
            ),
            service_replicas_desired: gauge(
                "verbund_portalservice_replicas_desired",
                "Replicas a portal service should run now.",
                SERVICE,
            ),
            service_replicas_ready: gauge(
                "verbund_portalservice_replicas_ready",
                "Replicas of a portal service that are Ready.",
                SERVICE,
            ),
            service_site_replicas_ready: gauge_with(
                "verbund_portalservice_site_replicas_ready",
                "Ready replicas of a portal service per site.",
                SERVICE,
                &["site"],
            ),
            service_window_active: gauge_with(
                "verbund_portalservice_window_active",
                "1 while a scaling window of a portal service is active (window names it).",
                SERVICE,
                &["window"],
            ),
            service_condition: gauge_with(
                "verbund_portalservice_condition",
                "A portal service's conditions: 1 on the status that holds.",
                SERVICE,
                &["condition", "status"],
            ),
            baseline_info: gauge(
                "verbund_baseline_info",
                "A security baseline and how it is enforced (always 1).",
                &[
                    "baseline",
                    "enforcement",
                    "protection_level",
                    "pod_security",
                ],
            ),
            baseline_namespaces: gauge(
                "verbund_baseline_namespaces",
                "Namespaces bound to a security baseline.",
                BASELINE,
            ),
            baseline_checked: gauge(
                "verbund_baseline_objects_checked",
                "Workloads and namespaces a baseline's last audit checked.",
                BASELINE,
            ),
            baseline_compliant: gauge(
                "verbund_baseline_objects_compliant",
                "Workloads and namespaces a baseline's last audit found compliant.",
                BASELINE,
            ),
            baseline_violations: gauge(
                "verbund_baseline_violations",
                "Objects violating a rule in a baseline's last audit; bsi names the IT-Grundschutz requirements.",
                &["baseline", "rule", "bsi"],
            ),
            baseline_last_audit: gauge(
                "verbund_baseline_last_audit_timestamp_seconds",
                "When a baseline's audit results last changed (Unix time).",
                BASELINE,
            ),
            baseline_condition: gauge_with(
                "verbund_baseline_condition",
                "A baseline's conditions: 1 on the status that holds.",
                BASELINE,
                &["condition", "status"],
            ),
        }
    }

    fn all(&self) -> [&GaugeVec; 27] {
        [
            &self.site_info,
            &self.site_capacity,
            &self.site_allocatable,
            &self.site_requested,
            &self.site_nodes,
            &self.site_nodes_ready,
            &self.site_cordoned,
            &self.site_condition,
            &self.tenant_info,
            &self.tenant_quota_hard,
            &self.tenant_quota_used,
            &self.tenant_namespaces,
            &self.tenant_portalservices,
            &self.tenant_condition,
            &self.service_info,
            &self.service_replicas_desired,
            &self.service_replicas_ready,
            &self.service_site_replicas_ready,
            &self.service_window_active,
            &self.service_condition,
            &self.baseline_info,
            &self.baseline_namespaces,
            &self.baseline_checked,
            &self.baseline_compliant,
            &self.baseline_violations,
            &self.baseline_last_audit,
            &self.baseline_condition,
        ]
    }
}

/// The collector registered on the operator's registry.
pub struct PoolMetrics {
    stores: Stores,
    /// `verbund_leader`: the pool is exported only while this replica leads.
    leader: IntGauge,
    /// Families kept only for their descriptions; every scrape fills fresh ones.
    described: Families,
}

impl PoolMetrics {
    pub fn new(stores: Stores, leader: IntGauge) -> Self {
        Self {
            stores,
            leader,
            described: Families::new(),
        }
    }

    /// The families filled from the caches as they are now.
    fn families(&self) -> Families {
        let families = Families::new();
        let tenant_of = tenants_by_namespace(&self.stores.namespaces.state());
        for site in self.stores.sites.state() {
            record_site(&families, &site);
        }
        for tenant in self.stores.tenants.state() {
            record_tenant(&families, &tenant);
        }
        for service in self.stores.portal_services.state() {
            let namespace = service.namespace().unwrap_or_default();
            let tenant = tenant_of.get(&namespace).map_or("", String::as_str);
            record_service(&families, &service, tenant);
        }
        for baseline in self.stores.baselines.state() {
            record_baseline(&families, &baseline);
        }
        families
    }
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics").finish_non_exhaustive()
    }
}

impl Collector for PoolMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.described
            .all()
            .into_iter()
            .flat_map(Collector::desc)
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if self.leader.get() != 1 {
            return Vec::new();
        }
        let families = self.families();
        families
            .all()
            .into_iter()
            .flat_map(Collector::collect)
            .filter(|family| !family.get_metric().is_empty())
            .collect()
    }
}

fn tenants_by_namespace(
    namespaces: &[std::sync::Arc<PartialObjectMeta<Namespace>>],
) -> BTreeMap<String, String> {
    namespaces
        .iter()
        .filter_map(|ns| {
            let tenant = ns.labels().get(TENANT_LABEL)?;
            Some((ns.name_any(), tenant.clone()))
        })
        .collect()
}

/// Sets one series per resource from a status map (`cpu`, `memory`, `pods`), in base units.
fn record_resources(family: &GaugeVec, owner: &str, map: &BTreeMap<String, Quantity>) {
    let amounts = Resources::from_map_lenient(map, Resource::name);
    for r in Resource::ALL {
        // Amounts are in thousandths of the base unit.
        let value = amounts.get(r).0 as f64 / 1000.0;
        family
            .with_label_values(&[owner, r.name(), r.unit()])
            .set(value);
    }
}

/// One series per status of each condition, 1 on the status that holds.
fn record_conditions(family: &GaugeVec, owner: &[&str], conditions: &[Condition]) {
    for condition in conditions {
        let holds = condition.status.to_ascii_lowercase();
        for status in ["true", "false", "unknown"] {
            let mut labels = owner.to_vec();
            labels.extend([condition.type_.as_str(), status]);
            family
                .with_label_values(&labels)
                .set(if holds == status { 1.0 } else { 0.0 });
        }
    }
}

/// The serialised name of a spec enum, as users see it in YAML.
fn variant<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn record_site(f: &Families, site: &Site) {
    let name = site.name_any();
    let status = site.status.clone().unwrap_or_default();
    let zone = status.zone.clone().or_else(|| site.spec.zone.clone());
    f.site_info
        .with_label_values(&[
            name.as_str(),
            site.spec.display_name.as_str(),
            zone.as_deref().unwrap_or(&name),
            &variant(&site.spec.operated_by.kind),
            site.spec.operated_by.name.as_str(),
            &variant(&site.spec.max_protection_level),
        ])
        .set(1.0);
    record_resources(&f.site_capacity, &name, &status.capacity);
    record_resources(&f.site_allocatable, &name, &status.allocatable);
    record_resources(&f.site_requested, &name, &status.requested);
    f.site_nodes
        .with_label_values(&[&name])
        .set(f64::from(status.nodes.total));
    f.site_nodes_ready
        .with_label_values(&[&name])
        .set(f64::from(status.nodes.ready));
    f.site_cordoned
        .with_label_values(&[&name])
        .set(if site.spec.cordoned { 1.0 } else { 0.0 });
    record_conditions(&f.site_condition, &[&name], &status.conditions);
}

fn record_tenant(f: &Families, tenant: &Tenant) {
    let name = tenant.name_any();
    let status = tenant.status.clone().unwrap_or_default();
    f.tenant_info
        .with_label_values(&[
            name.as_str(),
            tenant.spec.display_name.as_str(),
            &variant(&tenant.spec.organisation.kind),
            tenant.spec.organisation.name.as_str(),
            &variant(&tenant.spec.max_protection_level),
            tenant.spec.baseline.as_deref().unwrap_or(""),
        ])
        .set(1.0);
    record_resources(&f.tenant_quota_hard, &name, &status.quota.hard);
    record_resources(&f.tenant_quota_used, &name, &status.quota.used);
    f.tenant_namespaces
        .with_label_values(&[&name])
        .set(f64::from(status.namespace_count));
    f.tenant_portalservices
        .with_label_values(&[&name])
        .set(f64::from(status.services));
    record_conditions(&f.tenant_condition, &[&name], &status.conditions);
}

fn record_service(f: &Families, service: &PortalService, tenant: &str) {
    let name = service.name_any();
    let namespace = service.namespace().unwrap_or_default();
    let owner = [namespace.as_str(), name.as_str(), tenant];
    let status = service.status.clone().unwrap_or_default();
    let service_key = service
        .spec
        .catalog
        .as_ref()
        .map_or("", |c| c.service_key.as_str());
    let protection = variant(&service.spec.protection_level);
    f.service_info
        .with_label_values(&[&owner[..], &[protection.as_str(), service_key]].concat())
        .set(1.0);
    f.service_replicas_desired
        .with_label_values(&owner)
        .set(f64::from(status.replicas.desired));
    f.service_replicas_ready
        .with_label_values(&owner)
        .set(f64::from(status.replicas.ready));
    for site in &status.sites {
        f.service_site_replicas_ready
            .with_label_values(&[&owner[..], &[site.site.as_str()]].concat())
            .set(f64::from(site.ready));
    }
    let window = status.active_window.as_deref().unwrap_or("");
    f.service_window_active
        .with_label_values(&[&owner[..], &[window]].concat())
        .set(if window.is_empty() { 0.0 } else { 1.0 });
    record_conditions(&f.service_condition, &owner, &status.conditions);
}

fn record_baseline(f: &Families, baseline: &SecurityBaseline) {
    let name = baseline.name_any();
    let status = baseline.status.clone().unwrap_or_default();
    f.baseline_info
        .with_label_values(&[
            name.as_str(),
            &variant(&baseline.spec.enforcement),
            &variant(&baseline.spec.protection_level),
            &variant(&baseline.spec.pod_security),
        ])
        .set(1.0);
    f.baseline_namespaces
        .with_label_values(&[&name])
        .set(status.namespaces.len() as f64);
    f.baseline_checked
        .with_label_values(&[&name])
        .set(f64::from(status.checked));
    f.baseline_compliant
        .with_label_values(&[&name])
        .set(f64::from(status.compliant));
    // Every rule the baseline switches on has a series, 0 when nothing violates it.
    for rule in rules::CATALOGUE
        .iter()
        .filter(|r| rules::enabled(r.name, &baseline.spec.rules))
    {
        let count = status
            .violations
            .iter()
            .find(|v| v.rule == rule.name)
            .map_or(0, |v| v.count);
        f.baseline_violations
            .with_label_values(&[&name, &rules::rule_key(rule.name), &rule.bsi.join(",")])
            .set(f64::from(count));
    }
    if let Some(last) = &status.last_audit {
        f.baseline_last_audit
            .with_label_values(&[&name])
            .set(last.0.as_second() as f64);
    }
    record_conditions(&f.baseline_condition, &[&name], &status.conditions);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use prometheus::Encoder;
    use serde_json::json;

    /// The families as the text exposition format, as Prometheus would scrape them.
    fn exposition(families: &Families) -> String {
        let gathered: Vec<MetricFamily> = families
            .all()
            .into_iter()
            .flat_map(Collector::collect)
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&gathered, &mut out)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        String::from_utf8(out).unwrap_or_else(|e| panic!("utf-8: {e}"))
    }

    fn with_status<T: serde::de::DeserializeOwned + serde::Serialize>(
        object: &T,
        status: serde_json::Value,
    ) -> T {
        let mut value = serde_json::to_value(object).unwrap_or_else(|e| panic!("{e}"));
        value["status"] = status;
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_site_exports_resources_in_base_units_with_unit_labels() {
        let site = with_status(
            &testing::site("rz-uds", "High", false),
            json!({
                "nodes": { "total": 3, "ready": 2, "unschedulable": 0 },
                "capacity": { "cpu": "192", "memory": "1536Gi", "pods": "330" },
                "allocatable": { "cpu": "190500m", "memory": "1500Gi", "pods": "330" },
                "requested": { "cpu": "2500m", "memory": "3Gi", "pods": "7" },
                "conditions": [{ "type": "Ready", "status": "True", "reason": "NodesReady",
                                 "message": "", "lastTransitionTime": "2026-11-30T10:00:00Z" }],
            }),
        );
        let families = Families::new();
        record_site(&families, &site);
        let text = exposition(&families);
        for line in [
            r#"verbund_site_info{display_name="rz-uds",max_protection_level="High",organisation="IT-DLZ",organisation_kind="State",site="rz-uds",zone="rz-uds"} 1"#,
            r#"verbund_site_allocatable{resource="cpu",site="rz-uds",unit="core"} 190.5"#,
            r#"verbund_site_capacity{resource="memory",site="rz-uds",unit="byte"} 1649267441664"#,
            r#"verbund_site_requested{resource="pods",site="rz-uds",unit="integer"} 7"#,
            r#"verbund_site_nodes{site="rz-uds"} 3"#,
            r#"verbund_site_nodes_ready{site="rz-uds"} 2"#,
            r#"verbund_site_cordoned{site="rz-uds"} 0"#,
            r#"verbund_site_condition{condition="Ready",site="rz-uds",status="true"} 1"#,
            r#"verbund_site_condition{condition="Ready",site="rz-uds",status="false"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_service_carries_its_tenant_sites_and_active_window() {
        let service = with_status(
            &testing::portal_service(
                "melderegister",
                "lhs-buergerdienste",
                json!({ "catalog": { "serviceKey": "99115005000000", "title": "Meldebescheinigung",
                                     "summary": "s", "responsibleAuthority": "Landeshauptstadt",
                                     "regionalKeys": ["100410100100"], "languages": ["de"],
                                     "accessibility": "Full", "trustLevel": "Substantial" } }),
            ),
            json!({
                "replicas": { "desired": 3, "ready": 2 },
                "sites": [{ "site": "rz-land", "ready": 1 }, { "site": "rz-ego", "ready": 1 }],
                "activeWindow": "sprechzeiten",
                "conditions": [{ "type": "Placed", "status": "False", "reason": "NoEligibleSite",
                                 "message": "", "lastTransitionTime": "2026-11-30T10:00:00Z" }],
            }),
        );
        let families = Families::new();
        record_service(&families, &service, "lhs");
        let text = exposition(&families);
        let owner = r#"namespace="lhs-buergerdienste",portalservice="melderegister""#;
        for line in [
            format!(
                r#"verbund_portalservice_info{{{owner},protection_level="Normal",service_key="99115005000000",tenant="lhs"}} 1"#
            ),
            format!(r#"verbund_portalservice_replicas_desired{{{owner},tenant="lhs"}} 3"#),
            format!(r#"verbund_portalservice_replicas_ready{{{owner},tenant="lhs"}} 2"#),
            format!(
                r#"verbund_portalservice_site_replicas_ready{{{owner},site="rz-ego",tenant="lhs"}} 1"#
            ),
            format!(
                r#"verbund_portalservice_window_active{{{owner},tenant="lhs",window="sprechzeiten"}} 1"#
            ),
            format!(
                r#"verbund_portalservice_condition{{condition="Placed",{owner},status="false",tenant="lhs"}} 1"#
            ),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_baseline_has_a_series_for_every_rule_it_switches_on() {
        let baseline = with_status(
            &testing::baseline(
                "grundschutz-hoch",
                json!({ "runAsNonRoot": true, "probesRequired": true }),
            ),
            json!({
                "namespaces": ["a", "b"], "checked": 10, "compliant": 9, "violationCount": 1,
                "violations": [{ "rule": "probesRequired", "bsi": ["SYS.1.6.A18"], "count": 1 }],
                "lastAudit": "2026-11-30T10:00:00Z",
            }),
        );
        let families = Families::new();
        record_baseline(&families, &baseline);
        let text = exposition(&families);
        assert!(text.contains(r#"verbund_baseline_info{baseline="grundschutz-hoch",enforcement="Enforce",pod_security="Restricted",protection_level="High"} 1"#), "{text}");
        assert!(
            text.contains(r#"verbund_baseline_objects_checked{baseline="grundschutz-hoch"} 10"#)
        );
        assert!(text.contains(r#"verbund_baseline_namespaces{baseline="grundschutz-hoch"} 2"#));
        assert!(text.contains(r#"verbund_baseline_last_audit_timestamp_seconds{baseline="grundschutz-hoch"} 1796032800"#), "{text}");
        let violations: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("verbund_baseline_violations{"))
            .collect();
        assert!(
            violations
                .iter()
                .any(|l| l.contains(r#"rule="probesRequired""#) && l.ends_with(" 1")),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|l| l.contains(r#"rule="runAsNonRoot""#) && l.ends_with(" 0")),
            "{violations:?}"
        );
    }

    #[test]
    fn namespaces_map_to_their_tenant_by_label() {
        let ns: PartialObjectMeta<Namespace> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": "lhs-a", "labels": { TENANT_LABEL: "lhs" } }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let other: PartialObjectMeta<Namespace> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "kube-system" }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let map = tenants_by_namespace(&[std::sync::Arc::new(ns), std::sync::Arc::new(other)]);
        assert_eq!(map.get("lhs-a").map(String::as_str), Some("lhs"));
        assert_eq!(map.len(), 1);
    }
}
