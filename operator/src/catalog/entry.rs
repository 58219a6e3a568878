//! A catalogue entry from a PortalService, and the filters a client may ask for: pure, no
//! client, no cache.

use crate::api::portal_service::{Accessibility, PortalService, TrustLevel};
use crate::conditions;
use kube::ResourceExt;

use super::proto;

/// The key of an entry and of `GetService`: `<namespace>/<name>`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The entry of `service` (in a namespace of `tenant`), or `None` when it has no catalogue
/// entry in its spec.
pub fn entry(service: &PortalService, tenant: &str) -> Option<proto::Service> {
    let catalog = service.spec.catalog.as_ref()?;
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let status = service.status.clone().unwrap_or_default();
    let ready = conditions::is_true(&status.conditions, conditions::kind::READY);
    let url = catalog
        .online_service_url
        .clone()
        .or(status.url.clone())
        .unwrap_or_default();
    Some(proto::Service {
        name: key(&namespace, &name),
        namespace,
        tenant: tenant.to_string(),
        service_key: catalog.service_key.clone(),
        title: catalog.title.clone(),
        summary: catalog.summary.clone(),
        responsible_authority: catalog.responsible_authority.clone(),
        regional_keys: catalog.regional_keys.clone(),
        languages: catalog.languages.clone(),
        accessibility: accessibility(catalog.accessibility) as i32,
        trust_level: trust_level(catalog.trust_level) as i32,
        url,
        availability: Some(proto::Availability {
            ready,
            ready_replicas: status.replicas.ready,
            desired_replicas: status.replicas.desired,
            sites: status
                .sites
                .iter()
                .filter(|s| s.ready > 0)
                .map(|s| s.site.clone())
                .collect(),
        }),
    })
}

fn accessibility(value: Accessibility) -> proto::Accessibility {
    match value {
        Accessibility::Full => proto::Accessibility::Full,
        Accessibility::Partial => proto::Accessibility::Partial,
        Accessibility::None => proto::Accessibility::None,
    }
}

fn trust_level(value: TrustLevel) -> proto::TrustLevel {
    match value {
        TrustLevel::Low => proto::TrustLevel::Low,
        TrustLevel::Substantial => proto::TrustLevel::Substantial,
        TrustLevel::High => proto::TrustLevel::High,
    }
}

/// A request that cannot be answered: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// The lengths at which an Amtlicher Regionalschlüssel ends a level: Land, Regierungsbezirk,
/// Kreis, Gemeindeverband, Gemeinde.
const ARS_LEVELS: [usize; 5] = [2, 3, 5, 9, 12];

/// The region a 12-digit key stands for: its shortest level prefix after which only zeros
/// follow ("100000000000" is the Land "10", "100410000000" the Kreis "10041").
pub fn region(key: &str) -> &str {
    ARS_LEVELS
        .iter()
        .map(|&len| len.min(key.len()))
        .find(|&len| key[len..].bytes().all(|b| b == b'0'))
        .map_or(key, |len| &key[..len])
}

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    tenant: Option<String>,
    service_key: Option<String>,
    regional_key: Option<String>,
    trust_level: Option<i32>,
    language: Option<String>,
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

impl Filter {
    /// Checks a request's filter; `prefix` names its field in the request (`filter`).
    pub fn parse(filter: Option<&proto::ServiceFilter>) -> Result<Self, Invalid> {
        let Some(f) = filter else {
            return Ok(Self::default());
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !f.service_key.is_empty() && (f.service_key.len() != 14 || !digits(&f.service_key)) {
            return Err(Invalid::new(
                "filter.service_key",
                format!(
                    "{:?} is not a LeiKa key (14 digits, e.g. \"99115005104000\")",
                    f.service_key
                ),
            ));
        }
        if !f.regional_key.is_empty()
            && (!(2..=12).contains(&f.regional_key.len()) || !digits(&f.regional_key))
        {
            return Err(Invalid::new(
                "filter.regional_key",
                format!(
                    "{:?} is not a Regionalschlüssel prefix (2 to 12 digits; \"10\" is the Saarland)",
                    f.regional_key
                ),
            ));
        }
        if proto::TrustLevel::try_from(f.trust_level).is_err() {
            return Err(Invalid::new(
                "filter.trust_level",
                format!("{} is not a trust level", f.trust_level),
            ));
        }
        let language_ok = |l: &str| {
            let (primary, region) = l.split_once('-').unwrap_or((l, ""));
            (2..=3).contains(&primary.len())
                && primary.bytes().all(|b| b.is_ascii_lowercase())
                && (region.is_empty()
                    || (region.len() == 2 && region.bytes().all(|b| b.is_ascii_uppercase())))
        };
        if !f.language.is_empty() && !language_ok(&f.language) {
            return Err(Invalid::new(
                "filter.language",
                format!(
                    "{:?} is not a language tag (e.g. \"de\", \"en\")",
                    f.language
                ),
            ));
        }
        Ok(Self {
            tenant: non_empty(&f.tenant),
            service_key: non_empty(&f.service_key),
            regional_key: non_empty(&f.regional_key),
            trust_level: (f.trust_level != 0).then_some(f.trust_level),
            language: non_empty(&f.language),
        })
    }

    /// Whether `service` passes every filter set.
    pub fn matches(&self, service: &proto::Service) -> bool {
        self.tenant.as_ref().is_none_or(|t| &service.tenant == t)
            && self
                .service_key
                .as_ref()
                .is_none_or(|k| &service.service_key == k)
            && self.regional_key.as_ref().is_none_or(|wanted| {
                service.regional_keys.iter().any(|key| {
                    let served = region(key);
                    served.starts_with(wanted.as_str()) || wanted.starts_with(served)
                })
            })
            && self
                .trust_level
                .is_none_or(|level| service.trust_level <= level)
            && self
                .language
                .as_ref()
                .is_none_or(|l| service.languages.iter().any(|have| have == l))
    }

    /// A short fingerprint, so that a page token is used only with the filter it came from.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &self.tenant,
            &self.service_key,
            &self.regional_key,
            self.trust_level,
            &self.language,
        )
            .hash(&mut hasher);
        hasher.finish()
    }
}

