//! The admin HTTP server: `/livez`, `/readyz` and `/metrics` for the kubelet and Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::cache::{CacheHealth, STALL_AFTER};
use crate::metrics::Metrics;

/// What `/readyz` reports: ready once every cache has synced, as long as no watch has been
/// failing for longer than `cache::STALL_AFTER`, and no longer once shutdown starts.
#[derive(Debug)]
pub struct Health {
    synced: AtomicBool,
    shutting_down: AtomicBool,
    caches: CacheHealth,
}

impl Health {
    pub fn new(caches: CacheHealth) -> Self {
        Self {
            synced: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            caches,
        }
    }

    /// Called once every watch the operator depends on has delivered its first full list.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Called when the shutdown signal arrives, so load balancers stop sending traffic first.
    pub fn mark_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Why the operator cannot serve now; None when it can.
    pub fn not_ready(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Some("shutting down".into());
        }
        if !self.synced.load(Ordering::SeqCst) {
            return Some("caches not synced yet".into());
        }
        let stalled = self.caches.stalled(STALL_AFTER);
        (!stalled.is_empty()).then(|| format!("watches failing: {}", stalled.join(", ")))
    }
}

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { health, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds the admin address; separate from [`serve`] so callers learn the port before serving.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.health.not_ready() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
