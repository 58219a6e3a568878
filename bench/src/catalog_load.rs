//! The catalogue under load (`verbund-bench --catalog 10000`).
//!
//! N PortalServices with catalogue entries on a simulated pool, and one replica of the operator
//! that follows: the bench holds the leader Lease, so nothing reconciles and every figure is the
//! catalogue's own (every replica serves the catalogue, leader or not). Measured in one run:
//!
//! - `ListServices` latency (p50/p99) from concurrent clients: the first page, a filtered list
//!   (one municipality's regional key), and paging through the whole catalogue;
//! - 1,000 concurrent `WatchServices` streams (each filtered to one tenant, as a municipal
//!   portal would watch its own services), then a burst of changes: the time until every
//!   watcher has seen every change meant for it, and how many had to take a fresh snapshot;
//! - the operator's RSS before the watchers, with them, at the burst's peak and after it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use verbund_operator::api::PortalService;
use verbund_operator::catalog::proto::service_catalog_client::ServiceCatalogClient;
use verbund_operator::catalog::proto::service_event::Type;
use verbund_operator::catalog::proto::{ListServicesRequest, ServiceFilter, WatchServicesRequest};
use verbund_tests::cluster::{ClusterSpec, SimulatedCluster};
use verbund_tests::control_plane::free_port;
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{crds, examples, identity};

use crate::load::{self, CONCURRENCY, Percentiles};
use crate::process::{self, Peak};

/// Tenants of the catalogue run; every tenant is a municipality with its own regional key.
const TENANTS: usize = 100;
const NAMESPACES_PER_TENANT: usize = 10;
/// Clients sending `ListServices` at once, and for how long per kind of request.
const LIST_CLIENTS: usize = 16;
const LIST_SECONDS: u64 = 20;
/// Entries per page, as a portal would page.
const PAGE_SIZE: i32 = 100;
/// Watch streams, and HTTP/2 connections they share (the server allows 128 streams each).
const WATCHERS: usize = 1000;
const WATCH_CONNECTIONS: usize = 10;
/// Services changed in the burst: spread evenly over the tenants.
const BURST: usize = 1000;

/// What the catalogue run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatalogReport {
    pub operator: String,
    pub services: usize,
    pub tenants: usize,
    /// Seconds from the follower's start until its catalogue held every service.
    pub fill_seconds: f64,
    pub first_page: Percentiles,
    pub first_page_per_second: f64,
    pub filtered: Percentiles,
    pub filtered_per_second: f64,
    pub whole_catalogue: Percentiles,
    pub watchers: usize,
    /// Seconds until every watcher had its snapshot.
    pub watchers_snapshot_seconds: f64,
    pub burst_changes: usize,
    /// Per watcher: seconds from the burst's start until it had seen all its changes.
    pub burst_delivery: Percentiles,
    /// Watchers that fell behind and were sent a fresh snapshot.
    pub resnapshots: u64,
    pub rss_filled_mib: f64,
    pub rss_watchers_mib: f64,
    pub rss_burst_peak_mib: f64,
    pub rss_after_mib: f64,
}