/// Page sizes: the default and the largest allowed.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;

/// A page request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: usize,
    /// List after this key (exclusive).
    pub after: Option<String>,
}

impl Page {
    pub fn parse(size: i32, token: &str, filter: &Filter) -> Result<Self, Invalid> {
        let size = match size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 || n as usize > MAX_PAGE_SIZE => {
                return Err(Invalid::new(
                    "page_size",
                    format!("{n} is outside 0..={MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
                ));
            }
            n => n as usize,
        };
        let after = if token.is_empty() {
            None
        } else {
            Some(decode_token(token, filter)?)
        };
        Ok(Self { size, after })
    }
}

/// The opaque token of the page after `last`: the filter's fingerprint and the last key, hex.
pub fn page_token(last: &str, filter: &Filter) -> String {
    let plain = format!("{:016x}{last}", filter.fingerprint());
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str, filter: &Filter) -> Result<String, Invalid> {
    let invalid = || Invalid::new("page_token", "not a token this catalogue gave out");
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    let plain = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (fingerprint, last) = plain.split_at_checked(16).ok_or_else(invalid)?;
    if fingerprint != format!("{:016x}", filter.fingerprint()) {
        return Err(Invalid::new(
            "page_token",
            "belongs to a different filter: page with the filter of the first request",
        ));
    }
    Ok(last.to_string())
}

