//! What administrators watch, checked against a real Prometheus (Debian's package) scraping a
//! real operator on the simulated pool with the Saarland example applied:
//! - `promtool check metrics` is clean on a live scrape;
//! - every panel query of every dashboard, and every rule of `dashboards/verbund-rules.yaml`,
//!   parses, and every panel returns data (a panel that is empty on a healthy pool says so);
//! - no alert fires on the healthy pool;
//! - the dashboards decode as Grafana's dashboard model (grafana-foundation-sdk, `dashcheck`);
//! - the series of a deleted tenant and its services disappear.
//!
//! The rules' own unit tests (`promtool test rules`) run here too.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use verbund_operator::api::{PortalService, Tenant};
use verbund_tests::control_plane::free_port;
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{cluster, crds, examples, operator_binary, tools, wait};

const TIMEOUT: Duration = Duration::from_secs(300);

/// The text a panel's description ends with when the panel is empty on a healthy pool.
const EMPTY_WHEN_HEALTHY: &str = "Leer, wenn alles in Ordnung ist";

fn root() -> PathBuf {
    tools::workspace_root()
}

fn rules_file() -> PathBuf {
    root().join("dashboards/verbund-rules.yaml")
}

/// Debian's `promtool`; `make deps` installs the `prometheus` package.
fn promtool() -> Command {
    Command::new("promtool")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn output(mut command: Command, what: &str) -> std::process::Output {
    command.output().await.unwrap_or_else(|e| {
        panic!("cannot run {what} (is Debian's prometheus package installed? `make deps`): {e}")
    })
}

#[tokio::test]
async fn the_rules_pass_their_unit_tests_and_the_chart_ships_them() {
    let mut check = promtool();
    check.arg("check").arg("rules").arg(rules_file());
    let out = output(check, "promtool check rules").await;
    assert!(out.status.success(), "promtool check rules: {}", text(&out));

    let mut test = promtool();
    test.arg("test")
        .arg("rules")
        .arg(root().join("tests/prometheus/verbund-rules.test.yaml"));
    let out = output(test, "promtool test rules").await;
    assert!(out.status.success(), "promtool test rules: {}", text(&out));
    // Every alert of the rules file has a test case that expects it to fire.
    let tests = std::fs::read_to_string(root().join("tests/prometheus/verbund-rules.test.yaml"))
        .expect("rules tests");
    for alert in alerts() {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }

    let in_chart = root().join("charts/verbund/files/verbund-rules.yaml");
    assert_eq!(
        std::fs::read_to_string(rules_file()).expect("rules"),
        std::fs::read_to_string(&in_chart).unwrap_or_default(),
        "{} must be a copy of dashboards/verbund-rules.yaml",
        in_chart.display()
    );
}

/// The rules file as YAML.
fn rules() -> Value {
    let text = std::fs::read_to_string(rules_file()).expect("rules file");
    serde_yaml::from_str(&text).expect("rules YAML")
}

/// Every rule: (name, expression).
fn rule_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules()["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("alert or record");
            let expr = rule["expr"].as_str().expect("expr");
            out.push((name.to_string(), expr.to_string()));
        }
    }
    out
}

fn alerts() -> Vec<String> {
    rules()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// A panel query as Grafana would send it, with the dashboard's variables at "All" and the
/// time range at five minutes.
fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    // Longest names first: `$__range_s` before `$__range`.
    for (variable, value) in [
        ("${__range_s}", "300"),
        ("$__range_s", "300"),
        ("${__range}", "5m"),
        ("$__range", "5m"),
        ("${__rate_interval}", "1m"),
        ("$__rate_interval", "1m"),
        ("${__interval}", "1m"),
        ("$__interval", "1m"),
        ("${site}", ".*"),
        ("$site", ".*"),
        ("${tenant}", ".*"),
        ("$tenant", ".*"),
    ] {
        out = out.replace(variable, value);
    }
    assert!(!out.contains('$'), "unknown variable left in {out}");
    out
}

/// One panel query of a dashboard.
#[derive(Debug)]
struct PanelQuery {
    dashboard: String,
    panel: String,
    expr: String,
    may_be_empty: bool,
}

fn panel_queries() -> (usize, usize, Vec<PanelQuery>) {
    let mut dashboards = 0;
    let mut panels = 0;
    let mut queries = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        dashboards += 1;
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("dashboard"))
                .expect("dashboard JSON");
        let title = dashboard["title"].as_str().unwrap_or_default().to_string();
        let mut all = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            all.push(panel.clone());
            all.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        }
        for panel in all.iter().filter(|p| p["type"] != "row") {
            panels += 1;
            let may_be_empty = panel["description"]
                .as_str()
                .is_some_and(|d| d.contains(EMPTY_WHEN_HEALTHY));
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                queries.push(PanelQuery {
                    dashboard: title.clone(),
                    panel: panel["title"].as_str().unwrap_or_default().to_string(),
                    expr: target["expr"].as_str().expect("expr").to_string(),
                    may_be_empty,
                });
            }
        }
    }
    (dashboards, panels, queries)
}

