//! Placement of portal services on sites (pure).
//!
//! A site is eligible for a service when it is not cordoned, is Ready (not failed over), is
//! certified for the service's
//! protection need (Maximumprinzip: `maxProtectionLevel >= protectionLevel`), and is allowed
//! both by the tenant (`allowedSites`) and by the service (`placement.sites`). The eligible
//! sites become a required node affinity on `topology.kubernetes.io/zone` and a topology
//! spread constraint over the same key.

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::api::portal_service::{PortalService, Spread};
use crate::api::{Site, Tenant};
use crate::domain::sites::{ZONE_LABEL, zone_of};

/// A site a service may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EligibleSite {
    /// Name of the Site.
    pub site: String,
    /// Its zone label value.
    pub zone: String,
}

/// Why a site is not eligible, for the condition message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    Cordoned,
    /// The site's `Ready` is False (failed over, recovering, or no Ready node yet).
    NotReady,
    NotCertified,
    NotAllowedByTenant,
    NotAllowedByService,
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exclusion::Cordoned => "cordoned",
            Exclusion::NotReady => "not Ready",
            Exclusion::NotCertified => "not certified for the protection level",
            Exclusion::NotAllowedByTenant => "not in the tenant's allowedSites",
            Exclusion::NotAllowedByService => "not in spec.placement.sites",
        })
    }
}

/// The eligible sites (sorted by name) and the excluded ones with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub eligible: Vec<EligibleSite>,
    pub excluded: Vec<(String, Exclusion)>,
}

impl Placement {
    /// "rz-ego (cordoned), rz-uds (not certified ...)" for messages.
    pub fn exclusions(&self) -> String {
        self.excluded
            .iter()
            .map(|(s, why)| format!("{s} ({why})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether a site takes placements: its `Ready` is not False (a site whose status is not
/// written yet is given the benefit of the doubt).
pub fn takes_placements(site: &Site) -> bool {
    !site
        .status
        .as_ref()
        .is_some_and(|s| crate::conditions::is_false(&s.conditions, crate::conditions::kind::READY))
}

/// Decides where `service` of `tenant` may run among `sites`.
pub fn place<'a>(
    service: &PortalService,
    tenant: &Tenant,
    sites: impl IntoIterator<Item = &'a Site>,
) -> Placement {
    let mut placement = Placement::default();
    let mut sites: Vec<&Site> = sites.into_iter().collect();
    sites.sort_by_key(|s| s.name_any());
    for site in sites {
        let name = site.name_any();
        let exclusion = if site.spec.cordoned {
            Some(Exclusion::Cordoned)
        } else if !takes_placements(site) {
            Some(Exclusion::NotReady)
        } else if site.spec.max_protection_level < service.spec.protection_level {
            Some(Exclusion::NotCertified)
        } else if !crate::domain::tenancy::may_use(tenant, &name) {
            Some(Exclusion::NotAllowedByTenant)
        } else if !service.spec.placement.sites.is_empty()
            && !service.spec.placement.sites.contains(&name)
        {
            Some(Exclusion::NotAllowedByService)
        } else {
            None
        };
        match exclusion {
            Some(why) => placement.excluded.push((name, why)),
            None => placement.eligible.push(EligibleSite {
                zone: zone_of(site),
                site: name,
            }),
        }
    }
    placement
}

/// Required node affinity to the eligible sites' zones.
pub fn node_affinity(eligible: &[EligibleSite]) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: ZONE_LABEL.into(),
                        operator: "In".into(),
                        values: Some(eligible.iter().map(|s| s.zone.clone()).collect()),
                    }]),
                    match_fields: None,
                }],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    }
}

/// Spread over sites (and, softly, over nodes). `matchLabelKeys` on the pod-template hash
/// makes a rollout count only the new pods, so moving off a cordoned site completes.
pub fn spread_constraints(
    spread: Spread,
    selector: &LabelSelector,
) -> Vec<TopologySpreadConstraint> {
    let when = match spread {
        Spread::Required => "DoNotSchedule",
        Spread::Preferred => "ScheduleAnyway",
    };
    let constraint = |key: &str, when: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: when.into(),
        label_selector: Some(selector.clone()),
        match_label_keys: Some(vec!["pod-template-hash".into()]),
        ..Default::default()
    };
    vec![
        constraint(ZONE_LABEL, when),
        constraint("kubernetes.io/hostname", "ScheduleAnyway"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProtectionLevel;
    use crate::testing;

    fn site(name: &str, level: ProtectionLevel, cordoned: bool) -> Site {
        testing::site(name, &level.to_string(), cordoned)
    }

    fn tenant(allowed: &[&str]) -> Tenant {
        testing::tenant("t", &["t"], serde_json::json!({ "allowedSites": allowed }))
    }

    fn service(level: ProtectionLevel, sites: &[&str]) -> PortalService {
        testing::portal_service(
            "s",
            "t",
            serde_json::json!({ "protectionLevel": level, "placement": { "sites": sites } }),
        )
    }

    fn pool() -> Vec<Site> {
        testing::pool()
    }

    fn names(p: &Placement) -> Vec<&str> {
        p.eligible.iter().map(|s| s.site.as_str()).collect()
    }

    #[test]
    fn protection_level_decides_the_sites() {
        let sites = pool();
        assert_eq!(
            names(&place(
                &service(ProtectionLevel::Normal, &[]),
                &tenant(&[]),
                &sites
            )),
            ["rz-ego", "rz-land", "rz-uds"]
        );
        assert_eq!(
            names(&place(
                &service(ProtectionLevel::High, &[]),
                &tenant(&[]),
                &sites
            )),
            ["rz-land", "rz-uds"]
        );
        let very_high = place(
            &service(ProtectionLevel::VeryHigh, &[]),
            &tenant(&[]),
            &sites,
        );
        assert_eq!(names(&very_high), ["rz-land"]);
        assert!(very_high.exclusions().contains("rz-uds (not certified"));
    }

    #[test]
    fn tenant_and_service_restrictions_and_cordons_apply() {
        let mut sites = pool();
        assert_eq!(
            names(&place(
                &service(ProtectionLevel::Normal, &[]),
                &tenant(&["rz-uds", "rz-land"]),
                &sites
            )),
            ["rz-land", "rz-uds"]
        );
        assert_eq!(
            names(&place(
                &service(ProtectionLevel::Normal, &["rz-ego"]),
                &tenant(&[]),
                &sites
            )),
            ["rz-ego"]
        );
        sites[0] = site("rz-land", ProtectionLevel::VeryHigh, true);
        let p = place(
            &service(ProtectionLevel::VeryHigh, &[]),
            &tenant(&[]),
            &sites,
        );
        assert!(p.eligible.is_empty());
        assert!(p.exclusions().contains("rz-land (cordoned)"));
    }

    #[test]
    fn renders_affinity_and_spread() {
        let eligible = vec![EligibleSite {
            site: "rz-land".into(),
            zone: "rz-land".into(),
        }];
        let affinity = node_affinity(&eligible);
        let terms = affinity
            .node_affinity
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .expect("required");
        let expr = &terms.node_selector_terms[0]
            .match_expressions
            .as_ref()
            .expect("exprs")[0];
        assert_eq!(
            (expr.key.as_str(), expr.operator.as_str()),
            (ZONE_LABEL, "In")
        );
        assert_eq!(expr.values, Some(vec!["rz-land".to_string()]));
        let spread = spread_constraints(Spread::Preferred, &LabelSelector::default());
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(
            spread_constraints(Spread::Required, &LabelSelector::default())[0].when_unsatisfiable,
            "DoNotSchedule"
        );
    }
}
