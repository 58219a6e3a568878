//! Every write Verbund makes goes through the [`Writer`]: server-side apply with Verbund's field
//! manager (forcing back fields someone else took), only when something changed, counted in
//! `verbund_api_writes_total` by kind and verb. A reconcile that finds nothing to change sends
//! no request at all (see `meta` for how "changed" is decided).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::error::{ApiError, StatusError};
use crate::meta::{self, FIELD_MANAGER};
use crate::metrics::Metrics;

/// A kind Verbund writes.
pub trait Writable:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync
{
}

impl<K> Writable for K where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync
{
}

/// The one way to the API server for writes.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// The field manager of this writer's applies: one per controller (`meta::managers`).
    manager: &'static str,
    /// What Verbund's last apply of each object (by uid) left: until someone else writes the
    /// object itself, applying again would only repeat a no-op (see `known_unchanged`).
    unchanged_by_apply: Arc<Mutex<HashMap<String, LastApply>>>,
}

/// An object as Verbund's last apply left it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LastApply {
    version: String,
    generation: Option<i64>,
    main_writes: Vec<(String, String)>,
}

impl Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// What `namespace/name` (or `name`) a message should show.
fn object_name<K: Resource>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", object.name_any()),
        None => object.name_any(),
    }
}

impl Writer {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            recorder,
            metrics,
            manager: FIELD_MANAGER,
            unchanged_by_apply: Arc::default(),
        }
    }

    /// The same writer, applying as `manager`.
    pub fn managed_as(&self, manager: &'static str) -> Self {
        Self {
            manager,
            ..self.clone()
        }
    }

    /// The field manager this writer applies as.
    pub fn manager(&self) -> &'static str {
        self.manager
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn count(&self, kind: &str, verb: &str) {
        self.metrics
            .api_writes
            .with_label_values(&[kind, verb])
            .inc();
    }

    /// Server-side apply of `object` through `api` (its kind, in its namespace), unconditionally.
    pub async fn apply<K: Writable>(&self, api: &Api<K>, object: &K) -> Result<K, ApiError> {
        let kind = K::kind(&());
        self.count(&kind, "apply");
        api.patch(
            &object.name_any(),
            &PatchParams::apply(self.manager).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(ApiError::with(format!(
            "apply {kind} {}",
            object_name(object)
        )))
    }

    /// Applies `object` when it differs from `stored` (the metadata of what the API server
    /// holds; None: it does not exist) or someone else wrote it since. Returns what the API
    /// server made of it when it wrote.
    pub async fn apply_if_changed<K: Writable>(
        &self,
        api: &Api<K>,
        object: K,
        stored: Option<&ObjectMeta>,
    ) -> Result<Option<K>, ApiError> {
        self.apply_if_changed_with(api, object, stored, |_| {})
            .await
    }

    /// Like [`Writer::apply_if_changed`]; `finish` sets fields that are not part of the desired
    /// state's hash (a replica count the autoscaler owns), just before the write.
    pub async fn apply_if_changed_with<K: Writable>(
        &self,
        api: &Api<K>,
        mut object: K,
        stored: Option<&ObjectMeta>,
        finish: impl FnOnce(&mut K),
    ) -> Result<Option<K>, ApiError> {
        // The caches hold only what Verbund labelled: a child absent from them may still
        // exist, made by someone else. Look before the first apply, never over it.
        let fetched = match stored {
            None if meta::controller_of(object.meta()).is_some() => api
                .get_opt(&object.name_any())
                .await
                .map_err(ApiError::with(format!(
                    "read {} {}",
                    K::kind(&()),
                    object_name(&object)
                )))?,
            _ => None,
        };
        let stored = stored.or(fetched.as_ref().map(|f| f.meta()));
        if let Some(owner) = stored.and_then(|s| meta::foreign_controller(object.meta(), s)) {
            return Err(name_conflict::<K>(&object, &owner));
        }
        let hash = meta::stamp(&mut object);
        if !meta::needs_apply(&hash, stored, self.manager) || self.known_unchanged(&hash, stored) {
            return Ok(None);
        }
        finish(&mut object);
        let applied = self.apply(api, &object).await?;
        self.remember(applied.meta());
        Ok(Some(applied))
    }

    /// True when nobody has written `stored` itself since Verbund's last apply left it so:
    /// the same resource version, or (for kinds with a generation) the same generation and no
    /// other manager's write to the object itself since (status writes, which bump only the
    /// resource version, do not count). Applying again would only repeat a no-op.
    fn known_unchanged(&self, desired_hash: &str, stored: Option<&ObjectMeta>) -> bool {
        let Some(stored) = stored else { return false };
        if meta::stored_hash(stored) != Some(desired_hash) {
            return false;
        }
        let Some(uid) = stored.uid.as_ref() else {
            return false;
        };
        let Ok(known) = self.unchanged_by_apply.lock() else {
            return false;
        };
        let Some(last) = known.get(uid) else {
            return false;
        };
        stored.resource_version.as_ref() == Some(&last.version)
            || (stored.generation.is_some()
                && stored.generation == last.generation
                && meta::main_writes(stored) == last.main_writes)
    }

    /// Remembers what Verbund's apply left.
    fn remember(&self, applied: &ObjectMeta) {
        let Ok(mut known) = self.unchanged_by_apply.lock() else {
            return;
        };
        if let (Some(uid), Some(version)) = (&applied.uid, &applied.resource_version) {
            known.insert(
                uid.clone(),
                LastApply {
                    version: version.clone(),
                    generation: applied.generation,
                    main_writes: meta::main_writes(applied),
                },
            );
        }
    }

    /// [`Writer::apply_if_changed`] for a kind known only at run time (PolicyReports).
    pub async fn apply_dynamic_if_changed(
        &self,
        api: &Api<DynamicObject>,
        mut object: DynamicObject,
        stored: Option<&ObjectMeta>,
    ) -> Result<Option<DynamicObject>, ApiError> {
        let hash = meta::stamp(&mut object);
        if !meta::needs_apply(&hash, stored, self.manager) {
            return Ok(None);
        }
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        self.count(&kind, "apply");
        api.patch(
            &object.name_any(),
            &PatchParams::apply(self.manager).force(),
            &Patch::Apply(&object),
        )
        .await
        .map(Some)
        .map_err(ApiError::with(format!(
            "apply {kind} {}",
            object_name(&object)
        )))
    }

    /// Server-side apply of `K`'s status; the object's `resourceVersion` after it.
    pub async fn apply_status<K: Writable, S: Serialize>(
        &self,
        api: &Api<K>,
        object: &K,
        status: &S,
    ) -> Result<Option<String>, StatusError> {
        let kind = K::kind(&());
        let name = object.name_any();
        let status = serde_json::to_value(status).map_err(|e| StatusError::Encoding {
            kind: kind.to_string(),
            name: name.clone(),
            message: e.to_string(),
        })?;
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": kind,
            "status": status,
        });
        self.count(&kind, "status");
        api.patch_status(
            &name,
            &PatchParams::apply(self.manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|written| written.resource_version())
        .map_err(|e| {
            ApiError::new(
                format!("update status of {kind} {}", object_name(object)),
                e,
            )
        })
        .map_err(StatusError::from)
    }

    /// Deletes `name` through `api` if it exists.
    pub async fn delete<K: Writable>(&self, api: &Api<K>, name: &str) -> Result<(), ApiError> {
        let kind = K::kind(&());
        self.count(&kind, "delete");
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(ApiError::new(format!("delete {kind} {name}"), e)),
        }
    }

    /// Publishes an Event about `reference` (Warning for problems someone should act on).
    /// Events are best effort: a failure is logged, never fails the reconcile.
    pub async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        event: Event,
    ) {
        self.count("Event", "create");
        if let Err(error) = self.recorder.publish(&event, reference).await {
            warn!(%error, "cannot publish event");
        }
    }

    /// Publishes an Event about one of Verbund's objects.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.publish(&object.object_ref(&()), event).await;
    }
}

