//! `verbund-operator run`: one client, one set of shared caches, one event recorder, one
//! metrics registry and one shutdown signal for every task; all tasks joined.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use anyhow::Context as _;
use k8s_openapi::ClusterResourceScope;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin::{self, Health};
use crate::cache::{Caches, Undecodable};
use crate::catalog::{self, CatalogArgs};
use crate::controller::site::status::Failover;
use crate::controller::{self, Context, Settings, Writer};
use crate::leader::{self, Leadership, LeaseArgs};
use crate::meta::managers;
use crate::metrics::Metrics;
use crate::pool_metrics::PoolMetrics;

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
    /// Seconds after which every object is reconciled again although nothing changed
    /// (jittered by up to a tenth, so objects do not all come back at once).
    #[arg(long, env = "VERBUND_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// Seconds a site may have no Ready node before it fails over: excluded from placement,
    /// its services move to the other eligible sites.
    #[arg(long, env = "VERBUND_SITE_FAILURE_GRACE_SECONDS", default_value_t = 60)]
    pub site_failure_grace_seconds: u64,
    /// Seconds a failed site's nodes must be Ready again before it takes placements again.
    #[arg(long, env = "VERBUND_SITE_RECOVERY_SECONDS", default_value_t = 120)]
    pub site_recovery_seconds: u64,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

impl RunArgs {
    /// Defaults for an operator started in-process (tests), with the admin server on `admin_addr`.
    pub fn local(admin_addr: SocketAddr) -> Self {
        Self {
            admin_addr,
            gateway_namespace: "verbund-gateway".into(),
            instance: "verbund-operator".into(),
            resync_seconds: 600,
            site_failure_grace_seconds: 60,
            site_recovery_seconds: 120,
            lease: LeaseArgs::single(),
            catalog: CatalogArgs::local(([127, 0, 0, 1], 0).into()),
        }
    }
}

/// A task of the running operator, by name.
struct Task<'a> {
    name: &'static str,
    /// Whether it may finish before shutdown (a one-off), or must run until then.
    one_off: bool,
    work: BoxFuture<'a, anyhow::Result<()>>,
}

impl<'a> Task<'a> {
    fn until_shutdown(
        name: &'static str,
        work: impl Future<Output = anyhow::Result<()>> + Send + 'a,
    ) -> Self {
        Self {
            name,
            one_off: false,
            work: work.boxed(),
        }
    }

    fn one_off(
        name: &'static str,
        work: impl Future<Output = anyhow::Result<()>> + Send + 'a,
    ) -> Self {
        Self {
            name,
            one_off: true,
            work: work.boxed(),
        }
    }
}

