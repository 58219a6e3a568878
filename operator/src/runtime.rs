//! `verbund-operator run`: one client, one metrics registry, one shutdown signal, every task
//! joined. Controllers attach here as they are built.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin::{self, Health};
use crate::metrics::Metrics;

/// Settings of a running operator.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address of the admin server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "VERBUND_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
}

/// Runs the operator until `shutdown` is cancelled or a task fails.
pub async fn run(client: Client, args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    info!(server = %version.git_version, "connected to the API server");

    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let health = Arc::new(Health::default());
    let listener = admin::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_addr))?;
    info!(addr = %args.admin_addr, "admin server listening");

    let admin = admin::serve(listener, health.clone(), metrics, shutdown.clone());
    // No watches yet: the operator is ready as soon as it has reached the API server.
    health.mark_synced();

    let stop = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health.mark_shutting_down();
            info!("shutting down");
            Ok::<_, anyhow::Error>(())
        }
    };
    tokio::try_join!(async { admin.await.context("admin server failed") }, stop)?;
    info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM (the kubelet) or SIGINT (Ctrl-C).
pub fn cancel_on_signal(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("received SIGTERM"),
            _ = int.recv() => info!("received SIGINT"),
        }
        shutdown.cancel();
    });
    Ok(())
}
