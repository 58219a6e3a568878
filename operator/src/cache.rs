//! The shared caches: one watch per kind for the whole operator. Controllers, the catalogue and
//! the metrics read these stores; nothing reads the API server per request.
//!
//! Each cache is a reflector store kept by its own watch, plus a broadcast of changes that the
//! controllers' triggers subscribe to. The broadcast never waits for a subscriber: one that
//! falls more than [`CHANGES_BUFFER`] changes behind is told so, counts the lag
//! (`verbund_cache_lagged_changes_total`) and is handed every cached object once instead (a
//! resync), so no subscriber can stall a watch for the others and none misses a change.
//!
//! Objects are trimmed before they are stored (DESIGN §7): managed field sets are dropped
//! everywhere; pods, nodes and workloads are decoded into compact projections
//! (`domain::projections`, `baseline::workload`: a workload's pod template becomes the audit's
//! facts about it); Verbund's other children are watched metadata-only, filtered to
//! `app.kubernetes.io/managed-by=verbund-operator`.
//! Verbund's own kinds are decoded one by one: an object the types cannot read is skipped and
//! reported (log, metric, and a Warning Event through [`Caches::undecodable`]), never fatal to
//! its watch.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, future::BoxFuture};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ObjectReference, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{PortalService, SecurityBaseline, Site, Tenant};
use crate::baseline::workload::{CachedNetworkPolicy, CachedWorkload};
use crate::domain::projections::{CachedNode, CachedPod};
use crate::domain::resources::Resource as PoolResource;
use crate::meta::{keep_own_annotations, managed_selector, strip_managed_fields};
use crate::metrics::Metrics;

/// How many changes a subscriber may fall behind before it is resynced.
pub const CHANGES_BUFFER: usize = 8192;

/// How long a watch may fail without a break before the operator reports itself not ready.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// An object of Verbund's own kinds that the types cannot decode.
#[derive(Debug, Clone)]
pub struct Undecodable {
    pub reference: ObjectReference,
    /// What the decoder said.
    pub error: String,
}

/// The state of one watch, for `/readyz` and the logs.
#[derive(Debug, Default)]
struct WatchHealth {
    /// When the watch started failing, while it keeps failing.
    failing_since: Mutex<Option<Instant>>,
}

impl WatchHealth {
    fn ok(&self) {
        if let Ok(mut since) = self.failing_since.lock() {
            *since = None;
        }
    }

    /// Records a failure; true when it is the first of a run.
    fn failed(&self) -> bool {
        match self.failing_since.lock() {
            Ok(mut since) => {
                let first = since.is_none();
                since.get_or_insert_with(Instant::now);
                first
            }
            Err(_) => false,
        }
    }

    fn stalled(&self, after: Duration) -> bool {
        self.failing_since
            .lock()
            .ok()
            .and_then(|since| *since)
            .is_some_and(|t| t.elapsed() >= after)
    }
}

/// One cache: the store to read, its writer until the watch starts, and the change broadcast.
struct Cache<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    writer: Writer<K>,
    changes: broadcast::Sender<Change<K>>,
    health: Arc<WatchHealth>,
    indexes: Vec<Index<K>>,
}

/// One change of a cached object, as the controllers' triggers receive it.
#[derive(Debug)]
pub struct Change<K> {
    pub object: Arc<K>,
    pub deleted: bool,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        Self {
            object: self.object.clone(),
            deleted: self.deleted,
        }
    }
}

/// Cached objects grouped by a key (the pods of a portal service, the services of a
/// namespace), kept with the store so that a lookup never scans it.
#[derive(Clone)]
pub struct Index<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    key: fn(&K) -> Option<String>,
    groups: Arc<std::sync::RwLock<Groups<K>>>,
}