/// How long the tasks get to finish what they are doing once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the operator until `shutdown` is cancelled or a task fails. Any task that ends before
/// shutdown (a controller, a cache, the admin server) ends the operator with an error, so that
/// a half-dead process never looks alive.
pub async fn run(client: Client, args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    info!(server = %version.git_version, "connected to the API server");

    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let caches = Caches::new(client.clone(), metrics.clone());
    metrics
        .register(Box::new(PoolMetrics::new(
            caches.stores(),
            metrics.leader.clone(),
        )))
        .context("cannot register the pool's metrics")?;
    let health = Arc::new(Health::new(caches.health()));
    let listener = admin::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_addr))?;
    info!(addr = %args.admin_addr, "admin server listening");
    let admin = admin::serve(listener, health.clone(), metrics.clone(), shutdown.clone());
    let catalog_listener = tokio::net::TcpListener::bind(args.catalog.catalog_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.catalog.catalog_addr))?;
    let directory_listener = tokio::net::TcpListener::bind(args.catalog.directory_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.catalog.directory_addr))?;

    let reporter = Reporter {
        controller: "verbund-operator".into(),
        instance: Some(args.instance.clone()),
    };
    let writer = Writer::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        metrics.clone(),
    );
    // Followers keep their caches warm and serve /metrics and /readyz; only the leader writes.
    let leadership = Leadership::join(client.clone(), &args.lease, &args.instance).await?;

    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: caches.stores(),
        writer: writer.clone(),
        metrics: metrics.clone(),
        settings: Settings {
            gateway_namespace: args.gateway_namespace.clone(),
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            failover: Failover {
                grace: Duration::from_secs(args.site_failure_grace_seconds),
                recovery: Duration::from_secs(args.site_recovery_seconds),
            },
        },
        backoff: Default::default(),
        pacer: Default::default(),
    });
    let undecodable = caches.undecodable();

    // The controllers subscribe now and start once every cache they read has synced, so that
    // none of them acts on a partial picture (an empty pod cache, a missing namespace), and
    // once this replica leads.
    let synced = CancellationToken::new();
    let leading = CancellationToken::new();
    let gated = |controller: BoxFuture<'static, ()>| {
        let (leading, shutdown) = (leading.clone(), shutdown.clone());
        async move {
            tokio::select! {
                _ = leading.cancelled() => controller.await,
                _ = shutdown.cancelled() => {}
            }
            Ok(())
        }
    };
    let of = |manager| Arc::new(ctx.for_controller(manager));
    let sites = gated(controller::site::run(of(managers::SITE), &caches, shutdown.clone()).boxed());
    let tenants =
        gated(controller::tenant::run(of(managers::TENANT), &caches, shutdown.clone()).boxed());
    let services = gated(
        controller::portal_service::run(of(managers::PORTAL_SERVICE), &caches, shutdown.clone())
            .boxed(),
    );
    let baselines =
        gated(controller::baseline::run(of(managers::BASELINE), &caches, shutdown.clone()).boxed());
    let stores = ctx.stores.clone();

    // The catalogue: every replica serves it from its caches, leading or not.
    let book = Arc::new(catalog::Book::new(
        u64::try_from(k8s_openapi::jiff::Timestamp::now().as_microsecond()).unwrap_or_default(),
    ));
    let catalog_synced = CancellationToken::new();
    let catalog_feed = catalog::feed::run(
        book.clone(),
        metrics.catalog_services.clone(),
        stores.clone(),
        caches.portal_services().all(),
        synced.clone(),
        {
            let synced = catalog_synced.clone();
            async move { synced.cancel() }
        },
        shutdown.clone(),
    );
    let directory_page = catalog::page::serve(
        directory_listener,
        book.clone(),
        catalog_synced.clone(),
        shutdown.clone(),
    );
    let catalog_server = catalog::serve(
        catalog_listener,
        args.catalog.clone(),
        book,
        stores.clone(),
        metrics.clone(),
        catalog_synced,
        shutdown.clone(),
    );

    let tasks = vec![
        Task::until_shutdown("admin server", async move {
            admin.await.context("admin server failed")
        }),
        Task::until_shutdown("caches", caches.run(shutdown.clone())),
        Task::until_shutdown("catalogue feed", catalog_feed),
        Task::until_shutdown("catalogue server", catalog_server),
        Task::until_shutdown("directory page", directory_page),
        Task::until_shutdown("site controller", sites),
        Task::until_shutdown("tenant controller", tenants),
        Task::until_shutdown("portal service controller", services),
        Task::until_shutdown("baseline controller", baselines),
        Task::one_off("cache sync", {
            let (health, synced) = (health.clone(), synced.clone());
            async move {
                stores
                    .wait_until_ready()
                    .await
                    .map_err(|e| anyhow::anyhow!("caches never synced: {e}"))?;
                info!("caches synced; ready");
                health.mark_synced();
                synced.cancel();
                Ok(())
            }
        }),
        Task::until_shutdown(
            "leader election",
            lead(
                leadership.watcher(),
                Gates {
                    synced,
                    leading: leading.clone(),
                    shutdown: shutdown.clone(),
                },
                client.clone(),
                writer.clone(),
                metrics,
            ),
        ),
        Task::one_off(
            "undecodable objects",
            gated(report_undecodable(undecodable, writer).map(|_| ()).boxed()),
        ),
        Task::one_off("shutdown", {
            let (health, shutdown) = (health.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                health.mark_shutting_down();
                info!("shutting down");
                Ok(())
            }
        }),
    ];
    let result = supervise(tasks, &shutdown).await;
    // Nothing writes any more: hand the lease over at once rather than let it expire.
    leadership.release().await;
    info!("stopped");
    result
}

