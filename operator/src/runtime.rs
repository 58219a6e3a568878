//! `verbund-operator run`: one client, one set of shared caches, one event recorder, one
//! metrics registry and one shutdown signal for every task; all tasks joined.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin::{self, Health};
use crate::cache::Caches;
use crate::controller::tenant::build::PoolSettings;
use crate::controller::{self, Context};
use crate::meta;
use crate::metrics::Metrics;

/// Settings of a running operator.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address of the admin server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "VERBUND_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// Namespace of the portal gateway (ingress controller); tenant pods accept traffic from it.
    #[arg(
        long,
        env = "VERBUND_GATEWAY_NAMESPACE",
        default_value = "verbund-gateway"
    )]
    pub gateway_namespace: String,
    /// Name of this instance in Events (the pod name when run in the cluster).
    #[arg(long, env = "POD_NAME", default_value = "verbund-operator")]
    pub instance: String,
}

impl RunArgs {
    /// Defaults for an operator started in-process (tests), with the admin server on `admin_addr`.
    pub fn local(admin_addr: SocketAddr) -> Self {
        Self {
            admin_addr,
            gateway_namespace: "verbund-gateway".into(),
            instance: "verbund-operator".into(),
        }
    }
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
    let admin = admin::serve(listener, health.clone(), metrics.clone(), shutdown.clone());

    ensure_tenant_admin_role(&client, &metrics).await?;

    let caches = Caches::new(client.clone());
    let reporter = Reporter {
        controller: "verbund-operator".into(),
        instance: Some(args.instance.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: caches.stores(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        settings: PoolSettings {
            gateway_namespace: args.gateway_namespace.clone(),
        },
    });
    let sites = controller::site::run(ctx.clone(), &caches, shutdown.clone());
    let tenants = controller::tenant::run(ctx.clone(), &caches, shutdown.clone());
    let services = controller::portal_service::run(ctx.clone(), &caches, shutdown.clone());
    let baselines = controller::baseline::run(ctx.clone(), &caches, shutdown.clone());
    let stores = ctx.stores.clone();
    let watches = caches.run(shutdown.clone());

    let ready = {
        let health = health.clone();
        async move {
            match stores.wait_until_ready().await {
                Ok(()) => {
                    info!("caches synced; ready");
                    health.mark_synced();
                }
                Err(error) => tracing::warn!(%error, "caches never synced"),
            }
        }
    };
    let stop = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health.mark_shutting_down();
            info!("shutting down");
        }
    };
    let (admin_result, (), (), (), (), (), (), ()) = tokio::join!(
        admin, watches, sites, tenants, services, baselines, ready, stop
    );
    admin_result.context("admin server failed")?;
    info!("stopped");
    Ok(())
}

/// Applies the `verbund-tenant-admin` ClusterRole when it is missing or not as Verbund defines it.
async fn ensure_tenant_admin_role(client: &Client, metrics: &Metrics) -> anyhow::Result<()> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let mut role = controller::tenant::rbac::tenant_admin_role();
    let hash = meta::stamp(&mut role);
    let stored = api
        .get_opt(&role.name_any())
        .await
        .context("cannot read ClusterRole verbund-tenant-admin")?;
    if meta::needs_apply(&hash, stored.as_ref().map(|r| &r.metadata)) {
        metrics
            .api_writes
            .with_label_values(&["ClusterRole", "apply"])
            .inc();
        api.patch(
            &role.name_any(),
            &kube::api::PatchParams::apply(meta::FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(&role),
        )
        .await
        .context("cannot apply ClusterRole verbund-tenant-admin")?;
    }
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