struct Groups<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    by_key: HashMap<String, std::collections::HashSet<ObjectRef<K>>>,
    key_of: HashMap<ObjectRef<K>, String>,
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(key: fn(&K) -> Option<String>) -> Self {
        Self {
            key,
            groups: Arc::new(std::sync::RwLock::new(Groups {
                by_key: HashMap::new(),
                key_of: HashMap::new(),
            })),
        }
    }

    fn remove(groups: &mut Groups<K>, reference: &ObjectRef<K>) {
        if let Some(old) = groups.key_of.remove(reference)
            && let Some(set) = groups.by_key.get_mut(&old)
        {
            set.remove(reference);
            if set.is_empty() {
                groups.by_key.remove(&old);
            }
        }
    }

    fn applied(&self, object: &K) {
        let reference = ObjectRef::from_obj(object);
        let Ok(mut groups) = self.groups.write() else {
            return;
        };
        Self::remove(&mut groups, &reference);
        if let Some(key) = (self.key)(object) {
            groups
                .by_key
                .entry(key.clone())
                .or_default()
                .insert(reference.clone());
            groups.key_of.insert(reference, key);
        }
    }

    fn deleted(&self, object: &K) {
        if let Ok(mut groups) = self.groups.write() {
            Self::remove(&mut groups, &ObjectRef::from_obj(object));
        }
    }

    fn rebuild(&self, objects: &[Arc<K>]) {
        if let Ok(mut groups) = self.groups.write() {
            groups.by_key.clear();
            groups.key_of.clear();
        }
        for object in objects {
            self.applied(object);
        }
    }

    /// The cached objects under `key`.
    pub fn get(&self, key: &str, store: &Store<K>) -> Vec<Arc<K>> {
        let Ok(groups) = self.groups.read() else {
            return Vec::new();
        };
        groups
            .by_key
            .get(key)
            .map(|set| set.iter().filter_map(|r| store.get(r)).collect())
            .unwrap_or_default()
    }
}

impl<K: Resource + 'static> std::fmt::Debug for Index<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

