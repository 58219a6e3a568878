//! Installing Verbund as a data-centre operator does: the Helm chart (strict lint, its values
//! schema, a server-side dry run, `helm install`), two operator replicas running as the chart's
//! ServiceAccount with leader election, failover by SIGTERM and by `kill -9`, and the
//! permissions the operator used (from the API server's audit log) against the chart's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use verbund_operator::api::portal_service::PortalService;
use verbund_operator::api::{SecurityBaseline, Tenant};
use verbund_tests::audit::{self, Use};
use verbund_tests::cluster::{ClusterSpec, SimulatedCluster};
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{examples, identity, operator_binary, tools, wait};

const CHART: &str = "charts/verbund";
const RELEASE: &str = "verbund";
const NAMESPACE: &str = "verbund-system";
/// The chart's ServiceAccount (and lease) for the release `verbund`.
const ACCOUNT: &str = "verbund-operator";
/// The chart's default lease settings, which the replicas below use too.
const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;
const TIMEOUT: Duration = Duration::from_secs(180);

fn chart() -> PathBuf {
    tools::workspace_root().join(CHART)
}

async fn helm(args: &[&str]) -> std::process::Output {
    let helm = tools::binary("helm").expect("helm is built by the test bed");
    tokio::process::Command::new(helm)
        .args(args)
        .output()
        .await
        .expect("helm runs")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_chart_lints_strictly_and_refuses_bad_values_naming_the_field() {
    let chart = chart();
    let chart = chart.to_string_lossy();
    let lint = helm(&["lint", "--strict", &chart]).await;
    assert!(lint.status.success(), "helm lint --strict: {}", text(&lint));

    for (value, field) in [
        ("replicaCount=two", "/replicaCount"),
        (
            "leaderElection.leaseDurationSeconds=1",
            "/leaderElection/leaseDurationSeconds",
        ),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("adminPort=70000", "/adminPort"),
        (
            "metrics.serviceMonitor.interval=often",
            "/metrics/serviceMonitor/interval",
        ),
    ] {
        let out = helm(&["template", RELEASE, &chart, "--set", value]).await;
        assert!(!out.status.success(), "{value} must be refused");
        assert!(text(&out).contains(field), "{value}: {}", text(&out));
    }
    let unknown = helm(&["template", RELEASE, &chart, "--set", "replicas=2"]).await;
    assert!(
        text(&unknown).contains("additional properties 'replicas' not allowed"),
        "{}",
        text(&unknown)
    );
    let split_brain = helm(&[
        "template",
        RELEASE,
        &chart,
        "--set",
        "leaderElection.enabled=false",
    ])
    .await;
    assert!(
        !split_brain.status.success() && text(&split_brain).contains("leaderElection.enabled"),
        "two replicas without leader election must be refused: {}",
        text(&split_brain)
    );

    // The chart's CRDs are the generated ones (the operator crate's unit test checks them
    // against the types); here: byte for byte the same as crds/.
    let root = tools::workspace_root();
    for entry in std::fs::read_dir(root.join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name");
        let in_chart = root.join(CHART).join("crds").join(name);
        assert_eq!(
            std::fs::read_to_string(&path).expect("crd"),
            std::fs::read_to_string(&in_chart).unwrap_or_default(),
            "{} differs from crds/: run `make crds`",
            in_chart.display()
        );
    }
}

/// The rendered chart's rules for the operator: the ClusterRole and the leader-election Role.
fn granted_rules(rendered: &str) -> Vec<PolicyRule> {
    let mut rules = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).expect("YAML");
        let kind = value["kind"].as_str().unwrap_or_default();
        let name = value["metadata"]["name"].as_str().unwrap_or_default();
        let operators = (kind == "ClusterRole" && name == ACCOUNT)
            || (kind == "Role" && name == format!("{ACCOUNT}-leader-election"));
        if operators {
            let these: Vec<PolicyRule> =
                serde_json::from_value(value["rules"].clone()).expect("rules");
            rules.extend(these);
        }
    }
    rules
}