impl CatalogReport {
    pub fn table(&self) -> String {
        let p = |p: &Percentiles| {
            format!(
                "{:.2} / {:.2} / {:.2} ms ({} requests)",
                p.p50 * 1000.0,
                p.p99 * 1000.0,
                p.max * 1000.0,
                p.samples
            )
        };
        let mut out = format!(
            "catalogue under load: {} services in {} tenants, operator {}\n\n| figure | value |\n|---|---|\n",
            self.services, self.tenants, self.operator
        );
        let rows = [
            (
                "catalogue filled after the follower started".to_string(),
                format!("{:.1} s", self.fill_seconds),
            ),
            (
                format!(
                    "ListServices, first page of {PAGE_SIZE}, {LIST_CLIENTS} clients: p50 / p99 / max"
                ),
                format!(
                    "{} , {:.0} requests/s",
                    p(&self.first_page),
                    self.first_page_per_second
                ),
            ),
            (
                format!(
                    "ListServices, one municipality's regional key, {LIST_CLIENTS} clients: p50 / p99 / max"
                ),
                format!(
                    "{} , {:.0} requests/s",
                    p(&self.filtered),
                    self.filtered_per_second
                ),
            ),
            (
                "the whole catalogue, paged by 500: p50 / p99 / max".to_string(),
                p(&self.whole_catalogue),
            ),
            (
                format!(
                    "{} watchers (one tenant each): all snapshots in",
                    self.watchers
                ),
                format!("{:.1} s", self.watchers_snapshot_seconds),
            ),
            (
                format!(
                    "burst of {} changes: per watcher, all its changes seen after p50 / p99 / max",
                    self.burst_changes
                ),
                format!(
                    "{:.2} / {:.2} / {:.2} s ({} watchers)",
                    self.burst_delivery.p50,
                    self.burst_delivery.p99,
                    self.burst_delivery.max,
                    self.burst_delivery.samples
                ),
            ),
            (
                "watchers sent a fresh snapshot (fell behind)".to_string(),
                self.resnapshots.to_string(),
            ),
            (
                "operator RSS: filled / with watchers / burst peak / after".to_string(),
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} MiB",
                    self.rss_filled_mib,
                    self.rss_watchers_mib,
                    self.rss_burst_peak_mib,
                    self.rss_after_mib
                ),
            ),
        ];
        for (figure, value) in rows {
            out.push_str(&format!("| {figure} | {value} |\n"));
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Municipality `i`'s regional key (ARS, 12 digits, in the Regionalverband Saarbrücken).
fn regional_key(i: usize) -> String {
    format!("10041{i:07}")
}

/// Service `k` of namespace `j` of tenant `i`, with its catalogue entry at `revision`.
fn service(i: usize, j: usize, k: usize, revision: u32) -> Value {
    let namespace = load::namespace_name(i, j);
    let mut body = load::service(&namespace, k, 1);
    let trust_level = ["Low", "Substantial", "High"][k % 3];
    body["spec"]["catalog"] = json!({
        "serviceKey": format!("99{:012}", (j * 1000 + k) % 1_000_000_000_000),
        "title": format!("Leistung {k} der Gemeinde {i}, Stand {revision}"),
        "summary": "Eine Verwaltungsleistung des Benchmarks.",
        "responsibleAuthority": format!("Bürgeramt der Gemeinde {i}"),
        "regionalKeys": [regional_key(i)],
        "languages": if k.is_multiple_of(3) { json!(["de", "en"]) } else { json!(["de"]) },
        "accessibility": "Full",
        "trustLevel": trust_level,
        "onlineServiceUrl": format!("https://service.saarland.de/g{i}/{j}/{k}"),
    });
    body
}

/// Makes the operator's account able to take part in leader election, and takes the Lease
/// for the bench, so the operator under measurement stays a follower.
async fn hold_the_lease(cluster: &SimulatedCluster, admin: &Client) -> anyhow::Result<()> {
    let role = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": { "name": "verbund-operator-leader-election", "namespace": identity::NAMESPACE },
              "rules": [
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] },
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                  "resourceNames": ["verbund-operator"], "verbs": ["get", "list", "watch", "patch"] } ] },
            { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": { "name": "verbund-operator-leader-election", "namespace": identity::NAMESPACE },
              "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "verbund-operator-leader-election" },
              "subjects": [{ "kind": "ServiceAccount", "name": identity::SERVICE_ACCOUNT,
                             "namespace": identity::NAMESPACE }] } ]
    });
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("lease-role.json");
    std::fs::write(&file, role.to_string())?;
    cluster
        .kubectl()
        .ok(["apply", "--server-side", "-f", &file.to_string_lossy()])
        .await;
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("verbund-operator".into()),
            namespace: Some(identity::NAMESPACE.into()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some("verbund-bench".into()),
            lease_duration_seconds: Some(86_400),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(admin.clone(), identity::NAMESPACE)
        .patch(
            "verbund-operator",
            &PatchParams::apply("verbund-bench").force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

async fn connect(port: u16) -> anyhow::Result<ServiceCatalogClient<Channel>> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    Ok(ServiceCatalogClient::new(channel))
}

/// Sends `request` from [`LIST_CLIENTS`] clients for [`LIST_SECONDS`]: latencies and rate.
async fn hammer(
    client: &ServiceCatalogClient<Channel>,
    request: ListServicesRequest,
    expected: usize,
) -> anyhow::Result<(Percentiles, f64)> {
    let until = Instant::now() + Duration::from_secs(LIST_SECONDS);
    let started = Instant::now();
    let runs = futures::future::join_all((0..LIST_CLIENTS).map(|_| {
        let mut client = client.clone();
        let request = request.clone();
        async move {
            let mut samples = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let answer = client.list_services(request.clone()).await?.into_inner();
                samples.push(sent.elapsed());
                anyhow::ensure!(
                    answer.services.len() == expected,
                    "expected {expected} entries, got {}",
                    answer.services.len()
                );
            }
            Ok::<_, anyhow::Error>(samples)
        }
    }))
    .await;
    let mut samples = Vec::new();
    for run in runs {
        samples.extend(run?);
    }
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    Ok((Percentiles::of(samples), rate))
}

