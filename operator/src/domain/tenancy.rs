//! Tenancy: the namespaces a tenant owns, the names of the guard rails Verbund keeps in each
//! of them, the baseline they are bound to, and what the tenant uses.

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::ResourceExt;

use crate::api::common::ProtectionLevel;
use crate::api::tenant::{Tenant, TenantQuota};
use crate::domain::resources::{Resource, Resources};
use crate::quantity::{Amount, ParseError};

/// The ClusterRole tenant admins are bound to in each of their namespaces.
pub const TENANT_ADMIN_ROLE: &str = "verbund-tenant-admin";
/// The ResourceQuota holding a namespace's share of the tenant's quota.
pub const QUOTA_NAME: &str = "verbund-tenant-quota";
/// The LimitRange giving containers default requests and limits.
pub const LIMIT_RANGE_NAME: &str = "verbund-defaults";
/// The RoleBinding of the tenant's admins.
pub const ROLE_BINDING_NAME: &str = "verbund-tenant-admins";
/// NetworkPolicy denying all ingress and egress not allowed by another policy.
pub const POLICY_DEFAULT_DENY: &str = "verbund-default-deny";
/// NetworkPolicy allowing DNS lookups.
pub const POLICY_DNS: &str = "verbund-allow-dns";
/// NetworkPolicy allowing traffic between the tenant's namespaces.
pub const POLICY_TENANT: &str = "verbund-allow-tenant";
/// NetworkPolicy allowing ingress from the portal gateway.
pub const POLICY_GATEWAY: &str = "verbund-allow-gateway";
/// NetworkPolicy allowing the tenant's declared egress.
pub const POLICY_EGRESS: &str = "verbund-egress";

/// Every network policy name a tenant namespace may hold from Verbund.
pub const GUARD_RAIL_POLICIES: [&str; 5] = [
    POLICY_DEFAULT_DENY,
    POLICY_DNS,
    POLICY_TENANT,
    POLICY_GATEWAY,
    POLICY_EGRESS,
];

/// Namespaces no tenant may claim.
pub const RESERVED_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The baseline a tenant's namespaces are bound to: `spec.baseline`, or the one for its
/// protection level.
pub fn baseline_name(tenant: &Tenant) -> String {
    tenant.spec.baseline.clone().unwrap_or_else(|| {
        match tenant.spec.max_protection_level {
            ProtectionLevel::Normal => "grundschutz-normal",
            ProtectionLevel::High => "grundschutz-hoch",
            ProtectionLevel::VeryHigh => "grundschutz-sehr-hoch",
        }
        .to_string()
    })
}

/// The tenant-wide quota as resources.
pub fn tenant_total(quota: &TenantQuota) -> Result<Resources, ParseError> {
    Ok(Resources {
        cpu: Amount::of(&quota.cpu)?,
        memory: Amount::of(&quota.memory)?,
        pods: Amount::count(i64::from(quota.pods)),
    })
}

/// What one namespace's quota says now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceQuota {
    pub namespace: String,
    /// The current `spec.hard`; None when the namespace has no quota yet.
    pub hard: Option<Resources>,
    /// The current `status.used` (zero until the API server has counted).
    pub used: Resources,
}

/// Reads hard and used of a namespace's stored ResourceQuota (None: there is none).
pub fn namespace_quota(namespace: &str, quota: Option<&ResourceQuota>) -> NamespaceQuota {
    let hard = quota.map(|q| {
        q.spec
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .map(|m| Resources::from_map_lenient(m, Resource::quota_key))
            .unwrap_or_default()
    });
    let used = quota
        .and_then(|q| q.status.as_ref())
        .and_then(|s| s.used.as_ref())
        .map(|m| Resources::from_map_lenient(m, Resource::quota_key))
        .unwrap_or_default();
    NamespaceQuota {
        namespace: namespace.to_string(),
        hard,
        used,
    }
}