impl<K> Cache<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    fn new() -> Self {
        let writer = Writer::default();
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        Self {
            store: writer.as_reader(),
            writer,
            changes,
            health: Arc::default(),
            indexes: Vec::new(),
        }
    }

    /// A stream of changes; after falling behind, every cached object once.
    fn subscribe(&self, kind: &'static str, metrics: Arc<Metrics>) -> Changes<K> {
        let receiver = self.changes.subscribe();
        let store = self.store.clone();
        let stream = futures::stream::unfold(receiver, move |mut receiver| {
            let (store, metrics) = (store.clone(), metrics.clone());
            async move {
                match receiver.recv().await {
                    Ok(change) => Some((vec![change], receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        metrics
                            .cache_lagged_changes
                            .with_label_values(&[kind])
                            .inc_by(missed);
                        warn!(
                            kind,
                            missed, "a controller fell behind the {kind} changes; resyncing it"
                        );
                        let resync = store
                            .state()
                            .into_iter()
                            .map(|object| Change {
                                object,
                                deleted: false,
                            })
                            .collect();
                        Some((resync, receiver))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
        })
        .flat_map(futures::stream::iter)
        .boxed();
        Changes(stream)
    }
}

/// A subscription to one cache's changes, for a controller's trigger.
pub type Subscription<K> = BoxStream<'static, Arc<K>>;

/// The changes of one cache, to be narrowed to what a trigger cares about.
#[allow(missing_debug_implementations)] // a stream
pub struct Changes<K>(BoxStream<'static, Change<K>>);

impl<K> Changes<K>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    /// Every change.
    pub fn all(self) -> Subscription<K> {
        self.0.map(|change| change.object).boxed()
    }

    /// Only changes of the spec (a new `metadata.generation`), creations and deletions: for
    /// triggers that do not care about status.
    pub fn spec(self) -> Subscription<K> {
        self.changed_in(|object: &K| object.meta().generation)
    }

    /// Only creations, deletions and changes of `key` (say, the generation and one condition):
    /// for triggers that care about part of an object.
    pub fn changed_in<T>(self, key: impl Fn(&K) -> T + Send + 'static) -> Subscription<K>
    where
        T: PartialEq + Send + 'static,
    {
        let mut seen: HashMap<ObjectRef<K>, T> = HashMap::new();
        self.0
            .filter_map(move |change| {
                let reference = ObjectRef::from_obj(&*change.object);
                let relevant = if change.deleted {
                    seen.remove(&reference);
                    true
                } else {
                    let now = key(&change.object);
                    let same = seen.get(&reference).is_some_and(|before| *before == now);
                    seen.insert(reference, now);
                    !same
                };
                futures::future::ready(relevant.then_some(change.object))
            })
            .boxed()
    }
}

/// Read handles of every cache.
#[derive(Clone)]
pub struct Stores {
    pub sites: Store<Site>,
    pub tenants: Store<Tenant>,
    pub baselines: Store<SecurityBaseline>,
    pub portal_services: Store<PortalService>,
    pub nodes: Store<CachedNode>,
    pub pods: Store<CachedPod>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<PartialObjectMeta<LimitRange>>,
    pub role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub deployments: Store<CachedWorkload<Deployment>>,
    pub statefulsets: Store<CachedWorkload<StatefulSet>>,
    pub daemonsets: Store<CachedWorkload<DaemonSet>>,
    pub replicasets: Store<CachedWorkload<ReplicaSet>>,
    pub jobs: Store<CachedWorkload<Job>>,
    pub cronjobs: Store<CachedWorkload<CronJob>>,
    /// Every NetworkPolicy, as far as the audit's default-deny rule needs it.
    pub audited_policies: Store<CachedNetworkPolicy>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub autoscalers: Store<PartialObjectMeta<HorizontalPodAutoscaler>>,
    pub disruption_budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    /// Verbund's admission policies (the baselines' and the tenant isolation policy), with the
    /// API server's type-checking status.
    pub admission_policies: Store<ValidatingAdmissionPolicy>,
    /// Their bindings (one per baseline, one per tenant).
    pub policy_bindings: Store<PartialObjectMeta<ValidatingAdmissionPolicyBinding>>,
    /// Lookups that would otherwise scan a store.
    pub indexes: Indexes,
}

/// The indexes kept beside the stores.
#[derive(Clone, Debug)]
pub struct Indexes {
    /// Pods by `namespace/portal service` (the pods Verbund runs for a service).
    pub pods_by_service: Index<CachedPod>,
    /// Pods by the node they are bound to.
    pub pods_by_node: Index<CachedPod>,
    /// Portal services by namespace.
    pub services_by_namespace: Index<PortalService>,
}

fn pod_service_key(pod: &CachedPod) -> Option<String> {
    crate::domain::pods::portal_service_of(pod).map(|(ns, name)| format!("{ns}/{name}"))
}

fn node_key(pod: &CachedPod) -> Option<String> {
    pod.node.clone()
}

fn namespace_key(service: &PortalService) -> Option<String> {
    service.namespace()
}

impl Indexes {
    fn new() -> Self {
        Self {
            pods_by_service: Index::new(pod_service_key),
            pods_by_node: Index::new(node_key),
            services_by_namespace: Index::new(namespace_key),
        }
    }
}

impl Stores {
    /// The pods Verbund runs for portal service `name` in `namespace`.
    pub fn pods_of_service(&self, namespace: &str, name: &str) -> Vec<Arc<CachedPod>> {
        self.indexes
            .pods_by_service
            .get(&format!("{namespace}/{name}"), &self.pods)
    }

    /// The pods bound to `node`.
    pub fn pods_on_node(&self, node: &str) -> Vec<Arc<CachedPod>> {
        self.indexes.pods_by_node.get(node, &self.pods)
    }

    /// The portal services in `namespace`.
    pub fn services_in(&self, namespace: &str) -> Vec<Arc<PortalService>> {
        self.indexes
            .services_by_namespace
            .get(namespace, &self.portal_services)
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// How a cache's kind is watched: which objects, and what is kept of each.
struct Watch<K> {
    kind: &'static str,
    config: watcher::Config,
    trim: fn(&mut K),
}

/// Declares the caches once: their fields, kinds, and how each is watched.
macro_rules! caches {
    ($( $field:ident: $kind:ty = $watch:ident($selector:ident, $trim:path) ),* $(,)?) => {
        /// The caches before their watches start: subscribe controllers, then [`Caches::run`].
        #[allow(missing_debug_implementations)] // holds writers and channels; nothing useful to print
        pub struct Caches {
            client: Client,
            metrics: Arc<Metrics>,
            undecodable: mpsc::UnboundedSender<Undecodable>,
            undecodable_rx: Mutex<Option<mpsc::UnboundedReceiver<Undecodable>>>,
            indexes: Indexes,
            $( $field: Cache<$kind>, )*
        }

        impl Caches {
            pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
                let (undecodable, undecodable_rx) = mpsc::unbounded_channel();
                let mut caches = Self {
                    client,
                    metrics,
                    undecodable,
                    undecodable_rx: Mutex::new(Some(undecodable_rx)),
                    indexes: Indexes::new(),
                    $( $field: Cache::new(), )*
                };
                caches.pods.indexes = vec![
                    caches.indexes.pods_by_service.clone(),
                    caches.indexes.pods_by_node.clone(),
                ];
                caches.portal_services.indexes = vec![caches.indexes.services_by_namespace.clone()];
                caches
            }

            pub fn stores(&self) -> Stores {
                Stores { $( $field: self.$field.store.clone(), )* indexes: self.indexes.clone() }
            }

            $(
                /// A subscription to this cache's changes.
                pub fn $field(&self) -> Changes<$kind> {
                    self.$field.subscribe(stringify!($field), self.metrics.clone())
                }
            )*

            /// Checks of every watch's health, to be polled by `/readyz`.
            pub fn health(&self) -> CacheHealth {
                CacheHealth {
                    watches: vec![ $( (stringify!($field), self.$field.health.clone()), )* ],
                }
            }

            /// Runs every watch until `shutdown`; returns early only if a watch ends by itself.
            pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
                let all = watch_config();
                let managed = watch_config().labels(&managed_selector());
                let Caches { client, metrics, undecodable, $( $field, )* .. } = self;
                let sink = Sink { client, metrics, undecodable };
                let watches: Vec<BoxFuture<'static, &'static str>> = vec![
                    $( $watch(
                        &sink,
                        $field,
                        Watch { kind: stringify!($field), config: $selector(&all, &managed), trim: $trim },
                    ), )*
                ];
                tokio::select! {
                    (ended, _, _) = futures::future::select_all(watches) => {
                        anyhow::bail!("the {ended} watch ended")
                    }
                    _ = shutdown.cancelled() => Ok(()),
                }
            }
        }

        impl Stores {
            /// Waits until every cache has received its first full list.
            pub async fn wait_until_ready(&self) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
                $( self.$field.wait_until_ready().await?; )*
                Ok(())
            }

            /// Objects per cache, for the metrics.
            pub fn sizes(&self) -> Vec<(&'static str, usize)> {
                vec![ $( (stringify!($field), self.$field.len()), )* ]
            }
        }
    };
}

fn all(all: &watcher::Config, _: &watcher::Config) -> watcher::Config {
    all.clone()
}

fn managed(_: &watcher::Config, managed: &watcher::Config) -> watcher::Config {
    managed.clone()
}

/// Namespaces bound to a baseline: every tenant namespace, and any an administrator bound by
/// hand.
fn bound(_: &watcher::Config, _: &watcher::Config) -> watcher::Config {
    watch_config().labels(crate::meta::BASELINE_LABEL)
}

/// How long one watch request lasts before it is renewed from its last resource version. The
/// watcher also gives up on a watch that stays silent this long (plus a margin), so a watch
/// that stalls, for instance across a control-plane restart, is renewed within about a minute
/// rather than the five of the default. It costs one watch request per cache a minute.
pub const WATCH_TIMEOUT_SECONDS: u32 = 60;

fn watch_config() -> watcher::Config {
    watcher::Config::default().timeout(WATCH_TIMEOUT_SECONDS)
}

caches!(
    sites: Site = guarded(all, strip),
    tenants: Tenant = guarded(all, strip),
    baselines: SecurityBaseline = guarded(all, strip),
    portal_services: PortalService = guarded(all, strip),
    nodes: CachedNode = plain(all, as_read),
    pods: CachedPod = plain(all, as_read),
    namespaces: PartialObjectMeta<Namespace> = plain(bound, strip),
    quotas: ResourceQuota = plain(managed, strip_quota),
    limit_ranges: PartialObjectMeta<LimitRange> = plain(managed, strip),
    role_bindings: PartialObjectMeta<RoleBinding> = plain(managed, strip),
    network_policies: PartialObjectMeta<NetworkPolicy> = plain(managed, strip),
    deployments: CachedWorkload<Deployment> = plain(all, as_read),
    statefulsets: CachedWorkload<StatefulSet> = plain(all, as_read),
    daemonsets: CachedWorkload<DaemonSet> = plain(all, as_read),
    replicasets: CachedWorkload<ReplicaSet> = plain(all, as_read),
    jobs: CachedWorkload<Job> = plain(all, as_read),
    cronjobs: CachedWorkload<CronJob> = plain(all, as_read),
    audited_policies: CachedNetworkPolicy = plain(all, as_read),
    services: PartialObjectMeta<Service> = plain(managed, strip),
    service_accounts: PartialObjectMeta<ServiceAccount> = plain(managed, strip),
    autoscalers: PartialObjectMeta<HorizontalPodAutoscaler> = plain(managed, strip),
    disruption_budgets: PartialObjectMeta<PodDisruptionBudget> = plain(managed, strip),
    ingresses: PartialObjectMeta<Ingress> = plain(managed, strip),
    admission_policies: ValidatingAdmissionPolicy = plain(managed, strip),
    policy_bindings: PartialObjectMeta<ValidatingAdmissionPolicyBinding> = plain(managed, strip),
);

/// The health of every watch, for `/readyz`.
#[derive(Debug, Clone)]
pub struct CacheHealth {
    watches: Vec<(&'static str, Arc<WatchHealth>)>,
}

impl CacheHealth {
    /// The caches whose watch has been failing for longer than `after`.
    pub fn stalled(&self, after: Duration) -> Vec<&'static str> {
        self.watches
            .iter()
            .filter(|(_, h)| h.stalled(after))
            .map(|(name, _)| *name)
            .collect()
    }
}

impl Caches {
    /// Objects of Verbund's kinds the types could not decode, as they are found (once).
    pub fn undecodable(&self) -> Option<mpsc::UnboundedReceiver<Undecodable>> {
        self.undecodable_rx.lock().ok()?.take()
    }
}

/// An object of `K` as the watch delivers it: decoded, or why not, naming the field (kube's
/// `DeserializeGuard` does the same without the path).
#[derive(Debug, Clone)]
struct Decoded<K>(Result<K, Box<InvalidObject>>);

impl<'de, K: DeserializeOwned + Resource> serde::Deserialize<'de> for Decoded<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => Ok(Decoded(Ok(object))),
            Err(error) => {
                let metadata = serde_json::from_value(value["metadata"].clone())
                    .map_err(serde::de::Error::custom)?;
                Ok(Decoded(Err(Box::new(InvalidObject {
                    error: format!("{}: {}", error.path(), error.inner()),
                    metadata,
                }))))
            }
        }
    }
}