/// Prometheus from Debian's package, scraping the operator every second and evaluating the
/// rules file every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(operator_admin: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("verbund-prometheus-")
            .tempdir()
            .expect("temp dir");
        let target = operator_admin.trim_start_matches("http://");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: verbund-operator\n    honor_labels: true\n\
             \x20   static_configs:\n      - targets: ['{target}']\n",
            rules_file().display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let port = free_port().expect("port");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus (`make deps` installs it): {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let prometheus = Self {
            child,
            url,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually(Duration::from_secs(60), "Prometheus ready", || async {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        prometheus
    }

    /// An instant query: `Ok(result)` or the error Prometheus gives (a parse error names the
    /// position).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", expr)],
        )
        .map_err(|e| e.to_string())?;
        let answer: Value = reqwest::get(url)
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{}: {}", answer["errorType"], answer["error"]));
        }
        let result = &answer["data"]["result"];
        Ok(match answer["data"]["resultType"].as_str() {
            Some("scalar") => vec![result.clone()],
            _ => result.as_array().cloned().unwrap_or_default(),
        })
    }

    async fn has_data(&self, expr: &str) -> bool {
        self.query(expr).await.is_ok_and(|r| !r.is_empty())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Waits until `probe` holds.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait::until(timeout, what, || {
        let holds = probe();
        async move { if holds.await { Ok(()) } else { Err("not yet") } }
    })
    .await;
}

