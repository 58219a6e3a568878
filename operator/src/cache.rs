//! The shared reflector caches: one watch per kind for the whole operator, fanned out to
//! every controller that needs it. Controllers, the gRPC catalogue and the metrics read these
//! stores; nothing reads the API server per request.
//!
//! Objects are trimmed before they are stored (DESIGN §7): managed field sets are dropped
//! everywhere, pods keep only what placement and accounting need, and Verbund's own children
//! are watched metadata-only, filtered to `app.kubernetes.io/managed-by=verbund-operator`.

use std::fmt::Debug;

use futures::{FutureExt, StreamExt, future::BoxFuture};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, Node, Pod, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::api::{PortalService, SecurityBaseline, Site, Tenant};
use crate::meta::{managed_selector, strip_managed_fields};

/// Buffer of each shared stream: how far a slow subscriber may fall behind before the watch
/// waits for it.
const BUFFER: usize = 1024;

/// One shared cache: the store to read, and the writer until the watch starts.
struct Shared<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    writer: Writer<K>,
}

impl<K> Shared<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    fn new() -> Self {
        let (store, writer) = reflector::store_shared(BUFFER);
        Self { store, writer }
    }
}

/// Read handles of every cache.
#[derive(Clone)]
pub struct Stores {
    pub sites: Store<Site>,
    pub tenants: Store<Tenant>,
    pub baselines: Store<SecurityBaseline>,
    pub portal_services: Store<PortalService>,
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<PartialObjectMeta<LimitRange>>,
    pub role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub deployments: Store<Deployment>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub autoscalers: Store<PartialObjectMeta<HorizontalPodAutoscaler>>,
    pub disruption_budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// Waits until every cache has received its first full list.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.sites.wait_until_ready().await?;
        self.tenants.wait_until_ready().await?;
        self.baselines.wait_until_ready().await?;
        self.portal_services.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.quotas.wait_until_ready().await?;
        self.limit_ranges.wait_until_ready().await?;
        self.role_bindings.wait_until_ready().await?;
        self.network_policies.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.service_accounts.wait_until_ready().await?;
        self.autoscalers.wait_until_ready().await?;
        self.disruption_budgets.wait_until_ready().await?;
        self.ingresses.wait_until_ready().await
    }
}

/// The caches before their watches start: subscribe controllers, then [`Caches::run`].
#[allow(missing_debug_implementations)] // holds writers and channels; nothing useful to print
pub struct Caches {
    client: Client,
    sites: Shared<Site>,
    tenants: Shared<Tenant>,
    baselines: Shared<SecurityBaseline>,
    portal_services: Shared<PortalService>,
    nodes: Shared<Node>,
    pods: Shared<Pod>,
    namespaces: Shared<PartialObjectMeta<Namespace>>,
    quotas: Shared<ResourceQuota>,
    limit_ranges: Shared<PartialObjectMeta<LimitRange>>,
    role_bindings: Shared<PartialObjectMeta<RoleBinding>>,
    network_policies: Shared<PartialObjectMeta<NetworkPolicy>>,
    deployments: Shared<Deployment>,
    services: Shared<PartialObjectMeta<Service>>,
    service_accounts: Shared<PartialObjectMeta<ServiceAccount>>,
    autoscalers: Shared<PartialObjectMeta<HorizontalPodAutoscaler>>,
    disruption_budgets: Shared<PartialObjectMeta<PodDisruptionBudget>>,
    ingresses: Shared<PartialObjectMeta<Ingress>>,
}

/// A subscription to one shared watch, for a controller's trigger.
pub type Subscription<K> = ReflectHandle<K>;

macro_rules! subscribe {
    ($($field:ident: $kind:ty),* $(,)?) => {
        impl Caches {
            $(
                /// A subscription to this cache's watch events.
                pub fn $field(&self) -> Subscription<$kind> {
                    // `subscribe` is None only for a writer not made shared, which `Shared::new` rules out.
                    self.$field.writer.subscribe().unwrap_or_else(|| unreachable!("shared writer"))
                }
            )*
        }
    };
}

subscribe!(
    sites: Site,
    tenants: Tenant,
    baselines: SecurityBaseline,
    portal_services: PortalService,
    nodes: Node,
    pods: Pod,
    namespaces: PartialObjectMeta<Namespace>,
    quotas: ResourceQuota,
    limit_ranges: PartialObjectMeta<LimitRange>,
    role_bindings: PartialObjectMeta<RoleBinding>,
    network_policies: PartialObjectMeta<NetworkPolicy>,
    deployments: Deployment,
    services: PartialObjectMeta<Service>,
    service_accounts: PartialObjectMeta<ServiceAccount>,
    autoscalers: PartialObjectMeta<HorizontalPodAutoscaler>,
    disruption_budgets: PartialObjectMeta<PodDisruptionBudget>,
    ingresses: PartialObjectMeta<Ingress>,
);