/// The start-up points of a replica: caches synced, leading, shutting down.
struct Gates {
    synced: CancellationToken,
    leading: CancellationToken,
    shutdown: CancellationToken,
}

/// Waits for the lease and the caches, keeps the objects Verbund installs as defined, then
/// opens the `leading` gate for the controllers; fails when the lease is lost.
async fn lead(
    mut state: tokio::sync::watch::Receiver<bool>,
    gates: Gates,
    client: Client,
    writer: Writer,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let Gates {
        synced,
        leading,
        shutdown,
    } = gates;
    let became_leader = async {
        leader::acquired(&mut state).await?;
        synced.cancelled().await;
        anyhow::Ok(())
    };
    tokio::select! {
        result = became_leader => result?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    info!("leading; controllers starting");
    metrics.leader.set(1);
    ensure(
        &client,
        &writer,
        controller::tenant::rbac::tenant_admin_role(),
    )
    .await?;
    ensure(&client, &writer, crate::isolation::policy()).await?;
    leading.cancel();
    let result = tokio::select! {
        result = leader::lost(state) => result,
        _ = shutdown.cancelled() => Ok(()),
    };
    metrics.leader.set(0);
    result
}

/// Runs `tasks` to the end. The first task that fails, or ends before shutdown without being
/// a one-off, starts the shutdown and becomes the result.
async fn supervise(tasks: Vec<Task<'_>>, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut running: FuturesUnordered<_> = tasks
        .into_iter()
        .map(|task| async move { (task.name, task.one_off, task.work.await) })
        .collect();
    let mut failure: Option<anyhow::Error> = None;
    let mut grace = None;
    loop {
        let next = match grace.as_mut() {
            None => running.next().await,
            Some(deadline) => tokio::select! {
                next = running.next() => next,
                _ = deadline => anyhow::bail!("tasks still running {SHUTDOWN_GRACE:?} after shutdown began"),
            },
        };
        let Some((name, one_off, result)) = next else {
            break;
        };
        let error = match result {
            Err(error) => Some(error.context(format!("{name} failed"))),
            Ok(()) if !one_off && !shutdown.is_cancelled() => {
                Some(anyhow::anyhow!("{name} ended unexpectedly"))
            }
            Ok(()) => None,
        };
        if let Some(error) = error {
            tracing::error!("{error:#}; shutting down");
            failure.get_or_insert(error);
            shutdown.cancel();
        }
        if shutdown.is_cancelled() && grace.is_none() {
            grace = Some(Box::pin(tokio::time::sleep(SHUTDOWN_GRACE)));
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Publishes a Warning Event on every object the caches cannot decode.
async fn report_undecodable(
    receiver: Option<mpsc::UnboundedReceiver<Undecodable>>,
    writer: Writer,
) -> anyhow::Result<()> {
    let Some(mut receiver) = receiver else {
        return Ok(());
    };
    while let Some(bad) = receiver.recv().await {
        let event = Event {
            type_: EventType::Warning,
            reason: "Undecodable".into(),
            note: Some(format!(
                "Verbund cannot read this object and ignores it until it is fixed: {}",
                bad.error
            )),
            action: "Decode".into(),
            secondary: None,
        };
        writer.publish(&bad.reference, event).await;
    }
    Ok(())
}

/// Applies a cluster-wide object Verbund keeps from start-up (the `verbund-tenant-admin`
/// ClusterRole, the pool-wide tenant isolation policy) when it is missing or not as Verbund
/// defines it. Read once, when this replica starts leading.
async fn ensure<K>(client: &Client, writer: &Writer, desired: K) -> anyhow::Result<()>
where
    K: crate::controller::apply::Writable + Resource<Scope = ClusterResourceScope>,
{
    let api: Api<K> = Api::all(client.clone());
    let name = desired.name_any();
    let what = format!("{} {name}", K::kind(&()));
    let stored = api
        .get_opt(&name)
        .await
        .with_context(|| format!("cannot read {what}"))?;
    writer
        .apply_if_changed(&api, desired, stored.as_ref().map(|s| s.meta()))
        .await
        .with_context(|| format!("cannot apply {what}"))?;
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
