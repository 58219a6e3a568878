//! A portal service's status (pure): replicas and sites, the active window, its URL, and the
//! conditions `Ready`, `Placed`, `Compliant` and `ScalingLimited`.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::build::Desired;
use super::read::Observed;
use super::scaling::{Ceiling, Floor};
use crate::api::SecurityBaseline;
use crate::api::portal_service::{PortalService, PortalServiceStatus, ReplicaCounts, SitePods};
use crate::baseline::{policy, rules};
use crate::conditions::{Desired as Condition, kind, reason, set_condition};
use crate::controller::error::Failure;
use crate::domain::tenancy;
use crate::placement::Placement;

/// What a status is made of, besides the service itself.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub observed: &'a Observed,
    pub placement: &'a Placement,
    pub floor: &'a Floor,
    pub ceiling: &'a Ceiling,
    /// Baseline rules the rendered workload breaks (see [`findings`]).
    pub findings: &'a [String],
}

/// The category of a failure the baseline's admission policy caused.
const ADMISSION_REFUSED: &str = "AdmissionRefused";

/// The status of `ps` given the facts, and the failure of this reconcile if any.
pub fn build(
    ps: &PortalService,
    facts: &Facts<'_>,
    failure: Option<&Failure>,
    now: Timestamp,
) -> PortalServiceStatus {
    let generation = ps.metadata.generation;
    let old = ps.status.clone().unwrap_or_default();
    let observed = facts.observed;

    // Every site of the pool is listed, so a site the service left shows 0.
    let mut per_site: BTreeMap<String, i32> =
        observed.sites.iter().map(|s| (s.name_any(), 0)).collect();
    let mut ready = 0;
    for pod in observed.pods.iter().filter(|p| p.ready) {
        ready += 1;
        if let Some(site) = &pod.site {
            *per_site.entry(site.clone()).or_default() += 1;
        }
    }

    let mut conditions = old.conditions;
    let baseline = tenancy::baseline_name(&observed.tenant);
    for condition in conditions_of(facts, ready, &baseline, failure) {
        set_condition(&mut conditions, condition, generation, now);
    }

    let sites: Vec<SitePods> = per_site
        .into_iter()
        .map(|(site, ready)| SitePods { site, ready })
        .collect();
    let summary = sites
        .iter()
        .map(|s| format!("{}:{}", s.site, s.ready))
        .collect::<Vec<_>>()
        .join(" ");
    PortalServiceStatus {
        replicas: ReplicaCounts {
            desired: observed.deployment_replicas.unwrap_or(0),
            ready,
        },
        sites,
        site_summary: (!summary.is_empty()).then_some(summary),
        active_window: facts.floor.active_window.clone(),
        url: ps
            .spec
            .exposure
            .as_ref()
            .map(|e| format!("https://{}{}", e.host, e.path)),
        observed_generation: generation,
        conditions,
    }
}

fn conditions_of(
    facts: &Facts<'_>,
    ready: i32,
    baseline: &str,
    failure: Option<&Failure>,
) -> [Condition; 4] {
    let placement = facts.placement;
    let placed = if placement.eligible.is_empty() {
        Condition::new(
            kind::PLACED,
            false,
            reason::NO_ELIGIBLE_SITE,
            format!(
                "no site can take the service: {}; running pods are left as they are",
                placement.exclusions()
            ),
        )
    } else {
        let sites: Vec<&str> = placement.eligible.iter().map(|s| s.site.as_str()).collect();
        let mut message = format!("placed on {}", sites.join(", "));
        // Why the others are left out: cordoned, failed over, not certified, not allowed.
        if !placement.excluded.is_empty() {
            message.push_str(&format!("; not on {}", placement.exclusions()));
        }
        Condition::new(kind::PLACED, true, reason::PLACED, message)
    };
    let limited = match &facts.ceiling.limited {
        Some(message) => Condition::new(
            kind::SCALING_LIMITED,
            true,
            reason::TENANT_QUOTA,
            message.clone(),
        ),
        None => Condition::new(
            kind::SCALING_LIMITED,
            false,
            reason::WITHIN_QUOTA,
            format!(
                "the tenant's quota holds spec.replicas.max ({})",
                facts.ceiling.max
            ),
        ),
    };
    let compliant = match failure {
        Some(f) if f.reason == ADMISSION_REFUSED => {
            Condition::new(kind::COMPLIANT, false, f.reason, f.message.clone())
        }
        _ if facts.findings.is_empty() => Condition::new(
            kind::COMPLIANT,
            true,
            reason::BASELINE_SATISFIED,
            format!("the workload satisfies baseline {baseline}"),
        ),
        _ => Condition::new(
            kind::COMPLIANT,
            false,
            reason::BASELINE_VIOLATED,
            facts.findings.join("; "),
        ),
    };
    let min = facts.floor.min;
    let ready_condition = match failure {
        Some(f) => Condition::new(kind::READY, false, f.reason, f.message.clone()),
        None if !placed.status => Condition::new(
            kind::READY,
            false,
            reason::NO_ELIGIBLE_SITE,
            "no site can take the service",
        ),
        None if ready >= min => Condition::new(
            kind::READY,
            true,
            reason::AVAILABLE,
            format!("{ready} pods ready (at least {min} wanted)"),
        ),
        None => Condition::new(
            kind::READY,
            false,
            reason::PODS_NOT_READY,
            format!("{ready} of at least {min} pods ready"),
        ),
    };
    [placed, limited, compliant, ready_condition]
}

