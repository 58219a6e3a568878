//! Faults of the control plane and of the operator's own replicas, one after the other on one
//! simulated cluster, each ending converged with nothing lost (the invariants of
//! `verbund_tests::faults`). Each scenario prints what it measured; `docs/faults.md` tabulates
//! them.
//!
//! - the API server killed and started again while a mass create is reconciled;
//! - etcd killed and started again while every service is being scaled;
//! - the operator paused (SIGSTOP) while the API server restarts and the pool changes, so that
//!   its watches are gone and their resource versions too old: it relists when resumed;
//! - the leader killed (`kill -9`) in the middle of a mass create while a follower runs;
//! - API Priority and Fairness throttling the operator's ServiceAccount (429s, which kube's
//!   client retries after the server's `Retry-After`).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use verbund_operator::api::PortalService;
use verbund_tests::faults::{
    TIMEOUT, all_ready, all_ready_within, apply, create, first_child, invariants, pool, service,
    start_operator, tenant, total, writes,
};
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{operator_binary, wait};

/// Services created at once in each scenario.
const BATCH: usize = 20;
/// The lease of the two replicas: short, so that a killed leader is replaced quickly.
const LEASE_SECONDS: u64 = 6;
const GRACE_SECONDS: u64 = 2;

/// How long the pool may take to converge after a control-plane restart. kwok's controller, the
/// simulated kubelets, can keep a stalled watch until client-go renews it (5 to 10 minutes)
/// and leave a pod bound to its node Pending meanwhile: seen after an etcd restart, while the
/// operator's status rightly said "1 of at least 2 pods ready" (the wait prints the pods as the
/// API server has them). Operators' own watches are renewed every minute.
const AFTER_RESTART: Duration = Duration::from_secs(660);