impl<K: Resource> Resource for Decoded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        self.0.as_ref().map_or_else(|bad| &bad.metadata, K::meta)
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        self.0
            .as_mut()
            .map_or_else(|bad| &mut bad.metadata, K::meta_mut)
    }
}

/// What every watch shares.
struct Sink {
    client: Client,
    metrics: Arc<Metrics>,
    undecodable: mpsc::UnboundedSender<Undecodable>,
}

/// Watches a built-in kind: every object decodes.
fn plain<K>(sink: &Sink, cache: Cache<K>, watch: Watch<K>) -> BoxFuture<'static, &'static str>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<K> = Api::all(sink.client.clone());
    keep(api, cache, watch, sink, |raw: K| Ok(raw))
}

/// Watches one of Verbund's kinds, decoding each object on its own.
fn guarded<K>(sink: &Sink, cache: Cache<K>, watch: Watch<K>) -> BoxFuture<'static, &'static str>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<Decoded<K>> = Api::all(sink.client.clone());
    keep(api, cache, watch, sink, |raw: Decoded<K>| raw.0)
}

/// The reference of a (possibly undecodable) object in a cache of `K`.
fn reference_of<K: Resource<DynamicType = ()>, Raw: Resource>(raw: &Raw) -> ObjectRef<K> {
    ObjectRef::<K>::new(&raw.name_any()).within_opt(raw.namespace().as_deref())
}