/// The error for a child whose name is taken by an object Verbund does not control: a
/// conflict (409) with the reason `NameConflict`, retried with backoff in case it goes away.
fn name_conflict<K: Writable>(object: &K, owner: &str) -> ApiError {
    let kind = K::kind(&());
    let name = object_name(object);
    let status = kube::core::Status::failure(
        &format!(
            "{kind} {name} already exists and belongs to {owner}, not to Verbund: Verbund does not apply over it; rename this object or remove the other one"
        ),
        NAME_CONFLICT,
    )
    .with_code(409);
    ApiError::new(
        format!("apply {kind} {name}"),
        kube::Error::Api(Box::new(status)),
    )
}

/// The reason of a [`name_conflict`].
pub const NAME_CONFLICT: &str = "NameConflict";

/// Applies a namespaced `object` when it differs from what `store` caches under its name (or
/// someone else changed it).
pub async fn apply_cached<K, S>(
    writer: &Writer,
    store: &Store<S>,
    object: K,
) -> Result<Option<K>, ApiError>
where
    K: Writable + Resource<Scope = NamespaceResourceScope>,
    S: Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = object.namespace().unwrap_or_default();
    let stored = cached(store, &namespace, &object.name_any());
    let api = Api::namespaced(writer.client.clone(), &namespace);
    writer
        .apply_if_changed(&api, object, stored.as_ref().map(|s| s.meta()))
        .await
}

/// Applies a cluster-scoped `object` when it differs from what `store` caches under its name
/// (or someone else changed it).
pub async fn apply_cached_cluster<K, S>(
    writer: &Writer,
    store: &Store<S>,
    object: K,
) -> Result<Option<K>, ApiError>
where
    K: Writable + Resource<Scope = ClusterResourceScope>,
    S: Resource<DynamicType = ()> + Clone + 'static,
{
    let stored = store.get(&ObjectRef::new(&object.name_any()));
    let api = Api::all(writer.client.clone());
    writer
        .apply_if_changed(&api, object, stored.as_ref().map(|s| s.meta()))
        .await
}

/// The cached object `name` in `namespace` (None: not cached, so absent).
pub fn cached<S>(store: &Store<S>, namespace: &str, name: &str) -> Option<Arc<S>>
where
    S: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}
