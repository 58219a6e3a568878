//! What the caches say about the world around one portal service.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::portal_service::PortalService;
use crate::api::{SecurityBaseline, Site, Tenant};
use crate::cache::Stores;
use crate::controller::apply::cached;
use crate::controller::error::SpecError;
use crate::domain::resources::Resources;
use crate::domain::sites::{sites_by_zone, zone_of_node};
use crate::domain::tenancy::{self, QUOTA_NAME};

/// One of the service's pods, as status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePod {
    pub ready: bool,
    /// Not finished: counts against the quota.
    pub holds_resources: bool,
    /// The site of its node, once scheduled.
    pub site: Option<String>,
}

/// A service's share of the world.
#[derive(Debug, Clone)]
pub struct Observed {
    pub tenant: Arc<Tenant>,
    pub baseline: Option<Arc<SecurityBaseline>>,
    pub sites: Vec<Arc<Site>>,
    pub pods: Vec<ServicePod>,
    /// What the tenant's pods request, summed over its quotas.
    pub tenant_used: Resources,
    /// The replica count of the service's Deployment, as cached.
    pub deployment_replicas: Option<i32>,
}

pub fn read(ps: &PortalService, stores: &Stores) -> Result<Observed, SpecError> {
    let namespace = ps.namespace().unwrap_or_default();
    let tenant = stores
        .namespaces
        .get(&ObjectRef::new(&namespace))
        .and_then(|ns| tenancy::tenant_label(&*ns).map(str::to_string))
        .and_then(|t| stores.tenants.get(&ObjectRef::new(&t)))
        .ok_or_else(|| SpecError::NoTenant {
            namespace: namespace.clone(),
        })?;
    let baseline = stores
        .baselines
        .get(&ObjectRef::new(&tenancy::baseline_name(&tenant)));
    let sites = stores.sites.state();
    let site_of_zone: BTreeMap<String, String> = sites_by_zone(sites.iter().map(|s| &**s));
    let name = ps.name_any();
    let pods = stores
        .pods_of_service(&namespace, &name)
        .into_iter()
        .map(|p| ServicePod {
            ready: p.ready,
            holds_resources: p.holds_resources,
            site: p
                .node
                .as_ref()
                .and_then(|n| stores.nodes.get(&ObjectRef::new(n)))
                .and_then(|n| zone_of_node(&n).and_then(|z| site_of_zone.get(z).cloned())),
        })
        .collect();
    let quotas = tenancy::tenant_quotas(&tenant, |ns| cached(&stores.quotas, ns, QUOTA_NAME));
    let deployment_replicas =
        cached(&stores.deployments, &namespace, &name).and_then(|d| d.replicas);
    Ok(Observed {
        tenant_used: tenancy::tenant_used(&quotas),
        tenant,
        baseline,
        sites,
        pods,
        deployment_replicas,
    })
}