/// Keeps one cache current from its watch: decode, trim, store, broadcast.
fn keep<Raw, K>(
    api: Api<Raw>,
    cache: Cache<K>,
    watch: Watch<K>,
    sink: &Sink,
    decode: fn(Raw) -> Result<K, Box<InvalidObject>>,
) -> BoxFuture<'static, &'static str>
where
    Raw: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    let Cache {
        store,
        mut writer,
        changes,
        health,
        indexes,
    } = cache;
    let Watch { kind, config, trim } = watch;
    let (metrics, undecodable) = (sink.metrics.clone(), sink.undecodable.clone());
    let mut invalid: HashMap<ObjectRef<K>, String> = HashMap::new();
    async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    metrics.cache_watch_errors.with_label_values(&[kind]).inc();
                    if health.failed() {
                        warn!(kind, %error, "watch failed; retrying with backoff");
                    }
                    continue;
                }
            };
            health.ok();
            // Decode each object; an undecodable one is reported, and its last good version
            // (if any) leaves the store, since it no longer says what is stored.
            let mut decoded = |raw: Raw| -> Result<K, ObjectRef<K>> {
                let reference = reference_of::<K, Raw>(&raw);
                match decode(raw) {
                    Ok(mut object) => {
                        invalid.remove(&reference);
                        trim(&mut object);
                        Ok(object)
                    }
                    Err(bad) => {
                        if invalid.get(&reference) != Some(&bad.error) {
                            warn!(kind, object = %reference, error = %bad.error, "cannot decode; skipped");
                            let _ = undecodable.send(Undecodable {
                                reference: ObjectReference {
                                    api_version: Some(K::api_version(&()).into_owned()),
                                    kind: Some(K::kind(&()).into_owned()),
                                    name: bad.metadata.name.clone(),
                                    namespace: bad.metadata.namespace.clone(),
                                    uid: bad.metadata.uid.clone(),
                                    ..Default::default()
                                },
                                error: bad.error.clone(),
                            });
                            invalid.insert(reference.clone(), bad.error.clone());
                        }
                        Err(reference)
                    }
                }
            };
            let event = match event {
                watcher::Event::Apply(raw) => match decoded(raw) {
                    Ok(object) => Some(watcher::Event::Apply(object)),
                    Err(reference) => store
                        .get(&reference)
                        .map(|stale| watcher::Event::Delete((*stale).clone())),
                },
                watcher::Event::InitApply(raw) => match decoded(raw) {
                    Ok(object) => Some(watcher::Event::InitApply(object)),
                    Err(_) => None,
                },
                watcher::Event::Delete(raw) => {
                    let reference = reference_of::<K, Raw>(&raw);
                    invalid.remove(&reference);
                    store
                        .get(&reference)
                        .map(|stored| watcher::Event::Delete((*stored).clone()))
                }
                watcher::Event::Init => Some(watcher::Event::Init),
                watcher::Event::InitDone => Some(watcher::Event::InitDone),
            };
            metrics
                .invalid_objects
                .with_label_values(&[kind])
                .set(invalid.len() as i64);
            let Some(event) = event else { continue };
            // A relist replaces the store at once: what was there before and is gone now was
            // deleted while the watch was away, and its deletion is told below like any other.
            let before_relist = matches!(event, watcher::Event::InitDone).then(|| store.state());
            writer.apply_watcher_event(&event);
            metrics
                .cache_objects
                .with_label_values(&[kind])
                .set(store.len() as i64);
            // Tell the subscribers. Nobody listening is fine; a full buffer drops the oldest
            // change and the slow subscriber resyncs.
            match event {
                watcher::Event::Apply(object) => {
                    for index in &indexes {
                        index.applied(&object);
                    }
                    let current = store.get(&ObjectRef::from_obj(&object));
                    let _ = changes.send(Change {
                        object: current.unwrap_or_else(|| Arc::new(object)),
                        deleted: false,
                    });
                }
                watcher::Event::Delete(object) => {
                    for index in &indexes {
                        index.deleted(&object);
                    }
                    let _ = changes.send(Change {
                        object: Arc::new(object),
                        deleted: true,
                    });
                }
                watcher::Event::InitDone => {
                    info!(kind, objects = store.len(), "cache synced");
                    let objects = store.state();
                    for index in &indexes {
                        index.rebuild(&objects);
                    }
                    for gone in before_relist.unwrap_or_default() {
                        if store.get(&ObjectRef::from_obj(&*gone)).is_none() {
                            let _ = changes.send(Change {
                                object: gone,
                                deleted: true,
                            });
                        }
                    }
                    for object in objects {
                        let _ = changes.send(Change {
                            object,
                            deleted: false,
                        });
                    }
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
        }
        kind
    }
    .boxed()
}

