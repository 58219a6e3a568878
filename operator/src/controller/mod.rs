//! The controllers, one per kind, and what they share: the context, writes by server-side
//! apply, errors and their policy.
//!
//! Each `reconcile` only sequences named stages: read (caches) -> validate (pure) -> build
//! (pure) -> apply (server-side apply, only what changed) -> status (only if changed).

pub mod baseline;
pub mod portal_service;
pub mod site;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::cache::Stores;
use crate::meta::{FIELD_MANAGER, MissingOwner};
use crate::metrics::Metrics;

/// Everything a reconcile needs, shared by all controllers.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: tenant::build::PoolSettings,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why a reconcile failed. `reason()` is the stable category used as metric label, Event
/// reason and condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot work as it is; waiting for someone to change it.
    #[error("{message}")]
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// The API server refused or failed a request; retried with backoff.
    #[error("{action}: {source}")]
    Api { action: String, source: kube::Error },
    #[error(transparent)]
    MissingOwner(#[from] MissingOwner),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid { reason, .. } => reason,
            Error::Api { .. } => "ApiError",
            Error::MissingOwner(_) => "MissingOwner",
            Error::Finalizer(_) => "FinalizerFailed",
        }
    }

    /// Shorthand for mapping a kube error with what was being done.
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Api { action, source }
    }
}

/// What a controller does after an error: an invalid spec waits for a change (its condition
/// and Warning event say why); anything else is retried.
pub fn error_policy<K: Resource>(
    controller: &'static str,
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[controller, error.reason()])
        .inc();
    warn!(controller, object = %object.meta().name.as_deref().unwrap_or_default(), reason = error.reason(), "{error}");
    match error {
        Error::Invalid { .. } => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// Server-side apply of `object` with Verbund's field manager (forcing ownership back from
/// anyone who changed a field Verbund manages), counted in the write metrics.
pub async fn apply<K>(ctx: &Context, api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.name_any();
    let kind = K::kind(&Default::default()).into_owned();
    ctx.metrics
        .api_writes
        .with_label_values(&[&kind, "apply"])
        .inc();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(Error::api(format!("apply {kind} {name}")))
}

/// Server-side apply of a status, with the same field manager.
pub async fn apply_status<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let dt = Default::default();
    let kind = K::kind(&dt).into_owned();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&dt),
        "kind": kind,
        "status": status,
    });
    ctx.metrics
        .api_writes
        .with_label_values(&[&kind, "status"])
        .inc();
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(Error::api(format!("update status of {kind} {name}")))
}

/// Deletes a namespaced object if it exists.
pub async fn delete_namespaced<K>(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).into_owned();
    ctx.metrics
        .api_writes
        .with_label_values(&[&kind, "delete"])
        .inc();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::api(format!("delete {kind} {namespace}/{name}"))(e)),
    }
}

/// Publishes an Event on `object` (Warning for problems an operator should act on).
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
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
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(%error, "cannot publish event");
    }
}