/// Waits until the API server answers again and admits a service in `services`' namespace:
/// right after a restart it refuses requests that an admission policy with a custom-resource
/// parameter covers until its parameter informer has synced ("not yet synced to use for
/// admission", kubernetes/kubernetes#141367).
async fn api_server_back(services: &Api<PortalService>) {
    let probe = service("probe", 1);
    wait::until(TIMEOUT, "the API server admitting a service", || async {
        services
            .patch(
                "probe",
                &PatchParams::apply("verbund-tests").dry_run(),
                &Patch::Apply(&probe),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

/// How many caches the operator has (re)filled from a full list so far, by its log.
fn relists(operator: &OperatorProcess) -> usize {
    operator.log_text().matches("cache synced").count()
}

/// The API server's count of requests it refused under priority level `level`.
async fn rejected_by_apf(client: &Client, level: &str) -> f64 {
    let text = verbund_tests::api_server_metrics(client).await;
    let label = format!("priority_level=\"{level}\"");
    text.lines()
        .filter(|l| l.starts_with("apiserver_flowcontrol_rejected_requests_total{"))
        .filter(|l| l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn start_replica(kubeconfig: &std::path::Path, name: &str) -> OperatorProcess {
    let instance = format!("--instance={name}");
    let lease = format!("--lease-duration-seconds={LEASE_SECONDS}");
    let grace = format!("--lease-grace-seconds={GRACE_SECONDS}");
    start_operator(
        operator_binary!(),
        kubeconfig,
        &["--leader-elect", &instance, &lease, &grace],
    )
    .await
}

/// A priority level of one concurrency share that rejects what does not fit (no queue), and
/// a flow schema putting every request of the operator's ServiceAccount in it.
const THROTTLE: &str = r#"
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata:
  name: verbund-gedrosselt
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    limitResponse:
      type: Reject
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: verbund-gedrosselt
spec:
  priorityLevelConfiguration:
    name: verbund-gedrosselt
  matchingPrecedence: 100
  distinguisherMethod:
    type: ByUser
  rules:
  - subjects:
    - kind: ServiceAccount
      serviceAccount:
        name: verbund-operator
        namespace: verbund-system
    resourceRules:
    - verbs: ["*"]
      apiGroups: ["*"]
      resources: ["*"]
      clusterScope: true
      namespaces: ["*"]
    nonResourceRules:
    - verbs: ["*"]
      nonResourceURLs: ["*"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_faults_leave_the_pool_converged_with_nothing_lost() {
    let (pool, client, kubeconfig) = pool().await;
    let mut operator = start_operator(operator_binary!(), &kubeconfig, &[]).await;

    // 1. The API server killed and started again while a mass create is reconciled.
    let ns = tenant(&client, "apiserver").await;
    let services: Api<PortalService> = Api::namespaced(client.clone(), &ns);
    create(&services, 0, BATCH).await;
    first_child(&client, &ns).await;
    let before = writes(&operator).await;
    let killed = Instant::now();
    pool.restart_component("kube-apiserver", Duration::from_secs(3))
        .await
        .expect("API server restarted");
    api_server_back(&services).await;
    let back = killed.elapsed();
    all_ready_within(&services, BATCH, AFTER_RESTART).await;
    invariants(&client, &ns).await;
    eprintln!(
        "fault API server restarted: down 3 s, admitting services again after {:.1} s; all {BATCH} Ready {:.1} s after the kill; writes {:.0}",
        back.as_secs_f64(),
        killed.elapsed().as_secs_f64(),
        total(&writes(&operator).await) - total(&before)
    );

    // 2. etcd killed and started again while every service is being scaled.
    let before = writes(&operator).await;
    for i in 0..BATCH {
        apply(&services, &service(&format!("dienst-{i:02}"), 2)).await;
    }
    let killed = Instant::now();
    pool.restart_component("etcd", Duration::from_secs(3))
        .await
        .expect("etcd restarted");
    api_server_back(&services).await;
    all_ready_within(&services, BATCH, AFTER_RESTART).await;
    invariants(&client, &ns).await;
    // Ready needs the new minimum of pods; the desired count in status is a figure, written
    // within the pacing interval (10 s) after the Deployment is seen scaled.
    wait::until(
        TIMEOUT,
        "every service scaled to its new minimum",
        || async {
            let scaled = services
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|ps| ps.status.as_ref().is_some_and(|s| s.replicas.desired == 2))
                .count();
            if scaled == BATCH {
                Ok(())
            } else {
                Err(format!("{scaled} of {BATCH} show 2 desired replicas"))
            }
        },
    )
    .await;
    eprintln!(
        "fault etcd restarted: down 3 s; all {BATCH} scaled and Ready {:.1} s after the kill; writes {:.0}",
        killed.elapsed().as_secs_f64(),
        total(&writes(&operator).await) - total(&before)
    );

    // 3. The operator paused while the API server restarts and the pool changes: its watches
    //    are gone, and resuming them from its resource versions is refused as too old.
    let watch_errors = operator
        .metric("verbund_cache_watch_errors_total", &[])
        .await;
    let synced = relists(&operator);
    let before = writes(&operator).await;
    operator.signal("STOP").await.expect("SIGSTOP");
    let paused = Instant::now();
    pool.restart_component("kube-apiserver", Duration::from_secs(1))
        .await
        .expect("API server restarted");
    api_server_back(&services).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .delete("dienst-00", &DeleteParams::default())
        .await
        .expect("a child deleted behind the operator's back");
    services
        .delete("dienst-01", &DeleteParams::default())
        .await
        .expect("a service deleted");
    create(&services, BATCH, 5).await;
    services
        .patch(
            "dienst-02",
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(service("dienst-02", 3)),
        )
        .await
        .expect("a service changed");
    while paused.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.signal("CONT").await.expect("SIGCONT");
    let resumed = Instant::now();
    let count = BATCH - 1 + 5;
    all_ready_within(&services, count, AFTER_RESTART).await;
    wait::until(
        TIMEOUT,
        "the deleted service's children collected",
        || async {
            match deployments.get_opt("dienst-01").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    invariants(&client, &ns).await;
    let errors = operator
        .metric("verbund_cache_watch_errors_total", &[])
        .await
        - watch_errors;
    let relisted = relists(&operator) - synced;
    assert!(
        relisted > 0,
        "the resumed operator relisted its caches ({errors} watch errors)"
    );
    eprintln!(
        "fault operator paused 20 s across an API server restart: {errors:.0} watch errors, {relisted} caches relisted; all {count} Ready {:.1} s after SIGCONT; writes {:.0}",
        resumed.elapsed().as_secs_f64(),
        total(&writes(&operator).await) - total(&before)
    );
    operator.signal("TERM").await.expect("stop");
    operator.wait(Duration::from_secs(30)).await.expect("stops");

    // 4. The leader killed in the middle of a mass create while a follower runs.
    let mut leader = start_replica(&kubeconfig, "replica-a").await;
    wait::until(TIMEOUT, "a leader", || async {
        if leader.leads().await {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    let follower = start_replica(&kubeconfig, "replica-b").await;
    let ns = tenant(&client, "leader").await;
    let services: Api<PortalService> = Api::namespaced(client.clone(), &ns);
    create(&services, 0, BATCH).await;
    first_child(&client, &ns).await;
    leader.signal("KILL").await.expect("kill -9");
    let killed = Instant::now();
    let _ = leader.wait(Duration::from_secs(10)).await;
    let took_over = wait::until(TIMEOUT, "the follower leading", || async {
        if follower.leads().await {
            Ok(killed.elapsed())
        } else {
            Err("not yet")
        }
    })
    .await;
    all_ready(&services, BATCH).await;
    invariants(&client, &ns).await;
    eprintln!(
        "fault leader killed mid-create: the follower led {:.1} s later (lease {LEASE_SECONDS} s); all {BATCH} Ready {:.1} s after the kill; the new leader's writes {:.0}",
        took_over.as_secs_f64(),
        killed.elapsed().as_secs_f64(),
        total(&writes(&follower).await)
    );
    leader = follower;
    leader.signal("TERM").await.expect("stop");
    leader.wait(Duration::from_secs(30)).await.expect("stops");

    // 5. API Priority and Fairness throttles the operator's ServiceAccount: it starts, fills
    //    its caches, sets up a tenant and creates a batch of services through 429s.
    let throttle = pool.workdir().join("throttle.yaml");
    std::fs::write(&throttle, THROTTLE).expect("throttle manifest");
    pool.kubectl()
        .ok(["apply", "-f", &throttle.to_string_lossy()])
        .await;
    let rejected = rejected_by_apf(&client, "verbund-gedrosselt").await;
    let started = Instant::now();
    operator = start_operator(operator_binary!(), &kubeconfig, &[]).await;
    let ns = tenant(&client, "drossel").await;
    let services: Api<PortalService> = Api::namespaced(client.clone(), &ns);
    create(&services, 0, BATCH).await;
    all_ready(&services, BATCH).await;
    invariants(&client, &ns).await;
    let refused = rejected_by_apf(&client, "verbund-gedrosselt").await - rejected;
    let throttled = operator
        .metric("verbund_reconcile_errors_total", &["reason=\"Throttled\""])
        .await;
    let watch_errors = operator
        .metric("verbund_cache_watch_errors_total", &[])
        .await;
    assert!(
        refused > 0.0,
        "the API server refused some of the operator's requests (429)"
    );
    eprintln!(
        "fault throttled by API Priority and Fairness (1 concurrency share, no queue): {refused:.0} requests refused with 429 and retried by the client after the Retry-After the API server sent; {throttled:.0} reconciles and {watch_errors:.0} cache lists or watches failed; all {BATCH} Ready {:.1} s after the start; writes {:.0}",
        started.elapsed().as_secs_f64(),
        total(&writes(&operator).await)
    );
    pool.kubectl()
        .ok(["delete", "-f", &throttle.to_string_lossy()])
        .await;

    operator.signal("TERM").await.expect("stop");
    let (status, log) = operator.wait(Duration::from_secs(30)).await.expect("stops");
    assert!(status.success(), "{log}");
}