/// What the tenant's pods request, summed over its namespaces' quotas.
pub fn tenant_used<'a>(namespaces: impl IntoIterator<Item = &'a NamespaceQuota>) -> Resources {
    namespaces.into_iter().map(|ns| ns.used).sum()
}

/// The quotas of `tenant`'s namespaces, looked up with `stored` (the cache).
pub fn tenant_quotas<Q>(tenant: &Tenant, stored: impl Fn(&str) -> Option<Q>) -> Vec<NamespaceQuota>
where
    Q: std::ops::Deref<Target = ResourceQuota>,
{
    tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| {
            let quota = stored(ns);
            namespace_quota(ns, quota.as_deref())
        })
        .collect()
}

/// Resources whose use has reached the quota, as "cpu 8 of 8".
pub fn exhausted(total: Resources, used: Resources) -> Vec<String> {
    Resource::ALL
        .into_iter()
        .filter(|r| total.get(*r) > Amount::ZERO && used.get(*r) >= total.get(*r))
        .map(|r| {
            format!(
                "{r} {} of {}",
                r.format(used.get(r)).0,
                r.format(total.get(r)).0
            )
        })
        .collect()
}

/// The name of the tenant a namespace's labels say it belongs to.
pub fn tenant_of_labels(labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    labels.get(crate::meta::TENANT_LABEL).map(String::as_str)
}

/// The tenant label of a cached object.
pub fn tenant_label<K: kube::Resource>(object: &K) -> Option<&str> {
    tenant_of_labels(object.labels())
}

/// May `tenant` run at site `site`? (`spec.allowedSites`, empty: every site.)
pub fn may_use(tenant: &Tenant, site: &str) -> bool {
    let allowed = &tenant.spec.allowed_sites;
    allowed.is_empty() || allowed.iter().any(|s| s == site)
}

/// The sites `tenant` may use (`spec.allowedSites`, or all), sorted by name, as its status
/// lists them for admission.
pub fn usable_sites(
    tenant: &Tenant,
    sites: &[std::sync::Arc<crate::api::site::Site>],
) -> Vec<crate::api::tenant::TenantSite> {
    let mut usable: Vec<_> = sites
        .iter()
        .filter(|s| may_use(tenant, &s.name_any()))
        .map(|s| crate::api::tenant::TenantSite {
            name: s.name_any(),
            zone: super::sites::zone_of(s),
            max_protection_level: s.spec.max_protection_level,
        })
        .collect();
    usable.sort_by(|a, b| a.name.cmp(&b.name));
    usable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(hard_cpu: &str, used_cpu: &str) -> ResourceQuota {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": QUOTA_NAME, "namespace": "a" },
            "spec": { "hard": { "requests.cpu": hard_cpu, "requests.memory": "1Gi", "pods": "10" } },
            "status": { "used": { "requests.cpu": used_cpu, "pods": "2" } }
        }))
        .expect("quota")
    }

    #[test]
    fn use_is_summed_over_the_namespaces_and_a_missing_quota_has_no_hard() {
        let a = namespace_quota("a", Some(&quota("4", "1500m")));
        let b = namespace_quota("b", None);
        assert_eq!(a.hard.map(|h| h.cpu), Some(Amount(4000)));
        assert_eq!(b.hard, None);
        let used = tenant_used([&a, &b]);
        assert_eq!(used.cpu, Amount(1500));
        assert_eq!(used.pods, Amount::count(2));
    }

    #[test]
    fn exhausted_resources_are_named_with_their_figures() {
        let total = Resources {
            cpu: Amount(8000),
            memory: Amount::parse("16Gi").expect("q"),
            pods: Amount::count(10),
        };
        let used = Resources {
            cpu: Amount(8000),
            memory: Amount::ZERO,
            pods: Amount::count(3),
        };
        assert_eq!(exhausted(total, used), vec!["cpu 8 of 8".to_string()]);
    }
}
