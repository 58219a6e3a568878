//! What the caches say about the world around a tenant.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::api::tenant::{GrantedRoute, Tenant, TenantSite};
use crate::baseline::pod_security;
use crate::cache::Stores;
use crate::controller::apply::cached;
use crate::domain::routes::{self, Taken};
use crate::domain::tenancy::{self, NamespaceQuota, QUOTA_NAME};
use crate::meta::RELEASED_LABEL;

/// A tenant's share of the world.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Spec namespaces another tenant has claimed, with that tenant.
    pub claimed_by_others: Vec<(String, String)>,
    /// Namespaces labelled for this tenant that are no longer in its spec.
    pub released: Vec<String>,
    /// Pod Security labels from the bound baseline, if the baseline exists.
    pub pod_security: Option<pod_security::Labels>,
    /// The quota of each spec namespace, as cached.
    pub quotas: Vec<NamespaceQuota>,
    /// PortalServices in the tenant's namespaces.
    pub services: usize,
    /// The routes the tenant holds.
    pub routes: Vec<GrantedRoute>,
    /// The sites the tenant may use, by name.
    pub sites: Vec<TenantSite>,
    /// A route it declares that a senior tenant holds.
    pub route_taken: Option<Taken>,
}

/// The tenant a namespace was released from, if it was.
fn released_from(ns: &PartialObjectMeta<Namespace>) -> Option<&str> {
    ns.labels().get(RELEASED_LABEL).map(String::as_str)
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
            None if spec.contains(ns_name.as_str()) => {
                if let Some(from) = released_from(&ns).filter(|from| *from != name) {
                    claimed_by_others.push((
                        ns_name,
                        format!("{from} (released by it: an administrator hands it over by removing the label {RELEASED_LABEL})"),
                    ));
                }
            }
            _ => {}
        }
    }
    let pod_security = stores
        .baselines
        .get(&ObjectRef::new(&tenancy::baseline_name(tenant)))
        .map(|b| pod_security::labels(&b.spec));
    let quotas = tenancy::tenant_quotas(tenant, |ns| cached(&stores.quotas, ns, QUOTA_NAME));
    let services = tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| stores.services_in(ns).len())
        .sum();
    let (routes, route_taken) = match routes::granted(tenant, &stores.tenants.state()) {
        Ok(routes) => (routes, None),
        Err(taken) => (Vec::new(), Some(taken)),
    };
    let sites = tenancy::usable_sites(tenant, &stores.sites.state());
    Observed {
        sites,
        routes,
        route_taken,
        claimed_by_others,
        released,
        pod_security,
        quotas,
        services,
    }
}