async fn scrape(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

async fn promtool_check_metrics(exposition: &str) -> std::process::Output {
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (`make deps` installs Debian's prometheus package)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(exposition.as_bytes())
        .await
        .expect("write the scrape to promtool");
    drop(stdin);
    child.wait_with_output().await.expect("promtool output")
}

/// The metric families of a scrape, from its `# TYPE` lines.
fn families(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

async fn dashcheck(files: &[PathBuf]) -> std::process::Output {
    let bin = tools::bin_dir().expect("tools").join("dashcheck");
    let mut command = Command::new(&bin);
    command.args(files);
    output(command, &bin.display().to_string()).await
}

/// Lists, gets the pool's capacity and opens a watch, as a portal would; the watch stays open
/// while the returned stream lives.
async fn use_the_catalogue(
    port: u16,
) -> tonic::Streaming<verbund_operator::catalog::proto::ServiceEvent> {
    use verbund_operator::catalog::proto::service_catalog_client::ServiceCatalogClient;
    use verbund_operator::catalog::proto::{
        GetPoolCapacityRequest, ListServicesRequest, WatchServicesRequest,
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect()
        .await
        .expect("the catalogue answers");
    let mut catalog = ServiceCatalogClient::new(channel);
    for _ in 0..3 {
        catalog
            .list_services(ListServicesRequest::default())
            .await
            .expect("list");
        catalog
            .get_pool_capacity(GetPoolCapacityRequest {})
            .await
            .expect("capacity");
    }
    catalog
        .watch_services(WatchServicesRequest::default())
        .await
        .expect("watch")
        .into_inner()
}

#[tokio::test]
async fn dashboards_and_alerts_work_against_prometheus_scraping_the_operator() {
    // The dashboards decode as Grafana's dashboard model and follow the house rules.
    let files: Vec<PathBuf> = std::fs::read_dir(root().join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let checked = dashcheck(&files).await;
    assert!(checked.status.success(), "dashcheck: {}", text(&checked));
    println!("{}", text(&checked).trim());

    let pool = cluster::shared().await;
    let client = pool.client().await;
    crds::ensure_installed(&client).await;
    let catalog_port = free_port().expect("port");
    let catalog_addr = format!("--catalog-addr=127.0.0.1:{catalog_port}");
    let mut operator = OperatorProcess::start_as_operator(
        operator_binary!(),
        pool.kubeconfig_path(),
        &[&catalog_addr],
    )
    .await
    .expect("the operator starts");
    operator.await_ready(TIMEOUT).await.expect("ready");
    let admin = operator.admin_url();

    examples::apply_saarland(pool, TIMEOUT).await;
    // A portal reads the catalogue and keeps a watch open, for the catalogue's panels.
    let _watch = use_the_catalogue(catalog_port).await;
    let services: Api<PortalService> = Api::all(client.clone());
    let total = services
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len();

    // promtool check metrics on a live scrape: names, units, help texts.
    let exposition = scrape(&admin).await;
    let checked = promtool_check_metrics(&exposition).await;
    assert!(
        checked.status.success() && text(&checked).trim().is_empty(),
        "promtool check metrics: {}",
        text(&checked)
    );
    let families = families(&exposition);
    println!(
        "metric families ({}): {}",
        families.len(),
        families.join(" ")
    );
    for expected in [
        "verbund_site_allocatable",
        "verbund_tenant_quota_used",
        "verbund_portalservice_replicas_ready",
        "verbund_baseline_violations",
        "verbund_reconcile_duration_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(
            families.iter().any(|f| f == expected),
            "{expected} is not exported"
        );
    }
    let ready_series = exposition
        .lines()
        .filter(|l| l.starts_with("verbund_portalservice_replicas_ready{"))
        .count();
    assert_eq!(ready_series, total, "one series per portal service");

    let prometheus = Prometheus::start(&admin).await;
    eventually(
        TIMEOUT,
        "the operator scraped and the rules evaluated",
        || async {
            prometheus
                .has_data(r#"up{job="verbund-operator"} == 1"#)
                .await
                && prometheus
                    .has_data("verbund:tenant_quota_used:sum_by_organisation_kind")
                    .await
                && prometheus
                    .has_data("count_over_time(verbund_reconciles_total[1m]) > 2")
                    .await
        },
    )
    .await;

    // Every panel query parses and returns data.
    let (dashboards, panels, queries) = panel_queries();
    let mut failures = Vec::new();
    let mut empty_allowed = 0;
    for q in &queries {
        match prometheus.query(&substitute(&q.expr)).await {
            Err(error) => failures.push(format!(
                "{} / {}: {error}\n  {}",
                q.dashboard, q.panel, q.expr
            )),
            Ok(result) if result.is_empty() && !q.may_be_empty => failures.push(format!(
                "{} / {}: no data\n  {}",
                q.dashboard, q.panel, q.expr
            )),
            Ok(result) if result.is_empty() => empty_allowed += 1,
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "panel queries:\n{}",
        failures.join("\n")
    );
    println!(
        "{dashboards} dashboards, {panels} panels, {} queries checked; {empty_allowed} empty as their panel says",
        queries.len()
    );

    // Every rule parses; no alert holds on the healthy pool.
    let mut firing = Vec::new();
    for (name, expr) in rule_expressions() {
        match prometheus.query(&expr).await {
            Err(error) => failures.push(format!("{name}: {error}")),
            Ok(result) if !result.is_empty() && name.starts_with("Verbund") => {
                firing.push(format!("{name}: {result:?}"));
            }
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "rules:\n{}", failures.join("\n"));
    assert!(
        firing.is_empty(),
        "alerts on a healthy pool:\n{}",
        firing.join("\n")
    );
    println!("{} rules checked", rule_expressions().len());

    the_series_of_a_deleted_tenant_disappear(&client, &admin).await;
    drop(prometheus);
    operator.signal("TERM").await.expect("stop");
}

async fn the_series_of_a_deleted_tenant_disappear(client: &kube::Client, admin: &str) {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant",
        "metadata": { "name": "obs-probe" },
        "spec": {
            "displayName": "Probe", "organisation": { "kind": "State", "name": "Probe" },
            "namespaces": ["obs-probe-a"], "quota": { "cpu": "4", "memory": "8Gi", "pods": 20 },
            "deletionPolicy": "Delete",
        }
    }))
    .expect("tenant");
    tenants
        .create(&Default::default(), &tenant)
        .await
        .expect("create the tenant");
    wait::ready(&tenants, "obs-probe", TIMEOUT).await;
    let services: Api<PortalService> = Api::namespaced(client.clone(), "obs-probe-a");
    let service: PortalService = serde_json::from_value(json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService",
        "metadata": { "name": "probe", "namespace": "obs-probe-a" },
        "spec": { "image": "registry.saarland.de/kommunal/probe:1.0.0",
                  "ports": [{ "name": "http", "port": 8080 }] }
    }))
    .expect("service");
    services
        .create(&Default::default(), &service)
        .await
        .expect("create the service");
    wait::ready(&services, "probe", TIMEOUT).await;
    let probe_series = |exposition: &str| -> Vec<String> {
        exposition
            .lines()
            .filter(|l| {
                l.contains(r#"tenant="obs-probe""#) || l.contains(r#"namespace="obs-probe-a""#)
            })
            .map(str::to_string)
            .collect()
    };
    eventually(
        TIMEOUT,
        "the probe tenant's and service's series",
        || async {
            let series = probe_series(&scrape(admin).await);
            series.iter().any(|l| l.starts_with("verbund_tenant_info{"))
                && series
                    .iter()
                    .any(|l| l.starts_with("verbund_portalservice_replicas_ready{"))
        },
    )
    .await;

    tenants
        .delete("obs-probe", &DeleteParams::default())
        .await
        .expect("delete the tenant");
    eventually(TIMEOUT, "no series of the deleted tenant", || async {
        probe_series(&scrape(admin).await).is_empty()
    })
    .await;
}