/// Reads the whole catalogue page by page; returns the time it took.
async fn read_all(
    client: &mut ServiceCatalogClient<Channel>,
    expected: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut token = String::new();
    let mut seen = 0;
    loop {
        let page = client
            .list_services(ListServicesRequest {
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        seen += page.services.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    anyhow::ensure!(seen == expected, "paged through {seen} of {expected}");
    Ok(started.elapsed())
}

/// What one watcher saw.
#[derive(Debug, Default)]
struct Seen {
    snapshot_done: bool,
    /// Entries in its first snapshot.
    snapshot_size: usize,
    /// Its tenant's services with the burst's new title.
    changed: BTreeSet<String>,
    all_changes_at: Option<Instant>,
    resnapshots: u64,
    /// Why its stream ended, if it did.
    ended: Option<String>,
}

/// Runs the catalogue measurement with `services` services against `operator_binary`.
pub async fn run(
    operator_binary: &std::path::Path,
    label: &str,
    services: usize,
    timeout: Duration,
) -> anyhow::Result<CatalogReport> {
    let per_namespace = services.div_ceil(TENANTS * NAMESPACES_PER_TENANT).max(1);
    let total = TENANTS * NAMESPACES_PER_TENANT * per_namespace;
    let mut report = CatalogReport {
        operator: label.to_string(),
        services: total,
        tenants: TENANTS,
        watchers: WATCHERS,
        burst_changes: BURST,
        ..Default::default()
    };
    let mut spec = ClusterSpec::three_sites(1);
    spec.audit = false;
    let cluster = SimulatedCluster::start(spec).await?;
    let admin = cluster.client().await;
    crds::install(&admin).await;
    let sites = examples::saarland_dir().join("00-sites.yaml");
    cluster
        .kubectl()
        .ok(["apply", "--server-side", "-f", &sites.to_string_lossy()])
        .await;
    let operator_kubeconfig =
        identity::operator_kubeconfig(&admin, cluster.kubeconfig_path()).await?;
    hold_the_lease(&cluster, &admin).await?;

    // Tenants, their namespaces (no leader creates them) and the services.
    eprintln!("creating {TENANTS} tenants and {total} services ...");
    load::apply_all(
        &admin,
        (0..TENANTS)
            .map(|i| load::tenant(i, NAMESPACES_PER_TENANT))
            .collect(),
    )
    .await?;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let names: Vec<String> = load::layout(TENANTS, NAMESPACES_PER_TENANT)
        .into_values()
        .flatten()
        .collect();
    let created: Vec<anyhow::Result<()>> = stream::iter(names)
        .map(|name| {
            let namespaces = namespaces.clone();
            async move {
                // Labelled as the Tenant controller would (no leader runs): the operator caches
                // the namespaces bound to a baseline and reads their tenant from them.
                let tenant = name.rsplit_once("-n").map(|(t, _)| t.to_string()).unwrap_or_default();
                let mut ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } });
                ns["metadata"]["labels"][verbund_operator::meta::TENANT_LABEL] = json!(tenant);
                ns["metadata"]["labels"][verbund_operator::meta::BASELINE_LABEL] =
                    json!("grundschutz-normal");
                namespaces
                    .patch(
                        &name,
                        &PatchParams::apply("verbund-bench"),
                        &Patch::Apply(&ns),
                    )
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<()>>()?;
    let bodies = (0..TENANTS)
        .flat_map(|i| {
            (0..NAMESPACES_PER_TENANT)
                .flat_map(move |j| (0..per_namespace).map(move |k| service(i, j, k, 1)))
        })
        .collect();
    load::apply_all(&admin, bodies).await?;

    // The follower, allowed any request rate: the limit is a policy per client, the figures
    // are the server's cost.
    let port = free_port()?;
    let args = [
        "--leader-elect".to_string(),
        "--instance=bench".to_string(),
        format!("--lease-namespace={}", identity::NAMESPACE),
        format!("--catalog-addr=127.0.0.1:{port}"),
        "--catalog-rate=1000000".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut operator = OperatorProcess::start(operator_binary, &operator_kubeconfig, &args).await?;
    operator.await_ready(timeout).await?;
    let pid = Arc::new(AtomicU32::new(operator.id().unwrap_or(0)));
    let mut client = connect(port).await?;
    load::until(timeout, "the catalogue filled", || {
        let mut client = client.clone();
        async move {
            let page = client
                .list_services(ListServicesRequest {
                    page_size: 1,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((
                page.total_size as usize == total,
                format!("{} of {total}", page.total_size),
            ))
        }
    })
    .await?;
    report.fill_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    report.rss_filled_mib = mib(process::rss_bytes(pid.load(Ordering::Relaxed)).unwrap_or(0));

    eprintln!("ListServices ...");
    let first_page = ListServicesRequest {
        page_size: PAGE_SIZE,
        ..Default::default()
    };
    (report.first_page, report.first_page_per_second) =
        hammer(&client, first_page, PAGE_SIZE as usize).await?;
    let one_municipality = ListServicesRequest {
        filter: Some(ServiceFilter {
            regional_key: regional_key(7),
            ..Default::default()
        }),
        page_size: PAGE_SIZE,
        ..Default::default()
    };
    let per_tenant = NAMESPACES_PER_TENANT * per_namespace;
    (report.filtered, report.filtered_per_second) = hammer(
        &client,
        one_municipality,
        per_tenant.min(PAGE_SIZE as usize),
    )
    .await?;
    let mut whole = Vec::new();
    for _ in 0..10 {
        whole.push(read_all(&mut client, total).await?);
    }
    report.whole_catalogue = Percentiles::of(whole);

    eprintln!("{WATCHERS} watchers ...");
    let mut channels = Vec::new();
    for _ in 0..WATCH_CONNECTIONS {
        channels.push(connect(port).await?);
    }
    let seen: Arc<Vec<Mutex<Seen>>> =
        Arc::new((0..WATCHERS).map(|_| Mutex::new(Seen::default())).collect());
    let stop = CancellationToken::new();
    let new_title = |t: &str| t.ends_with("Stand 2");
    let expected_per_watcher = BURST / TENANTS;
    let watch_started = Instant::now();
    for w in 0..WATCHERS {
        let mut client = channels[w % WATCH_CONNECTIONS].clone();
        let seen = seen.clone();
        let stop = stop.clone();
        let tenant = load::tenant_name(w % TENANTS);
        let mut stream = client
            .watch_services(WatchServicesRequest {
                filter: Some(ServiceFilter {
                    tenant,
                    ..Default::default()
                }),
                resume_revision: 0,
            })
            .await?
            .into_inner();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = stream.message() => event,
                    () = stop.cancelled() => return,
                };
                let event = match event {
                    Ok(Some(event)) => event,
                    Ok(None) => {
                        seen[w].lock().await.ended = Some("closed".into());
                        return;
                    }
                    Err(status) => {
                        seen[w].lock().await.ended = Some(status.to_string());
                        return;
                    }
                };
                let mut seen = seen[w].lock().await;
                match event.r#type() {
                    Type::SnapshotEnd => {
                        if seen.snapshot_done {
                            seen.resnapshots += 1;
                        }
                        seen.snapshot_done = true;
                    }
                    Type::Snapshot if !seen.snapshot_done => {
                        seen.snapshot_size += 1;
                        if let Some(service) = event.service
                            && new_title(&service.title)
                        {
                            seen.changed.insert(service.name);
                        }
                    }
                    Type::Snapshot | Type::Modified | Type::Added => {
                        if let Some(service) = event.service
                            && new_title(&service.title)
                        {
                            seen.changed.insert(service.name);
                        }
                    }
                    _ => {}
                }
                if seen.changed.len() >= expected_per_watcher && seen.all_changes_at.is_none() {
                    seen.all_changes_at = Some(Instant::now());
                }
            }
        });
    }
    load::until(timeout, "every watcher's snapshot", || {
        let seen = seen.clone();
        async move {
            let mut done = 0;
            for s in seen.iter() {
                done += usize::from(s.lock().await.snapshot_done);
            }
            Ok((done == WATCHERS, format!("{done} of {WATCHERS}")))
        }
    })
    .await?;
    report.watchers_snapshot_seconds = watch_started.elapsed().as_secs_f64();
    for (w, s) in seen.iter().enumerate() {
        let size = s.lock().await.snapshot_size;
        anyhow::ensure!(
            size == per_tenant,
            "watcher {w} got a snapshot of {size} entries, not its tenant's {per_tenant}"
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    report.rss_watchers_mib = mib(process::rss_bytes(pid.load(Ordering::Relaxed)).unwrap_or(0));

    eprintln!("a burst of {BURST} changes ...");
    let peak = Arc::new(Mutex::new(Peak::default()));
    let sampling = CancellationToken::new();
    {
        let (peak, pid, sampling) = (peak.clone(), pid.clone(), sampling.clone());
        tokio::spawn(async move {
            while !sampling.is_cancelled() {
                peak.lock().await.sample(pid.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    // Ten services of every tenant, the first of each of its namespaces.
    let changes: Vec<Value> = (0..TENANTS)
        .flat_map(|i| {
            (0..expected_per_watcher)
                .map(move |j| service(i, j % NAMESPACES_PER_TENANT, j / NAMESPACES_PER_TENANT, 2))
        })
        .collect();
    let burst_started = Instant::now();
    let patched: Vec<anyhow::Result<()>> = stream::iter(changes)
        .map(|body| {
            let admin = admin.clone();
            async move {
                let ns = body["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Api::<PortalService>::namespaced(admin, &ns)
                    .patch(
                        &name,
                        &PatchParams::apply("verbund-bench").force(),
                        &Patch::Apply(&body),
                    )
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    patched.into_iter().collect::<anyhow::Result<()>>()?;
    load::until(timeout, "every watcher saw its changes", || {
        let seen = seen.clone();
        async move {
            let (mut done, mut fewest, mut ended) = (0, usize::MAX, Vec::new());
            for s in seen.iter() {
                let s = s.lock().await;
                done += usize::from(s.all_changes_at.is_some());
                fewest = fewest.min(s.changed.len());
                ended.extend(s.ended.clone());
            }
            ended.dedup();
            Ok((
                done == WATCHERS,
                format!(
                    "{done} of {WATCHERS} watchers complete; the slowest saw {fewest} of {expected_per_watcher}; {} streams ended: {:?}",
                    ended.len(),
                    ended.first()
                ),
            ))
        }
    })
    .await?;
    sampling.cancel();
    let mut delivery = Vec::new();
    for s in seen.iter() {
        let s = s.lock().await;
        delivery.extend(s.all_changes_at.map(|at| at - burst_started));
        report.resnapshots += s.resnapshots;
    }
    report.burst_delivery = Percentiles::of(delivery);
    report.rss_burst_peak_mib = mib(peak.lock().await.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    report.rss_after_mib = mib(process::rss_bytes(pid.load(Ordering::Relaxed)).unwrap_or(0));
    stop.cancel();
    operator.signal("TERM").await?;
    operator.wait(Duration::from_secs(30)).await?;
    Ok(report)
}