/// Checks `GetService`'s name.
pub fn parse_name(name: &str) -> Result<(&str, &str), Invalid> {
    match name.split_once('/') {
        Some((namespace, service))
            if !namespace.is_empty() && !service.is_empty() && !service.contains('/') =>
        {
            Ok((namespace, service))
        }
        _ => Err(Invalid::new(
            "name",
            format!("{name:?} is not \"<namespace>/<name>\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    fn service(keys: &[&str], trust: i32, languages: &[&str]) -> proto::Service {
        proto::Service {
            name: "ns/s".into(),
            tenant: "lhs".into(),
            service_key: "99115005104000".into(),
            regional_keys: keys.iter().map(|s| s.to_string()).collect(),
            trust_level: trust,
            languages: languages.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn filter(f: proto::ServiceFilter) -> Filter {
        Filter::parse(Some(&f)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn regions_end_at_the_level_after_which_only_zeros_follow() {
        assert_eq!(region("100000000000"), "10");
        assert_eq!(region("100410000000"), "10041");
        assert_eq!(region("100410100100"), "100410100100");
        assert_eq!(region("100440000000"), "10044");
    }

    #[test]
    fn a_regional_key_matches_regions_within_it_and_regions_containing_it() {
        let saarbruecken = service(&["100410100100"], 1, &["de"]);
        let land_wide = service(&["100000000000"], 1, &["de"]);
        let in_land = filter(proto::ServiceFilter {
            regional_key: "10".into(),
            ..Default::default()
        });
        let in_kreis = filter(proto::ServiceFilter {
            regional_key: "10041".into(),
            ..Default::default()
        });
        let elsewhere = filter(proto::ServiceFilter {
            regional_key: "10042".into(),
            ..Default::default()
        });
        let bavaria = filter(proto::ServiceFilter {
            regional_key: "09".into(),
            ..Default::default()
        });
        assert!(in_land.matches(&saarbruecken) && in_land.matches(&land_wide));
        assert!(in_kreis.matches(&saarbruecken) && in_kreis.matches(&land_wide));
        assert!(!elsewhere.matches(&saarbruecken) && elsewhere.matches(&land_wide));
        assert!(!bavaria.matches(&saarbruecken) && !bavaria.matches(&land_wide));
    }

    #[test]
    fn a_trust_level_admits_services_needing_at_most_that_level() {
        let substantial = filter(proto::ServiceFilter {
            trust_level: proto::TrustLevel::Substantial as i32,
            ..Default::default()
        });
        assert!(substantial.matches(&service(&["100000000000"], 1, &["de"])));
        assert!(substantial.matches(&service(&["100000000000"], 2, &["de"])));
        assert!(!substantial.matches(&service(&["100000000000"], 3, &["de"])));
    }

    #[test]
    fn bad_filters_name_their_field() {
        for (f, field) in [
            (
                proto::ServiceFilter {
                    service_key: "123".into(),
                    ..Default::default()
                },
                "filter.service_key",
            ),
            (
                proto::ServiceFilter {
                    regional_key: "1".into(),
                    ..Default::default()
                },
                "filter.regional_key",
            ),
            (
                proto::ServiceFilter {
                    regional_key: "10a".into(),
                    ..Default::default()
                },
                "filter.regional_key",
            ),
            (
                proto::ServiceFilter {
                    trust_level: 9,
                    ..Default::default()
                },
                "filter.trust_level",
            ),
            (
                proto::ServiceFilter {
                    language: "Deutsch".into(),
                    ..Default::default()
                },
                "filter.language",
            ),
        ] {
            assert_eq!(Filter::parse(Some(&f)).map_err(|e| e.field), Err(field));
        }
    }

    #[test]
    fn page_tokens_round_trip_only_with_their_filter() {
        let land = filter(proto::ServiceFilter {
            regional_key: "10".into(),
            ..Default::default()
        });
        let token = page_token("sb-kfz/anwohnerparken", &land);
        assert_eq!(
            Page::parse(10, &token, &land).map(|p| p.after),
            Ok(Some("sb-kfz/anwohnerparken".into()))
        );
        assert_eq!(
            Page::parse(10, &token, &Filter::default()).map_err(|e| e.field),
            Err("page_token")
        );
        assert_eq!(
            Page::parse(10, "zz", &land).map_err(|e| e.field),
            Err("page_token")
        );
        assert_eq!(
            Page::parse(501, "", &land).map_err(|e| e.field),
            Err("page_size")
        );
        assert_eq!(
            Page::parse(0, "", &land).map(|p| p.size),
            Ok(DEFAULT_PAGE_SIZE)
        );
    }

    #[test]
    fn an_entry_carries_the_catalogue_and_the_live_availability() {
        let mut ps = testing::portal_service(
            "wohngeld",
            "sb-buergerdienste",
            json!({ "catalog": { "serviceKey": "99124001052000", "title": "Wohngeld",
                    "responsibleAuthority": "Wohngeldstelle", "regionalKeys": ["100410100100"],
                    "accessibility": "Partial", "trustLevel": "High" } }),
        );
        ps.status = serde_json::from_value(json!({
            "replicas": { "desired": 2, "ready": 1 },
            "sites": [{ "site": "rz-land", "ready": 1 }, { "site": "rz-uds", "ready": 0 }],
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Available",
                             "message": "", "lastTransitionTime": "2026-11-30T10:00:00Z" }],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let entry = entry(&ps, "lhs-saarbruecken").unwrap_or_else(|| panic!("an entry"));
        assert_eq!(entry.name, "sb-buergerdienste/wohngeld");
        assert_eq!(entry.tenant, "lhs-saarbruecken");
        assert_eq!(entry.languages, vec!["de".to_string()]);
        assert_eq!(entry.accessibility, proto::Accessibility::Partial as i32);
        assert_eq!(entry.trust_level, proto::TrustLevel::High as i32);
        let availability = entry.availability.unwrap_or_default();
        assert!(availability.ready);
        assert_eq!(
            (availability.ready_replicas, availability.desired_replicas),
            (1, 2)
        );
        assert_eq!(availability.sites, vec!["rz-land".to_string()]);

        let without = testing::portal_service("intern", "sb-buergerdienste", json!({}));
        assert!(super::entry(&without, "lhs").is_none());
    }

    #[test]
    fn names_are_namespace_slash_name() {
        assert_eq!(
            parse_name("sb-kfz/kfz-zulassung"),
            Ok(("sb-kfz", "kfz-zulassung"))
        );
        for bad in ["kfz-zulassung", "/x", "a/", "a/b/c"] {
            assert_eq!(parse_name(bad).map_err(|e| e.field), Err("name"));
        }
    }
}
