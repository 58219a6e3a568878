//! Leader election: of several replicas, only the holder of a Lease reconciles and writes.
//! The others keep their caches warm and serve `/metrics` and `/readyz`, so that one takes over
//! as soon as the lease is released (SIGTERM) or has expired (a killed leader).
//!
//! The lease itself is kept by `kube-lease-manager` (server-side apply on a
//! `coordination.k8s.io/v1` Lease, so two replicas can never both hold it). A leader that loses
//! the lease without having released it stops the process: it may have missed a renewal, and
//! another replica may already be writing.

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How a replica takes part in leader election.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    /// Take part in leader election: reconcile only while holding the lease. Needed when more
    /// than one replica runs.
    #[arg(long, env = "VERBUND_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "VERBUND_LEASE_NAME", default_value = "verbund-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "verbund-system")]
    pub lease_namespace: String,
    /// Seconds a lease holds without renewal: a killed leader is replaced within this time.
    #[arg(long, env = "VERBUND_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds before expiry the leader renews (also the clock skew tolerated between nodes).
    #[arg(long, env = "VERBUND_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,
}

impl LeaseArgs {
    /// No leader election: a single replica that leads from the start.
    pub fn single() -> Self {
        Self {
            leader_elect: false,
            lease_name: "verbund-operator".into(),
            lease_namespace: "verbund-system".into(),
            lease_duration_seconds: 15,
            lease_grace_seconds: 5,
        }
    }
}

/// This replica's part in the election.
#[derive(Debug)]
pub struct Leadership {
    /// True while this replica holds the lease.
    state: watch::Receiver<bool>,
    /// The task renewing the lease; releases it once every receiver is dropped.
    keeper: Option<JoinHandle<kube_lease_manager::Result<LeaseManager>>>,
}

impl Leadership {
    /// Joins the election named by `args` as `identity`; without `--leader-elect`, leads at once.
    pub async fn join(client: Client, args: &LeaseArgs, identity: &str) -> anyhow::Result<Self> {
        if !args.leader_elect {
            let (_sender, state) = watch::channel(true);
            return Ok(Self {
                state,
                keeper: None,
            });
        }
        anyhow::ensure!(
            args.lease_grace_seconds < args.lease_duration_seconds,
            "--lease-grace-seconds ({}) must be shorter than --lease-duration-seconds ({})",
            args.lease_grace_seconds,
            args.lease_duration_seconds
        );
        let manager = LeaseManagerBuilder::new(client, &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(identity)
            .with_duration(args.lease_duration_seconds)
            .with_grace(args.lease_grace_seconds)
            .with_field_manager(format!("verbund-operator/lease/{identity}"))
            .build()
            .await
            .with_context(|| {
                format!(
                    "cannot use Lease {}/{}",
                    args.lease_namespace, args.lease_name
                )
            })?;
        let (state, keeper) = manager.watch().await;
        info!(lease = %args.lease_name, namespace = %args.lease_namespace, %identity, "joined leader election");
        Ok(Self {
            state,
            keeper: Some(keeper),
        })
    }

    /// A handle that follows the lease's state.
    pub fn watcher(&self) -> watch::Receiver<bool> {
        self.state.clone()
    }

    /// Gives the lease up (when held) so that another replica takes over at once. Call only
    /// once this replica has stopped writing.
    pub async fn release(self) {
        let Self { state, keeper } = self;
        drop(state);
        let Some(keeper) = keeper else { return };
        match tokio::time::timeout(Duration::from_secs(5), keeper).await {
            Ok(Ok(Ok(_))) => info!("lease released"),
            Ok(Ok(Err(error))) => warn!("cannot release the lease: {error}"),
            Ok(Err(error)) => warn!("the lease keeper failed: {error}"),
            Err(_) => warn!("the lease was not released within 5 s; it expires by itself"),
        }
    }
}

/// Waits until `state` says this replica leads. Err when the election ends first.
pub async fn acquired(state: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    state
        .wait_for(|leading| *leading)
        .await
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("leader election ended"))
}

/// Waits until a replica that leads loses the lease. Err then: the process must stop.
pub async fn lost(mut state: watch::Receiver<bool>) -> anyhow::Result<()> {
    acquired(&mut state).await?;
    state
        .wait_for(|leading| !*leading)
        .await
        .map_err(|_| anyhow::anyhow!("leader election ended"))?;
    anyhow::bail!("lost the lease; stopping so that only the new leader writes")
}