impl Caches {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            sites: Shared::new(),
            tenants: Shared::new(),
            baselines: Shared::new(),
            portal_services: Shared::new(),
            nodes: Shared::new(),
            pods: Shared::new(),
            namespaces: Shared::new(),
            quotas: Shared::new(),
            limit_ranges: Shared::new(),
            role_bindings: Shared::new(),
            network_policies: Shared::new(),
            deployments: Shared::new(),
            services: Shared::new(),
            service_accounts: Shared::new(),
            autoscalers: Shared::new(),
            disruption_budgets: Shared::new(),
            ingresses: Shared::new(),
        }
    }

    pub fn stores(&self) -> Stores {
        Stores {
            sites: self.sites.store.clone(),
            tenants: self.tenants.store.clone(),
            baselines: self.baselines.store.clone(),
            portal_services: self.portal_services.store.clone(),
            nodes: self.nodes.store.clone(),
            pods: self.pods.store.clone(),
            namespaces: self.namespaces.store.clone(),
            quotas: self.quotas.store.clone(),
            limit_ranges: self.limit_ranges.store.clone(),
            role_bindings: self.role_bindings.store.clone(),
            network_policies: self.network_policies.store.clone(),
            deployments: self.deployments.store.clone(),
            services: self.services.store.clone(),
            service_accounts: self.service_accounts.store.clone(),
            autoscalers: self.autoscalers.store.clone(),
            disruption_budgets: self.disruption_budgets.store.clone(),
            ingresses: self.ingresses.store.clone(),
        }
    }

    /// Runs every watch until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let c = &self.client;
        let all = watcher::Config::default();
        let managed = watcher::Config::default().labels(&managed_selector());
        let watches: Vec<BoxFuture<'static, ()>> = vec![
            reflect(Api::all(c.clone()), all.clone(), self.sites.writer, strip),
            reflect(Api::all(c.clone()), all.clone(), self.tenants.writer, strip),
            reflect(
                Api::all(c.clone()),
                all.clone(),
                self.baselines.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                all.clone(),
                self.portal_services.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                all.clone(),
                self.nodes.writer,
                strip_node,
            ),
            reflect(Api::all(c.clone()), all, self.pods.writer, strip_pod),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.namespaces.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.quotas.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.limit_ranges.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.role_bindings.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.network_policies.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.deployments.writer,
                strip_deployment,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.services.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.service_accounts.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.autoscalers.writer,
                strip,
            ),
            reflect(
                Api::all(c.clone()),
                managed.clone(),
                self.disruption_budgets.writer,
                strip,
            ),
            reflect(Api::all(c.clone()), managed, self.ingresses.writer, strip),
        ];
        tokio::select! {
            _ = futures::future::join_all(watches) => {},
            _ = shutdown.cancelled() => {},
        }
    }
}

/// Keeps one watch's cache current, trimming each object with `trim` before storing it.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trim: fn(&mut K),
) -> BoxFuture<'static, ()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect_shared(writer)
        .for_each(|event| async move {
            if let Err(error) = event {
                warn!(kind = %K::kind(&Default::default()), %error, "watch failed; retrying");
            }
        })
        .boxed()
}

fn strip<K: Resource>(object: &mut K) {
    strip_managed_fields(object.meta_mut());
}

/// Deployments keep metadata, the replica count the autoscaler set, and status; the pod
/// template (the bulk) is dropped: Verbund knows what it wants it to be.
fn strip_deployment(deployment: &mut Deployment) {
    strip_managed_fields(&mut deployment.metadata);
    deployment.spec.template = Default::default();
}

/// Nodes keep labels, schedulability, capacity, allocatable and their Ready condition.
fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
        status.node_info = None;
        status.addresses = None;
        status.daemon_endpoints = None;
        status.config = None;
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == "Ready");
        }
    }
}

/// Pods keep labels, owners, node, resource requests, phase and readiness: what placement,
/// site accounting and the portal services' status need.
fn strip_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
        spec.topology_spread_constraints = None;
        spec.init_containers = None;
        spec.ephemeral_containers = None;
        for container in &mut spec.containers {
            container.env = None;
            container.env_from = None;
            container.volume_mounts = None;
            container.command = None;
            container.args = None;
            container.liveness_probe = None;
            container.readiness_probe = None;
            container.startup_probe = None;
            container.security_context = None;
            container.ports = None;
        }
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
        status.pod_ips = None;
        status.host_ips = None;
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == "Ready");
        }
    }
}
