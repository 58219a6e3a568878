//! One tier, start to finish, on a cluster of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use verbund_tests::cluster::{ClusterSpec, NodeShape, SimulatedCluster};
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{crds, examples, identity};

use crate::audit_log::Mark;
use crate::load::{self, Percentiles};
use crate::process::{self, Peak};
use crate::report::{Cost, Report};

/// A size of pool to measure.
#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub tenants: usize,
    pub namespaces_per_tenant: usize,
    pub services_per_namespace: usize,
    pub pods_per_service: i32,
    pub nodes_per_site: usize,
    /// Services changed one by one for the latency figures.
    pub changes: usize,
}

impl Tier {
    /// The tiers `verbund-bench --tier` knows.
    pub fn named(name: &str) -> Option<Tier> {
        let tier = |tenants, namespaces, services, pods, nodes, changes| Tier {
            name: name.to_string(),
            tenants,
            namespaces_per_tenant: namespaces,
            services_per_namespace: services,
            pods_per_service: pods,
            nodes_per_site: nodes,
            changes,
        };
        match name {
            // Inside `make test`: small, checks correctness only.
            "smoke" => Some(tier(2, 2, 2, 1, 1, 4)),
            "idle" => Some(tier(0, 0, 0, 1, 1, 0)),
            // 1,000 services in 1,000 namespaces, two pods each.
            "1k" => Some(tier(100, 10, 1, 2, 4, 50)),
            // 10,000 services in 1,000 namespaces, one pod each.
            "10k" => Some(tier(100, 10, 10, 1, 14, 50)),
            _ => None,
        }
    }

    pub fn namespaces(&self) -> usize {
        self.tenants * self.namespaces_per_tenant
    }

    pub fn services(&self) -> usize {
        self.namespaces() * self.services_per_namespace
    }
}

/// How to run the bench.
#[derive(Debug, Clone)]
pub struct Options {
    /// The operator binary to measure.
    pub operator: PathBuf,
    /// What to call it in the report (a commit, "baseline", ...).
    pub label: String,
    /// How long the operator waits before reconciling an unchanged object again: the idle
    /// hour, compressed.
    pub resync: Duration,
    /// Longest wait for any convergence.
    pub timeout: Duration,
}

