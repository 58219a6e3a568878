//! What the fault scenarios share: a tenant and its services, the operator's write counter,
//! and the invariants every scenario ends with (nothing lost, nothing twice, guard rails kept).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, Pod, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use verbund_operator::api::PortalService;
use verbund_operator::conditions::{self, kind};

use crate::cluster::{self, SimulatedCluster};
use crate::operator::OperatorProcess;
use crate::{crds, examples, wait};

pub const TIMEOUT: Duration = Duration::from_secs(300);
/// Services created at once in the mass create.
pub const MASS: usize = 40;
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=verbund-operator";

/// A Normal-protection service of `min` replicas (at most one more).
pub fn service(name: &str, min: i32) -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService", "metadata": { "name": name },
        "spec": {
            "image": "registry.saarland.de/portal/test@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ports": [{ "name": "http", "port": 8080 }],
            "replicas": { "min": min, "max": min + 1 },
            "resources": { "cpu": "50m", "memory": "64Mi", "cpuLimit": "100m", "memoryLimit": "128Mi" },
            "protectionLevel": "Normal",
        }
    })
}

/// The fault scenarios' tenant: Normal protection on every site, 16 cores; returns its
/// namespace.
pub async fn tenant(client: &Client, prefix: &str) -> String {
    crate::tenancy::tenant(client, prefix, "Normal", &[], "16").await
}

/// Applies `body` as the tests' field manager.
pub async fn apply(api: &Api<PortalService>, body: &Value) {
    crate::apply(api, body).await;
}

/// Applies `count` services named `dienst-NN` from `first` on.
pub async fn create(services: &Api<PortalService>, first: usize, count: usize) {
    for i in first..first + count {
        apply(services, &service(&format!("dienst-{i:02}"), 1)).await;
    }
}

/// Waits until the operator has written the first Deployment in `ns`: it is at work.
pub async fn first_child(client: &Client, ns: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait::until(TIMEOUT, "the first Deployment written", || async {
        let n = deployments
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if n > 0 {
            Ok(())
        } else {
            Err("none yet".to_string())
        }
    })
    .await;
}

/// The operator's writes so far, by kind (its own counter).
pub async fn writes(operator: &OperatorProcess) -> BTreeMap<String, f64> {
    let text = operator.scrape().await.expect("the operator's metrics");
    let mut by_kind = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("verbund_api_writes_total{"))
    {
        let kind = line
            .split("kind=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *by_kind.entry(kind).or_default() += value;
    }
    by_kind
}

