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
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
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
    /// Ends the election: the lease is released when held.
    stop: CancellationToken,
    /// The task taking part in the election.
    keeper: Option<JoinHandle<()>>,
    /// Without an election: the sending side that keeps `state` true (and open) for good.
    single: Option<watch::Sender<bool>>,
}

impl Leadership {
    /// Joins the election named by `args` as `identity`; without `--leader-elect`, leads at once.
    pub async fn join(client: Client, args: &LeaseArgs, identity: &str) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        if !args.leader_elect {
            let (sender, state) = watch::channel(true);
            return Ok(Self {
                state,
                stop,
                keeper: None,
                single: Some(sender),
            });
        }
        anyhow::ensure!(
            args.lease_grace_seconds < args.lease_duration_seconds,
            "--lease-grace-seconds ({}) must be shorter than --lease-duration-seconds ({})",
            args.lease_grace_seconds,
            args.lease_duration_seconds
        );
        let election = Election {
            client,
            args: args.clone(),
            identity: identity.to_string(),
        };
        // The first manager is built here, so that a Lease the operator may not use fails the
        // start with the reason.
        let manager = election.manager().await?;
        let (sender, state) = watch::channel(false);
        let keeper = tokio::spawn(election.run(manager, sender, stop.clone()));
        info!(lease = %args.lease_name, namespace = %args.lease_namespace, %identity, "joined leader election");
        Ok(Self {
            state,
            stop,
            keeper: Some(keeper),
            single: None,
        })
    }

    /// A handle that follows the lease's state.
    pub fn watcher(&self) -> watch::Receiver<bool> {
        self.state.clone()
    }

    /// Gives the lease up (when held) so that another replica takes over at once. Call only
    /// once this replica has stopped writing.
    pub async fn release(self) {
        self.stop.cancel();
        drop(self.single);
        let Some(keeper) = self.keeper else { return };
        if tokio::time::timeout(Duration::from_secs(5), keeper)
            .await
            .is_err()
        {
            warn!("the lease was not released within 5 s; it expires by itself");
        }
    }
}

/// One replica's election: a `kube-lease-manager` keeping the lease, and a watch on the Lease
/// so that a follower sees a release at once. (The manager alone would look again only when
/// the lease it last saw expires: up to a lease duration after a SIGTERM'd leader let go.)
struct Election {
    client: Client,
    args: LeaseArgs,
    identity: String,
}

impl Election {
    async fn manager(&self) -> anyhow::Result<LeaseManager> {
        let args = &self.args;
        LeaseManagerBuilder::new(self.client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&self.identity)
            .with_duration(args.lease_duration_seconds)
            .with_grace(args.lease_grace_seconds)
            .with_field_manager(format!("verbund-operator/lease/{}", self.identity))
            .build()
            .await
            .with_context(|| {
                format!(
                    "cannot use Lease {}/{}",
                    args.lease_namespace, args.lease_name
                )
            })
    }

    /// Follows the lease until `stop`; a follower that sees the lease released starts over
    /// with a fresh manager, which takes the free lease at once.
    async fn run(self, first: LeaseManager, sender: watch::Sender<bool>, stop: CancellationToken) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.args.lease_namespace);
        let mut manager = Some(first);
        loop {
            let current = match manager.take() {
                Some(manager) => manager,
                None => match self.manager().await {
                    Ok(manager) => manager,
                    Err(error) => {
                        warn!("{error:#}; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = stop.cancelled() => return,
                        }
                    }
                },
            };
            let (mut state, keeper) = current.watch().await;
            let released = released(&leases, &self.args.lease_name);
            tokio::pin!(released);
            let rejoin = loop {
                let leading = *state.borrow_and_update();
                sender.send_replace(leading);
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { break true },
                    () = &mut released, if !leading => break true,
                    _ = stop.cancelled() => break false,
                }
            };
            // Dropping the receiver ends the manager's task, which releases the lease if held.
            let held = *state.borrow();
            drop(state);
            match keeper.await {
                Ok(Ok(_)) if !rejoin && held => info!("lease released"),
                Ok(Ok(_)) if !rejoin => info!("left the leader election"),
                Ok(Err(error)) => warn!("leader election: {error}"),
                Err(error) => warn!("leader election task failed: {error}"),
                Ok(Ok(_)) => {}
            }
            if !rejoin {
                sender.send_replace(false);
                return;
            }
        }
    }
}

/// Resolves once the Lease `name`, seen held, is seen without a holder: released. (A lease
/// free from the start is the manager's to take; it needs no nudge.)
async fn released(leases: &Api<Lease>, name: &str) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(leases.clone(), config).applied_objects());
    let mut seen_held = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(lease) => {
                let holder = lease.spec.and_then(|s| s.holder_identity);
                let held = holder.is_some_and(|h| !h.is_empty());
                if seen_held && !held {
                    return;
                }
                seen_held |= held;
            }
            Err(error) => {
                warn!("watching the lease: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    std::future::pending::<()>().await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_an_election_a_replica_leads_until_it_stops() {
        // No client is needed without --leader-elect; one that reaches nothing will do.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let leadership = Leadership::join(client, &LeaseArgs::single(), "test")
            .await
            .expect("joined");
        let mut state = leadership.watcher();
        acquired(&mut state).await.expect("leads at once");
        let lost = tokio::spawn(lost(leadership.watcher()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!lost.is_finished(), "a single replica never loses the lead");
        leadership.release().await;
    }
}