/// `ObjectRef::within` for an optional namespace.
trait WithinOpt {
    fn within_opt(self, namespace: Option<&str>) -> Self;
}

impl<K: Resource> WithinOpt for ObjectRef<K> {
    fn within_opt(self, namespace: Option<&str>) -> Self {
        match namespace {
            Some(ns) => self.within(ns),
            None => self,
        }
    }
}

/// Managed fields down to what drift detection reads, and only Verbund's own annotations.
fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    strip_managed_fields(meta);
    keep_own_annotations(meta);
}

/// A quota as the tenant and service controllers read it: its hard and used amounts of the
/// pool's resources (`domain::resources`); the object counts Verbund also sets, and the status'
/// copy of the hard amounts, are left out (most of a quota's size).
fn strip_quota(quota: &mut ResourceQuota) {
    strip(quota);
    let pool_keys = |map: &mut Option<BTreeMap<String, Quantity>>| {
        if let Some(map) = map.as_mut() {
            map.retain(|key, _| PoolResource::ALL.iter().any(|r| r.quota_key() == key));
        }
    };
    if let Some(spec) = quota.spec.as_mut() {
        pool_keys(&mut spec.hard);
    }
    if let Some(status) = quota.status.as_mut() {
        status.hard = None;
        pool_keys(&mut status.used);
    }
}