fn grants(rules: &[PolicyRule], used: &Use) -> bool {
    rules.iter().any(|rule| {
        rule.verbs.contains(&used.verb)
            && rule
                .api_groups
                .as_ref()
                .is_some_and(|g| g.contains(&used.group))
            && rule
                .resources
                .as_ref()
                .is_some_and(|r| r.contains(&used.resource))
    })
}

/// Every (verb, group, resource) the rules grant.
fn granted(rules: &[PolicyRule]) -> BTreeSet<Use> {
    let mut all = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    all.insert(Use {
                        verb: verb.clone(),
                        group: group.clone(),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
    all
}

async fn start_replica(kubeconfig: &Path, name: &str) -> OperatorProcess {
    let instance = format!("--instance={name}");
    let lease = format!("--lease-duration-seconds={LEASE_SECONDS}");
    let grace = format!("--lease-grace-seconds={GRACE_SECONDS}");
    let mut replica = OperatorProcess::start(
        operator_binary!(),
        kubeconfig,
        &[
            "--leader-elect",
            &instance,
            &lease,
            &grace,
            "--lease-namespace",
            NAMESPACE,
        ],
    )
    .await
    .expect("replica starts");
    // Followers are ready too: their caches are synced and they serve /metrics.
    replica
        .await_ready(Duration::from_secs(120))
        .await
        .expect("replica ready");
    replica
}

/// Waits until `replica` leads; returns how long that took.
async fn until_leading(replica: &OperatorProcess, since: Instant) -> Duration {
    wait::until(
        Duration::from_secs(4 * LEASE_SECONDS),
        "a new leader",
        || async {
            if replica.leads().await {
                Ok(since.elapsed())
            } else {
                Err(replica
                    .log_text()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string())
            }
        },
    )
    .await
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

async fn apply_examples(cluster: &SimulatedCluster, files: &[&str]) {
    for file in files {
        let path = examples::saarland_dir().join(file);
        cluster
            .kubectl()
            .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
            .await;
    }
}

/// Waits until every example PortalService is Ready for its generation.
async fn services_ready(cluster: &SimulatedCluster) {
    let client = cluster.client().await;
    for doc in examples::saarland() {
        if doc.kind() == "PortalService" {
            let api: Api<PortalService> =
                Api::namespaced(client.clone(), doc.namespace().expect("namespaced"));
            wait::ready(&api, doc.name(), TIMEOUT).await;
        }
    }
}

#[tokio::test]
async fn installed_with_helm_two_replicas_fail_over_and_use_only_what_the_chart_grants() {
    let mut spec = ClusterSpec::three_sites(2);
    spec.audit = true;
    let cluster = SimulatedCluster::start(spec)
        .await
        .unwrap_or_else(|e| panic!("cannot start the simulated cluster (kwokctl): {e}"));
    let client = cluster.client().await;
    // PolicyReports installed, so that the audit publishes them (its rights are used).
    verbund_tests::crds::ensure_policy_reports(&client).await;
    let kubectl = cluster.kubectl();
    let chart = chart();
    let chart = chart.to_string_lossy();
    let kubeconfig = cluster.kubeconfig_path().to_string_lossy().to_string();

    // The rendered chart, CRDs included, passes the API server's own validation.
    kubectl.ok(["create", "namespace", NAMESPACE]).await;
    let rendered = helm(&[
        "template",
        RELEASE,
        &chart,
        "-n",
        NAMESPACE,
        "--include-crds",
    ])
    .await;
    assert!(rendered.status.success(), "{}", text(&rendered));
    let manifest = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(manifest.path(), &rendered.stdout).expect("write");
    kubectl
        .ok([
            "apply",
            "--dry-run=server",
            "-f",
            &manifest.path().to_string_lossy(),
        ])
        .await;
    let rules = granted_rules(&String::from_utf8_lossy(&rendered.stdout));
    assert!(!rules.is_empty(), "the chart renders the operator's roles");

    // helm install, as the README says.
    let install = helm(&[
        "install",
        RELEASE,
        &chart,
        "-n",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig,
    ])
    .await;
    assert!(install.status.success(), "helm install: {}", text(&install));
    assert!(text(&install).contains("leader election on lease verbund-operator"));

    // The operator runs as the installed ServiceAccount, nothing more.
    let as_operator = identity::token_kubeconfig(
        &client,
        cluster.kubeconfig_path(),
        NAMESPACE,
        ACCOUNT,
        "chart-operator.kubeconfig",
    )
    .await
    .expect("token for the chart's ServiceAccount");
    let username = format!("system:serviceaccount:{NAMESPACE}:{ACCOUNT}");

    // Two replicas: exactly one leads; the follower is ready and writes nothing.
    let mut leader = start_replica(&as_operator, "replica-0").await;
    until_leading(&leader, Instant::now()).await;
    let mut follower = start_replica(&as_operator, "replica-1").await;
    apply_examples(
        &cluster,
        &["00-sites.yaml", "10-baselines.yaml", "20-tenants.yaml"],
    )
    .await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    for doc in examples::saarland() {
        if doc.kind() == "Tenant" {
            wait::ready(&tenants, doc.name(), TIMEOUT).await;
        }
    }
    apply_examples(
        &cluster,
        &[
            "30-services-land.yaml",
            "31-services-hochschulen.yaml",
            "32-services-saarbruecken.yaml",
            "33-services-kommunen.yaml",
        ],
    )
    .await;
    services_ready(&cluster).await;
    let baselines: Api<SecurityBaseline> = Api::all(client.clone());
    for doc in examples::saarland() {
        if doc.kind() == "SecurityBaseline" {
            wait::ready(&baselines, doc.name(), TIMEOUT).await;
        }
    }
    assert!(!follower.leads().await, "only one replica leads");
    assert_eq!(
        follower.metric("verbund_api_writes_total", &[]).await,
        0.0,
        "a follower writes nothing"
    );
    assert!(leader.metric("verbund_api_writes_total", &[]).await > 0.0);
    // The pool's series come from the leader alone, so sums over them count each object once.
    let sites = examples::saarland()
        .iter()
        .filter(|d| d.kind() == "Site")
        .count();
    assert_eq!(leader.metric("verbund_site_info", &[]).await, sites as f64);
    assert_eq!(follower.metric("verbund_site_info", &[]).await, 0.0);

    // Failover, several times each way; a change after each shows the new leader at work.
    let services: Api<PortalService> = Api::namespaced(client.clone(), "mibs-portal");
    let changed_service = "portal-frontend";
    let mut handovers = Vec::new();
    let mut takeovers = Vec::new();
    for round in 0..6 {
        let graceful = round % 2 == 0;
        assert_eq!(
            follower.metric("verbund_api_writes_total", &[]).await,
            0.0,
            "the follower wrote nothing before taking over"
        );
        let since = Instant::now();
        if graceful {
            leader.signal("TERM").await.expect("SIGTERM");
        } else {
            leader.signal("KILL").await.expect("SIGKILL");
        }
        let took = until_leading(&follower, since).await;
        let (status, log) = leader.wait(Duration::from_secs(30)).await.expect("exits");
        if graceful {
            assert!(status.success(), "a SIGTERM'd leader exits cleanly: {log}");
            assert!(log.contains("lease released"), "{log}");
            handovers.push(took);
        } else {
            takeovers.push(took);
        }
        leader = follower;
        follower = start_replica(&as_operator, &format!("replica-{}", round + 2)).await;
        let patch = serde_json::json!({
            "metadata": { "annotations": { "verbund.saarland.de/failover-round": round.to_string() } },
            "spec": { "env": [{ "name": "FAILOVER_ROUND", "value": round.to_string() }] }
        });
        services
            .patch(
                changed_service,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("change");
        wait::ready(&services, changed_service, TIMEOUT).await;
    }
    eprintln!(
        "failover (lease {LEASE_SECONDS} s, renewed {GRACE_SECONDS} s before expiry): \
         SIGTERM handover {handovers:?} (median {:?}); kill -9 takeover {takeovers:?} (median {:?})",
        median(handovers.clone()),
        median(takeovers.clone())
    );

    // An exposure withdrawn: the service's Ingress goes.
    let withdraw = serde_json::json!({ "spec": { "exposure": null } });
    services
        .patch(
            changed_service,
            &PatchParams::default(),
            &Patch::Merge(&withdraw),
        )
        .await
        .expect("withdraw the exposure");
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), "mibs-portal");
    wait::until(TIMEOUT, "the Ingress removed", || async {
        match ingresses.get_opt(changed_service).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Deletions, so that the operator's clean-up paths run too: a service, a tenant that
    // keeps its namespaces (Retain) and one that takes them along (Delete).
    services
        .delete(changed_service, &DeleteParams::default())
        .await
        .expect("delete service");
    let delete_policy = serde_json::json!({ "spec": { "deletionPolicy": "Delete" } });
    tenants
        .patch(
            "kreisstadt-neunkirchen",
            &PatchParams::default(),
            &Patch::Merge(&delete_policy),
        )
        .await
        .expect("deletionPolicy Delete");
    for tenant in ["stadt-st-ingbert", "kreisstadt-neunkirchen"] {
        tenants
            .delete(tenant, &DeleteParams::default())
            .await
            .expect("delete tenant");
    }
    wait::until(TIMEOUT, "both tenants gone", || async {
        let mut left = Vec::new();
        for tenant in ["stadt-st-ingbert", "kreisstadt-neunkirchen"] {
            if !matches!(tenants.get_opt(tenant).await, Ok(None)) {
                left.push(tenant);
            }
        }
        if left.is_empty() { Ok(()) } else { Err(left) }
    })
    .await;

    // Least privilege, from the API server's audit log: nothing the operator did was refused
    // or outside the chart's rules; what the rules grant but the run never used is listed.
    let mut usage = audit::usage(&cluster.audit_log(), &username);
    // Rights the API server checks without a request of their own, implied by requests it
    // granted: binding tenant admins to verbund-tenant-admin (`bind`), keeping that role as
    // defined although its rights are not the operator's (`escalate`), and naming Tenants as
    // the isolation policy's parameter in a binding (`get` on tenants).
    for (made, implied_verb, group, resource) in [
        (
            "rolebindings",
            "bind",
            "rbac.authorization.k8s.io",
            "clusterroles",
        ),
        (
            "clusterroles",
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
        ),
        (
            "validatingadmissionpolicybindings",
            "get",
            "verbund.saarland.de",
            "tenants",
        ),
    ] {
        if usage
            .made
            .keys()
            .any(|u| u.verb == "patch" && u.resource == made)
        {
            usage
                .made
                .entry(Use {
                    verb: implied_verb.into(),
                    group: group.into(),
                    resource: resource.into(),
                })
                .or_default();
        }
    }
    assert!(!usage.made.is_empty(), "the audit log records the operator");
    assert!(
        usage.forbidden.is_empty(),
        "refused as forbidden: {:?}",
        usage.forbidden
    );
    let outside: Vec<String> = usage
        .made
        .keys()
        .filter(|u| !grants(&rules, u))
        .map(|u| u.to_string())
        .collect();
    assert!(outside.is_empty(), "used but not granted: {outside:?}");
    let used: BTreeSet<Use> = usage.made.keys().cloned().collect();
    let unused: Vec<String> = granted(&rules)
        .difference(&used)
        .map(|u| u.to_string())
        .collect();
    let mut table = BTreeMap::new();
    for (used, count) in &usage.made {
        table.insert(used.to_string(), *count);
    }
    eprintln!("RBAC used (requests): {table:#?}\nRBAC granted, not used in this run: {unused:#?}");
    let undeclared: Vec<&String> = unused
        .iter()
        .filter(|u| {
            !verbund_operator::rbac::NOT_EXERCISED
                .iter()
                .any(|(what, _)| what == u)
        })
        .collect();
    assert!(
        undeclared.is_empty(),
        "granted, never used, and not explained in rbac::NOT_EXERCISED: {undeclared:?}"
    );
    drop((leader, follower));
}