/// Waits until the operator has written nothing for `calm` (paced status figures included),
/// so that what it writes next is caused by what the test does next.
pub async fn quiet(operator: &OperatorProcess, calm: Duration) {
    let mut last = total(&writes(operator).await);
    let mut since = std::time::Instant::now();
    let deadline = since + TIMEOUT;
    while since.elapsed() < calm {
        assert!(
            std::time::Instant::now() < deadline,
            "the operator kept writing for {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = total(&writes(operator).await);
        if now != last {
            last = now;
            since = std::time::Instant::now();
        }
    }
}

/// All writes of a `writes` reading.
pub fn total(w: &BTreeMap<String, f64>) -> f64 {
    w.values().sum()
}

/// Every service of `api` (and `count` of them) Ready for its generation.
pub async fn all_ready(api: &Api<PortalService>, count: usize) {
    all_ready_within(api, count, TIMEOUT).await;
}

/// Every service of `api` (and `count` of them) Ready for its generation within `timeout`.
pub async fn all_ready_within(api: &Api<PortalService>, count: usize, timeout: Duration) {
    wait::until(timeout, &format!("{count} services Ready"), || async {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let is_ready = |ps: &PortalService| {
            ps.status.as_ref().is_some_and(|s| {
                s.observed_generation == ps.metadata.generation
                    && conditions::is_true(&s.conditions, kind::READY)
            })
        };
        let waiting: Vec<&PortalService> = list.items.iter().filter(|ps| !is_ready(ps)).collect();
        if list.items.len() == count && waiting.is_empty() {
            return Ok(());
        }
        // The first one still waiting, as it stands, and what the API server says of its
        // workload: what a timeout should show, to tell a stale status from a slow pool.
        let mut first = String::new();
        if let Some(ps) = waiting.first() {
            let status = ps.status.as_ref();
            first = format!(
                "; {} (generation {:?}, observed {:?}): {:?}; the API server: {}",
                ps.name_any(),
                ps.metadata.generation,
                status.and_then(|s| s.observed_generation),
                status.and_then(|s| conditions::find(&s.conditions, kind::READY)),
                workload(api, ps).await
            );
        }
        Err(format!(
            "{} of {} Ready{first}",
            list.items.len() - waiting.len(),
            list.items.len(),
        ))
    })
    .await;
}

/// The Deployment's replica counts and each pod's phase and readiness, as the API server has
/// them, for service `ps`.
async fn workload(api: &Api<PortalService>, ps: &PortalService) -> String {
    let ns = ps.namespace().unwrap_or_default();
    let name = ps.name_any();
    let client = api.clone().into_client();
    let deployment = match Api::<Deployment>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await
    {
        Ok(Some(d)) => {
            let s = d.status.unwrap_or_default();
            format!(
                "Deployment replicas {:?}, ready {:?}",
                d.spec.replicas, s.ready_replicas
            )
        }
        Ok(None) => "no Deployment".to_string(),
        Err(e) => format!("Deployment: {e}"),
    };
    let selector = format!("{}={name}", verbund_operator::domain::pods::INSTANCE_LABEL);
    let pods = match Api::<Pod>::namespaced(client, &ns)
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .map(|p| {
                let status = p.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                format!(
                    "{} {} on {} ready={ready}",
                    p.name_any(),
                    status.phase.unwrap_or_default(),
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("pods: {e}"),
    };
    format!("{deployment}; pods [{pods}]")
}

/// Names of the objects of one kind in `ns` that Verbund manages, with their owner's uid.
pub async fn children<K>(client: &Client, ns: &str) -> Vec<(String, Option<String>)>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(MANAGED_BY))
        .await
        .expect("children")
        .items
        .iter()
        .map(|o| {
            (
                o.name_any(),
                o.owner_references().first().map(|r| r.uid.clone()),
            )
        })
        .collect()
}

/// Nothing lost, nothing twice: each service has exactly one of each child, owned by it, no
/// managed child is without a live owner, and the namespace keeps its guard rails.
pub async fn invariants(client: &Client, ns: &str) {
    let services: BTreeMap<String, String> = Api::<PortalService>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("services")
        .items
        .iter()
        .map(|ps| (ps.name_any(), ps.uid().unwrap_or_default()))
        .collect();
    let kinds = [
        ("Deployment", children::<Deployment>(client, ns).await),
        ("Service", children::<Service>(client, ns).await),
        (
            "ServiceAccount",
            children::<ServiceAccount>(client, ns).await,
        ),
        (
            "HorizontalPodAutoscaler",
            children::<HorizontalPodAutoscaler>(client, ns).await,
        ),
        (
            "PodDisruptionBudget",
            children::<PodDisruptionBudget>(client, ns).await,
        ),
        ("Ingress", children::<Ingress>(client, ns).await),
    ];
    let owners: Vec<&String> = services.values().collect();
    // Every service has a Deployment, a Service and a ServiceAccount; an autoscaler, a
    // disruption budget and an Ingress only when its spec asks for them. Never two.
    let required = ["Deployment", "Service", "ServiceAccount"];
    for (kind, objects) in &kinds {
        for service in services.keys() {
            let n = objects.iter().filter(|(name, _)| name == service).count();
            if required.contains(kind) {
                assert_eq!(n, 1, "{ns}: {n} {kind} of service {service}");
            } else {
                assert!(n <= 1, "{ns}: {n} {kind} of service {service}");
            }
        }
        for (name, owner) in objects {
            // Children of the namespace itself (the default-deny, the tenant's own) have no
            // PortalService owner; a service's children must have a live one.
            if services.contains_key(name) {
                assert!(
                    owner.as_ref().is_some_and(|uid| owners.contains(&uid)),
                    "{ns}: {kind} {name} is not owned by its live service"
                );
            }
        }
    }
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace");
    assert!(
        namespace
            .labels()
            .contains_key("verbund.saarland.de/baseline"),
        "{ns} lost its baseline label"
    );
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(MANAGED_BY))
        .await
        .expect("quotas");
    assert!(!quotas.items.is_empty(), "{ns} lost its quota");
    let limits = Api::<LimitRange>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(MANAGED_BY))
        .await
        .expect("limit ranges");
    assert!(!limits.items.is_empty(), "{ns} lost its LimitRange");
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(MANAGED_BY))
        .await
        .expect("network policies");
    assert!(
        policies.items.len() > services.len(),
        "{ns}: the namespace's own network policies besides the services'"
    );
}

/// Starts `binary` (`operator_binary!()`) with `kubeconfig` and waits until it is ready.
pub async fn start_operator(
    binary: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> OperatorProcess {
    let mut operator = OperatorProcess::start(binary, kubeconfig, args)
        .await
        .expect("operator starts");
    operator.await_ready(TIMEOUT).await.expect("operator ready");
    operator
}

/// The binary's simulated pool with the example's sites and baselines, and the kubeconfig of
/// the operator's ServiceAccount.
pub async fn pool() -> (&'static SimulatedCluster, Client, std::path::PathBuf) {
    let pool = cluster::shared().await;
    let client = pool.client().await;
    crds::ensure_installed(&client).await;
    for file in ["00-sites.yaml", "10-baselines.yaml"] {
        let path = examples::saarland_dir().join(file);
        pool.kubectl()
            .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
            .await;
    }
    let kubeconfig = crate::operator::as_operator(pool.kubeconfig_path())
        .await
        .expect("the operator's account");
    (pool, client, kubeconfig)
}
