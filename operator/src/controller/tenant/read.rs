//! What the caches say about the world around a tenant.

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::security_baseline::PodSecurityLevel;
use crate::api::tenant::Tenant;
use crate::cache::Stores;
use crate::controller::apply::cached;
use crate::domain::tenancy::{self, NamespaceQuota, QUOTA_NAME};

/// A tenant's share of the world.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Spec namespaces another tenant has claimed, with that tenant.
    pub claimed_by_others: Vec<(String, String)>,
    /// Namespaces labelled for this tenant that are no longer in its spec.
    pub released: Vec<String>,
    /// The bound baseline's Pod Security level, if the baseline exists.
    pub pod_security: Option<PodSecurityLevel>,
    /// The quota of each spec namespace, as cached.
    pub quotas: Vec<NamespaceQuota>,
    /// PortalServices in the tenant's namespaces.
    pub services: usize,
}

pub fn read(tenant: &Tenant, stores: &Stores) -> Observed {
    let name = tenant.name_any();
    let spec: BTreeSet<&str> = tenant.spec.namespaces.iter().map(String::as_str).collect();
    let mut claimed_by_others = Vec::new();
    let mut released = Vec::new();
    for ns in stores.namespaces.state() {
        let ns_name = ns.name_any();
        match tenancy::tenant_label(&*ns) {
            Some(owner) if owner != name && spec.contains(ns_name.as_str()) => {
                claimed_by_others.push((ns_name, owner.to_string()))
            }
            Some(owner) if owner == name && !spec.contains(ns_name.as_str()) => {
                released.push(ns_name)
            }
            _ => {}
        }
    }
    let pod_security = stores
        .baselines
        .get(&ObjectRef::new(&tenancy::baseline_name(tenant)))
        .map(|b| b.spec.pod_security);
    let quotas = tenancy::tenant_quotas(tenant, |ns| cached(&stores.quotas, ns, QUOTA_NAME));
    let services = tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| stores.services_in(ns).len())
        .sum();
    Observed {
        claimed_by_others,
        released,
        pod_security,
        quotas,
        services,
    }
}