/// The status of a service Verbund refuses to run (its spec cannot work): `Ready` and `Placed`
/// False with the failure's reason; everything else as it was.
pub fn refused(ps: &PortalService, failure: &Failure, now: Timestamp) -> PortalServiceStatus {
    let generation = ps.metadata.generation;
    let mut status = ps.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    for type_ in [kind::READY, kind::PLACED] {
        set_condition(
            &mut status.conditions,
            Condition::new(type_, false, failure.reason, failure.message.clone()),
            generation,
            now,
        );
    }
    status
}

/// The bound baseline's rules the rendered workload would break (those Verbund cannot satisfy
/// by construction, such as the image's registry), less the namespace's exceptions in force.
pub fn findings(
    ps: &PortalService,
    desired: &Desired,
    baseline: Option<&SecurityBaseline>,
    replicas: i32,
    now: Timestamp,
) -> Vec<String> {
    let (Some(baseline), Some(deployment)) = (baseline, desired.deployment.as_ref()) else {
        return Vec::new();
    };
    let Some(pod) = deployment.spec.template.spec.as_ref() else {
        return Vec::new();
    };
    let workload = rules::Workload {
        kind: "Deployment",
        replicas: Some(replicas),
        pod,
    };
    let namespace = ps.namespace().unwrap_or_default();
    rules::violations(&baseline.spec.rules, &workload)
        .into_iter()
        .filter(|rule| !policy::exempt_namespaces(baseline, *rule, now).contains(&namespace))
        .map(|rule| rules::message(rules::rule(rule)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{find, is_true};
    use crate::controller::portal_service::read::ServicePod;
    use crate::placement;
    use crate::testing;
    use serde_json::json;
    use std::sync::Arc;

    fn observed(pods: Vec<ServicePod>) -> Observed {
        Observed {
            tenant: Arc::new(testing::tenant("lhs", &["lhs-portal"], json!({}))),
            baseline: None,
            sites: testing::pool().into_iter().map(Arc::new).collect(),
            pods,
            tenant_used: Default::default(),
            deployment_replicas: Some(3),
        }
    }

    fn pod(ready: bool, site: &str) -> ServicePod {
        ServicePod {
            ready,
            holds_resources: true,
            site: Some(site.into()),
        }
    }

    fn status_of(
        ps: &PortalService,
        observed: &Observed,
        findings: &[String],
        failure: Option<&Failure>,
    ) -> PortalServiceStatus {
        let placement = placement::place(ps, &observed.tenant, observed.sites.iter().map(|s| &**s));
        let floor = Floor {
            min: 2,
            active_window: Some("montagmorgen".into()),
        };
        let ceiling = Ceiling {
            max: 6,
            limited: None,
        };
        let facts = Facts {
            observed,
            placement: &placement,
            floor: &floor,
            ceiling: &ceiling,
            findings,
        };
        build(ps, &facts, failure, Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn ready_pods_are_counted_per_site_and_every_site_is_listed() {
        let ps = testing::portal_service(
            "wohnsitz",
            "lhs-portal",
            json!({ "protectionLevel": "High", "exposure": { "host": "service.saarland.de", "path": "/wohnsitz" } }),
        );
        let o = observed(vec![
            pod(true, "rz-land"),
            pod(true, "rz-uds"),
            pod(false, "rz-uds"),
        ]);
        let status = status_of(&ps, &o, &[], None);
        assert_eq!(
            status.replicas,
            ReplicaCounts {
                desired: 3,
                ready: 2
            }
        );
        assert_eq!(
            status.site_summary.as_deref(),
            Some("rz-ego:0 rz-land:1 rz-uds:1")
        );
        assert_eq!(status.active_window.as_deref(), Some("montagmorgen"));
        assert_eq!(
            status.url.as_deref(),
            Some("https://service.saarland.de/wohnsitz")
        );
        assert!(is_true(&status.conditions, kind::READY));
        assert!(is_true(&status.conditions, kind::PLACED));
        assert!(is_true(&status.conditions, kind::COMPLIANT));
        let placed = find(&status.conditions, kind::PLACED).expect("Placed");
        assert_eq!(
            placed.message,
            "placed on rz-land, rz-uds; not on rz-ego (not certified for the protection level)"
        );
    }

    #[test]
    fn too_few_ready_pods_no_site_or_findings_each_say_so() {
        let ps = testing::portal_service("wahl", "lhs-portal", json!({}));
        let status = status_of(&ps, &observed(vec![pod(true, "rz-ego")]), &[], None);
        let ready = find(&status.conditions, kind::READY).expect("Ready");
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            (reason::PODS_NOT_READY, "1 of at least 2 pods ready")
        );

        let nowhere = testing::portal_service(
            "wahl",
            "lhs-portal",
            json!({ "placement": { "sites": ["rz-nirgendwo"] } }),
        );
        let status = status_of(&nowhere, &observed(vec![]), &[], None);
        assert_eq!(
            find(&status.conditions, kind::READY).map(|c| c.reason.as_str()),
            Some(reason::NO_ELIGIBLE_SITE)
        );

        let findings = vec!["allowedRegistries: ...".to_string()];
        let status = status_of(&ps, &observed(vec![]), &findings, None);
        let compliant = find(&status.conditions, kind::COMPLIANT).expect("Compliant");
        assert_eq!(compliant.reason, reason::BASELINE_VIOLATED);
    }

    #[test]
    fn a_failed_apply_shows_in_ready_with_the_api_servers_message() {
        let ps = testing::portal_service("wahl", "lhs-portal", json!({}));
        let failure = Failure {
            reason: "ApiServerError",
            message: "apply Service lhs-portal/wahl: failed to allocate a serviceIP: range is full"
                .into(),
        };
        let status = status_of(&ps, &observed(vec![]), &[], Some(&failure));
        let ready = find(&status.conditions, kind::READY).expect("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "ApiServerError");
        assert!(ready.message.contains("range is full"));
        let refused = Failure {
            reason: ADMISSION_REFUSED,
            message: "denied".into(),
        };
        let status = status_of(&ps, &observed(vec![]), &[], Some(&refused));
        assert!(!is_true(&status.conditions, kind::COMPLIANT));
    }

    #[test]
    fn a_refused_spec_keeps_the_rest_of_the_status() {
        let mut ps = testing::portal_service("wahl", "lhs-portal", json!({}));
        let before = status_of(&ps, &observed(vec![pod(true, "rz-ego")]), &[], None);
        ps.status = Some(before.clone());
        ps.metadata.generation = Some(2);
        let failure = Failure {
            reason: "NoTenant",
            message: "namespace lhs-portal belongs to no Tenant".into(),
        };
        let status = refused(&ps, &failure, Timestamp::UNIX_EPOCH);
        assert_eq!(status.replicas, before.replicas);
        assert_eq!(status.observed_generation, Some(2));
        for type_ in [kind::READY, kind::PLACED] {
            assert_eq!(
                find(&status.conditions, type_).map(|c| c.reason.as_str()),
                Some("NoTenant")
            );
        }
        assert!(
            is_true(&status.conditions, kind::COMPLIANT),
            "left as it was"
        );
    }
}