async fn client_from(path: &std::path::Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Samples a process's RSS into a peak, following the pid through restarts.
fn sample_peak(pid: Arc<AtomicU32>, peak: Arc<Mutex<Peak>>, stop: CancellationToken) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            peak.lock().await.sample(pid.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

async fn start_operator(
    options: &Options,
    kubeconfig: &std::path::Path,
) -> anyhow::Result<OperatorProcess> {
    // An operator from before `--resync-seconds` runs with its own fixed interval.
    let help = tokio::process::Command::new(&options.operator)
        .args(["run", "--help"])
        .output()
        .await?;
    let resync = format!("--resync-seconds={}", options.resync.as_secs().max(1));
    let args: Vec<&str> = if String::from_utf8_lossy(&help.stdout).contains("--resync-seconds") {
        vec![&resync]
    } else {
        Vec::new()
    };
    let mut operator = OperatorProcess::start(&options.operator, kubeconfig, &args).await?;
    operator.await_ready(Duration::from_secs(120)).await?;
    Ok(operator)
}

/// How long without a write counts as settled: longer than the longest pacing of status
/// figures, so that no paced write falls into the next phase.
const QUIET: Duration =
    Duration::from_secs(verbund_operator::controller::status::FIGURES_INTERVAL_MAX.as_secs() + 5);

/// Waits until the operator has written nothing for `quiet`, at most `timeout`.
async fn settle(mark_user: &str, log: &std::path::Path, quiet: Duration, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mark = Mark::now(log);
        tokio::time::sleep(quiet).await;
        if mark.requests_of(mark_user).writes() == 0 || Instant::now() > deadline {
            return;
        }
    }
}

/// Runs one tier on a fresh simulated pool and returns what it measured.
pub async fn run_tier(tier: &Tier, options: &Options) -> anyhow::Result<Report> {
    let mut report = Report {
        tier: tier.name.clone(),
        operator: options.label.clone(),
        tenants: tier.tenants,
        namespaces: tier.namespaces(),
        services: tier.services(),
        pods_per_service: tier.pods_per_service,
        ..Report::default()
    };
    let mut spec = ClusterSpec::three_sites(tier.nodes_per_site);
    spec.node = NodeShape {
        cpu: "64".into(),
        memory: "512Gi".into(),
        pods: "250".into(),
    };
    // A /12: room for every tier's Services (kube's default /24 holds ~250).
    spec.service_ip_range = Some("10.96.0.0/12".into());
    spec.audit = true;
    let cluster = SimulatedCluster::start(spec).await?;
    let admin = cluster.client().await;
    let log = cluster.audit_log();
    let user = identity::username();

    crds::install(&admin).await;
    for file in ["00-sites.yaml", "10-baselines.yaml"] {
        let path = examples::saarland_dir().join(file);
        cluster
            .kubectl()
            .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
            .await;
    }
    let operator_kubeconfig =
        identity::operator_kubeconfig(&admin, cluster.kubeconfig_path()).await?;
    let as_operator = client_from(&operator_kubeconfig).await?;
    let run_start = Mark::now(&log);

    // W first: the API server alone, for this object mix and this identity.
    let mix = tier.services().clamp(20, 200);
    report.write_rate = load::write_rate(&as_operator, "bench-write-rate", mix).await?;

    let stop = CancellationToken::new();
    let operator_pid = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(Mutex::new(Peak::default()));
    sample_peak(operator_pid.clone(), peak.clone(), stop.clone());
    let mut operator = start_operator(options, &operator_kubeconfig).await?;
    operator_pid.store(operator.id().unwrap_or(0), Ordering::Relaxed);
    let mut cpu = Duration::ZERO;

    // The tenants, then the services.
    let tenants = (0..tier.tenants)
        .map(|i| load::tenant(i, tier.namespaces_per_tenant))
        .collect();
    load::apply_all(&admin, tenants).await?;
    load::tenants_ready(&admin, tier.tenants, options.timeout).await?;
    settle(&user, &log, Duration::from_secs(3), Duration::from_secs(30)).await;

    let created = Mark::now(&log);
    let services = load::layout(tier.tenants, tier.namespaces_per_tenant)
        .values()
        .flatten()
        .flat_map(|ns| {
            (0..tier.services_per_namespace)
                .map(|k| load::service(ns, k, tier.pods_per_service))
                .collect::<Vec<_>>()
        })
        .collect();
    let start = Instant::now();
    load::apply_all(&admin, services).await?;
    load::converged(&admin, tier.services(), options.timeout).await?;
    report.converge_seconds = start.elapsed().as_secs_f64();
    // The quota redraws that follow the last pods belong to the creation too.
    settle(&user, &log, QUIET, Duration::from_secs(120)).await;
    let writes = created.requests_of(&user);
    report.writes_by_kind = writes.write_kinds();
    report.writes_per_service = writes.writes() as f64 / tier.services().max(1) as f64;
    report.floor_seconds = tier.services() as f64 * report.writes_per_service
        / report.write_rate.max(f64::MIN_POSITIVE);
    report.converge_ratio = if report.floor_seconds > 0.0 {
        report.converge_seconds / report.floor_seconds
    } else {
        0.0
    };

    // An idle period compressed: every object comes back once with nothing to change.
    let idle = Mark::now(&log);
    tokio::time::sleep(options.resync.mul_f64(1.5)).await;
    let resync = idle.requests_of(&user);
    report.resync_writes = resync.writes();
    report.resync_lists = resync.lists();
    report.resync_writes_by_kind = resync.write_kinds();
    report.operator_cost.rss_steady_mib =
        mib(process::rss_bytes(operator_pid.load(Ordering::Relaxed)).unwrap_or(0));

    // One audit cycle with nothing changing.
    let audit = Mark::now(&log);
    let before = audit_seconds(&operator).await;
    tokio::time::sleep(
        verbund_operator::controller::baseline::AUDIT_INTERVAL + Duration::from_secs(5),
    )
    .await;
    let requests = audit.requests_of(&user);
    report.audit_requests = requests.total();
    report.audit_lists = requests.lists();
    report.audit_requests_by_kind = requests
        .by_kind
        .iter()
        .filter(|(k, _)| !k.starts_with("watch "))
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    report.audit_seconds = audit_seconds(&operator).await - before;

    // Changes while pods churn in the other tenants.
    if tier.changes > 0 && tier.tenants > 0 {
        let churn_stop = CancellationToken::new();
        let churn = tokio::spawn(load::churn(
            admin.clone(),
            load::tenant_name(0),
            Duration::from_secs(1),
            churn_stop.clone(),
        ));
        let sample: Vec<(String, String)> = (0..tier.namespaces_per_tenant)
            .flat_map(|j| {
                (0..tier.services_per_namespace)
                    .map(move |k| (load::namespace_name(0, j), format!("dienst-{k:04}")))
            })
            .take(tier.changes)
            .collect();
        let (observed, ready) = load::change_latencies(&admin, &sample, 2).await?;
        report.change_to_observed = Percentiles::of(observed);
        report.change_to_ready = Percentiles::of(ready);
        churn_stop.cancel();
        report.pods_churned = churn.await.unwrap_or(0);
    }
    load::converged(&admin, tier.services(), options.timeout).await?;
    settle(&user, &log, QUIET, Duration::from_secs(180)).await;

    // A restart on a converged pool.
    cpu += process::cpu_time(operator_pid.load(Ordering::Relaxed)).unwrap_or_default();
    operator.signal("TERM").await?;
    operator.wait(Duration::from_secs(30)).await?;
    let restarted = Mark::now(&log);
    operator = start_operator(options, &operator_kubeconfig).await?;
    operator_pid.store(operator.id().unwrap_or(0), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = restarted.requests_of(&user);
    report.restart_writes = after.writes();
    report.restart_lists = after.lists();
    report.restart_writes_by_kind = after.write_kinds();

    cpu += process::cpu_time(operator_pid.load(Ordering::Relaxed)).unwrap_or_default();
    stop.cancel();
    report.operator_cost.cpu_seconds = cpu.as_secs_f64();
    report.operator_cost.rss_peak_mib = mib(peak.lock().await.0);
    for (component, cost) in [
        ("kube-apiserver", &mut report.apiserver_cost),
        ("etcd", &mut report.etcd_cost),
    ] {
        if let Some(pid) = cluster.component_pid(component) {
            let rss = mib(process::rss_bytes(pid).unwrap_or(0));
            *cost = Cost {
                rss_steady_mib: rss,
                rss_peak_mib: rss,
                cpu_seconds: process::cpu_time(pid).unwrap_or_default().as_secs_f64(),
            };
        }
    }
    report.throttled = run_start.requests_of(&user).throttled;
    let log_text = operator.log_text();
    let warnings: Vec<String> = log_text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    report.operator_warnings = warnings[warnings.len().saturating_sub(20)..].to_vec();
    drop(operator);
    Ok(report)
}

/// Seconds the baseline controller has spent reconciling (its histogram's sum).
async fn audit_seconds(operator: &OperatorProcess) -> f64 {
    let Ok(response) = reqwest_get(&format!("{}/metrics", operator.admin_url())).await else {
        return 0.0;
    };
    response
        .lines()
        .find(|l| l.starts_with("verbund_reconcile_duration_seconds_sum{controller=\"baseline\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn reqwest_get(url: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    Ok(client.get(url).send().await?.text().await?)
}