/// Pods, nodes, workloads and the audit's network policies are read down to what Verbund uses
/// as they are decoded (`domain::projections`, `baseline::workload`): nothing more to trim.
fn as_read<K>(_: &mut K) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_quota_keeps_the_pool_resources_and_its_share() {
        let mut quota: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "verbund-quota", "namespace": "a",
                "annotations": { "verbund.saarland.de/tenant-share": "cpu=4",
                                 "note": "x".repeat(100) } },
            "spec": { "hard": { "requests.cpu": "4", "requests.memory": "8Gi", "pods": "10",
                                "count/configmaps": "50" } },
            "status": { "hard": { "requests.cpu": "4" },
                        "used": { "requests.cpu": "1", "pods": "2", "count/configmaps": "3" } }
        }))
        .expect("a quota");
        strip_quota(&mut quota);
        let keys = |m: Option<&BTreeMap<String, Quantity>>| {
            m.map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let spec = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
        assert_eq!(keys(spec), ["pods", "requests.cpu", "requests.memory"]);
        let status = quota.status.as_ref().expect("status");
        assert_eq!(status.hard, None);
        assert_eq!(keys(status.used.as_ref()), ["pods", "requests.cpu"]);
        assert_eq!(
            quota.annotations().keys().collect::<Vec<_>>(),
            ["verbund.saarland.de/tenant-share"]
        );
    }

    #[test]
    fn an_undecodable_object_keeps_its_metadata_and_says_which_field() {
        let bad: Decoded<Site> = serde_json::from_value(serde_json::json!({
            "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
            "metadata": { "name": "rz-kaputt", "uid": "u1" },
            "spec": { "displayName": 42, "operatedBy": { "kind": "State", "name": "x" } }
        }))
        .expect("a guard always decodes");
        let invalid = bad.0.expect_err("not a Site");
        assert_eq!(invalid.metadata.name.as_deref(), Some("rz-kaputt"));
        assert!(
            invalid.error.starts_with("spec.displayName: "),
            "{}",
            invalid.error
        );
        let good: Decoded<Site> = serde_json::from_value(serde_json::json!({
            "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
            "metadata": { "name": "rz-gut" },
            "spec": { "displayName": "RZ", "operatedBy": { "kind": "State", "name": "x" } }
        }))
        .expect("decodes");
        assert!(good.0.is_ok());
    }
}
