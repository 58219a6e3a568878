//! The controllers, one folder per kind, and what they share: the context, the writer, the
//! errors and their policy.
//!
//! Each controller's `reconcile` only sequences its stages, one module each:
//! `read` (from the caches) -> `validate` -> `build` (desired objects, pure) -> `apply` (through
//! the [`Writer`], only what changed) -> `status` (pure: inputs and `now` in, status out;
//! written only when it changed). `mod.rs` wires the controller: what triggers a reconcile.

pub mod apply;
pub mod baseline;
pub mod error;
pub mod portal_service;
pub mod site;
pub mod status;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use tracing::{error, warn};

pub use self::apply::Writer;
pub use self::error::Error;
use self::error::{Backoff, Class};
use self::status::Pacer;
use crate::cache::Stores;
use crate::metrics::Metrics;

/// Settings that are the pool's, not any one object's.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of the portal gateway (ingress controller), allowed to reach tenant pods.
    pub gateway_namespace: String,
    /// How long after a successful reconcile an object is reconciled again anyway.
    pub resync: Duration,
    /// When a site without Ready nodes fails over, and when it is used again.
    pub failover: site::status::Failover,
}

impl Settings {
    /// When to come back after a successful reconcile: the resync interval, less up to a
    /// tenth at random, so that objects created together do not all come back together.
    pub fn next_resync(&self) -> Action {
        Action::requeue(self.resync.mul_f64(1.0 - 0.1 * fastrand::f64()))
    }
}

/// Everything a reconcile needs, shared by all controllers.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Failed attempts per object, for the backoff.
    pub backoff: Backoff,
    /// When each object's status was last written, for pacing figure-only updates.
    pub pacer: Pacer,
}

impl Context {
    /// The context of one controller: the same client, caches and metrics, its own field
    /// manager, backoff and pacing.
    pub fn for_controller(&self, manager: &'static str) -> Context {
        Context {
            client: self.client.clone(),
            stores: self.stores.clone(),
            writer: self.writer.managed_as(manager),
            metrics: self.metrics.clone(),
            settings: self.settings.clone(),
            backoff: Backoff::default(),
            pacer: Pacer::default(),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The key of an object in the backoff table: controller, namespace and name.
fn backoff_key<K: Resource>(controller: &str, object: &K) -> String {
    format!(
        "{controller}/{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.name_any()
    )
}

/// Runs one reconcile of `controller` with its timer, and forgets the object's failures when
/// it succeeds.
pub async fn reconciled<K: Resource>(
    controller: &'static str,
    object: &K,
    ctx: &Context,
    work: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[controller])
        .start_timer();
    ctx.metrics
        .reconciles
        .with_label_values(&[controller])
        .inc();
    let in_flight = ctx
        .metrics
        .reconciles_in_flight
        .with_label_values(&[controller]);
    in_flight.inc();
    let result = work.await;
    in_flight.dec();
    if result.is_ok() {
        ctx.backoff.succeeded(&backoff_key(controller, object));
    }
    result
}

/// What a controller does after an error (see `error`): count it, log it, and wait for a
/// change or retry with per-object backoff.
pub fn error_policy<K: Resource>(
    controller: &'static str,
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let category = error.category();
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[controller, category])
        .inc();
    let key = backoff_key(controller, &*object);
    let attempt = ctx.backoff.failed(&key);
    let class = error.class();
    match class {
        Class::Internal => {
            error!(controller, object = %key, category, attempt, "internal error (a bug in Verbund): {error}")
        }
        _ => warn!(controller, object = %key, category, attempt, "{error}"),
    }
    match error::retry_after_error(class, attempt, error.retry_after(), fastrand::f64()) {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    }
}
