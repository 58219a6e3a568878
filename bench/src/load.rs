//! What the bench puts on the pool, and how it watches the pool converge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use verbund_operator::api::{PortalService, Tenant};
use verbund_operator::conditions::{self, kind};

/// How many requests the bench itself keeps in flight.
pub const CONCURRENCY: usize = 32;

const FIELD_MANAGER: &str = "verbund-bench";

/// The tenant `i` of a tier.
pub fn tenant_name(i: usize) -> String {
    format!("bench-t{i:03}")
}

/// The namespace `j` of tenant `i`.
pub fn namespace_name(i: usize, j: usize) -> String {
    format!("bench-t{i:03}-n{j:02}")
}

/// A tenant of normal protection with `namespaces` namespaces and room for what it runs.
pub fn tenant(i: usize, namespaces: usize) -> Value {
    let names: Vec<String> = (0..namespaces).map(|j| namespace_name(i, j)).collect();
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant",
        "metadata": { "name": tenant_name(i) },
        "spec": {
            "displayName": format!("Gemeinde {i}"),
            "organisation": { "kind": "Municipality", "name": format!("Gemeinde {i}"), "regionalKey": format!("10041{i:07}") },
            "namespaces": names,
            "quota": { "cpu": "1000", "memory": "4Ti", "pods": 10000 },
            "maxProtectionLevel": "Normal",
            "deletionPolicy": "Delete",
        }
    })
}

/// Portal service `k` in `namespace`, with `replicas` pods.
pub fn service(namespace: &str, k: usize, replicas: i32) -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService",
        "metadata": { "name": format!("dienst-{k:04}"), "namespace": namespace },
        "spec": {
            "image": "registry.saarland.de/portal/formular:1.0.0",
            "ports": [{ "name": "http", "port": 8080 }],
            "replicas": { "min": replicas, "max": replicas + 2 },
            "resources": { "cpu": "10m", "memory": "16Mi", "cpuLimit": "100m", "memoryLimit": "64Mi" },
            "protectionLevel": "Normal",
            "env": [{ "name": "REVISION", "value": "1" }],
        }
    })
}

/// Applies `objects` (server-side, as the bench) with bounded concurrency.
pub async fn apply_all(client: &Client, objects: Vec<Value>) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(objects)
        .map(|object| {
            let client = client.clone();
            async move { apply(&client, &object).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Applies one of Verbund's objects.
pub async fn apply(client: &Client, object: &Value) -> anyhow::Result<()> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match object["kind"].as_str() {
        Some("Tenant") => {
            Api::<Tenant>::all(client.clone())
                .patch(name, &params, &Patch::Apply(object))
                .await?;
        }
        Some("PortalService") => {
            let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
            Api::<PortalService>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Apply(object))
                .await?;
        }
        other => anyhow::bail!("the bench applies no {other:?}"),
    }
    Ok(())
}

/// Every tenant Ready for its generation.
pub async fn tenants_ready(client: &Client, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<Tenant> = Api::all(client.clone());
    until(timeout, "tenants Ready", || async {
        let list = api.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|t| t.name_any().starts_with("bench-t"))
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.observed_generation == t.metadata.generation
                        && conditions::is_true(&s.conditions, kind::READY)
                })
            })
            .count();
        Ok((ready >= count, format!("{ready} of {count}")))
    })
    .await
}

/// How far the services are: observed for their generation, and Ready too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub services: usize,
    pub observed: usize,
    pub ready: usize,
}

pub async fn progress(client: &Client) -> anyhow::Result<Progress> {
    let api: Api<PortalService> = Api::all(client.clone());
    let list = api.list(&ListParams::default()).await?;
    let mut p = Progress {
        services: list.items.len(),
        ..Progress::default()
    };
    for ps in &list.items {
        let Some(status) = ps.status.as_ref() else {
            continue;
        };
        if status.observed_generation == ps.metadata.generation {
            p.observed += 1;
            if conditions::is_true(&status.conditions, kind::READY) {
                p.ready += 1;
            }
        }
    }
    Ok(p)
}

/// Waits until every one of `count` services is observed and Ready; returns the time taken.
pub async fn converged(
    client: &Client,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    until(timeout, "services converged", || async {
        let p = progress(client).await?;
        Ok((p.ready >= count && p.observed >= count, format!("{p:?}")))
    })
    .await?;
    Ok(start.elapsed())
}

/// Re-evaluates `probe` every 500 ms until it says done; fails with its last word after
/// `timeout`.
pub async fn until<F, Fut>(timeout: Duration, what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<(bool, String)>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok((true, _)) => return Ok(()),
            Ok((false, now)) => now,
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{what}: not reached within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The operator's object mix for one service, written straight by `client` into `namespace`:
/// what W is measured with.
pub fn child_mix(namespace: &str, k: usize) -> Vec<(String, Value)> {
    let name = format!("w-{k:05}");
    let labels = json!({ "app.kubernetes.io/instance": name });
    let meta = json!({ "name": name, "namespace": namespace, "labels": labels });
    vec![
        (
            "serviceaccounts".into(),
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": false }),
        ),
        (
            "deployments".into(),
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 0, "selector": { "matchLabels": labels },
            "template": { "metadata": { "labels": labels }, "spec": { "containers": [{ "name": "c", "image": "registry.saarland.de/portal/w:1" }] } } } }),
        ),
        (
            "services".into(),
            json!({ "apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": { "selector": labels, "ports": [{ "name": "http", "port": 8080 }] } }),
        ),
        (
            "horizontalpodautoscalers".into(),
            json!({ "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta, "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name }, "minReplicas": 1, "maxReplicas": 2 } }),
        ),
        (
            "poddisruptionbudgets".into(),
            json!({ "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta, "spec": { "maxUnavailable": 1, "selector": { "matchLabels": labels } } }),
        ),
        (
            "networkpolicies".into(),
            json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": { "podSelector": { "matchLabels": labels }, "policyTypes": ["Ingress"] } }),
        ),
    ]
}

/// Writes `services` copies of the child mix with `client` (the operator's identity) and
/// returns writes per second: the API server's write rate W for this mix and this client.
pub async fn write_rate(client: &Client, namespace: &str, services: usize) -> anyhow::Result<f64> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await?;
    let writes: Vec<(String, Value)> = (0..services)
        .flat_map(|k| child_mix(namespace, k))
        .collect();
    let count = writes.len();
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(writes)
        .map(|(plural, object)| {
            let client = client.clone();
            async move {
                let resource = kube::discovery::ApiResource {
                    group: object["apiVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .rsplit_once('/')
                        .map(|(g, _)| g.to_string())
                        .unwrap_or_default(),
                    version: object["apiVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    api_version: object["apiVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    kind: object["kind"].as_str().unwrap_or_default().to_string(),
                    plural,
                };
                let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
                    client,
                    object["metadata"]["namespace"].as_str().unwrap_or_default(),
                    &resource,
                );
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = start.elapsed();
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Api::<Namespace>::all(client.clone())
        .delete(namespace, &DeleteParams::background())
        .await?;
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// Deletes a few running pods of the bench's tenants other than `spared` every `every`, until
/// `stop`: churn the operator has to follow while it serves changes elsewhere.
pub async fn churn(
    client: Client,
    spared: String,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut deleted = 0;
    while !stop.is_cancelled() {
        if let Ok(list) = pods
            .list(
                &ListParams::default()
                    .labels("app.kubernetes.io/managed-by=verbund-operator")
                    .limit(200),
            )
            .await
        {
            for pod in list
                .items
                .iter()
                .filter(|p| !p.namespace().unwrap_or_default().starts_with(&spared))
                .take(3)
            {
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                if api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await
                    .is_ok()
                {
                    deleted += 1;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => {}
        }
    }
    deleted
}

/// Percentiles of a set of durations, in seconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i.min(samples.len() - 1)].as_secs_f64()
        };
        Self {
            samples: samples.len(),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Changes `services` one after the other (a new env value) and measures change ->
/// observedGeneration and change -> Ready for each.
pub async fn change_latencies(
    client: &Client,
    services: &[(String, String)],
    revision: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut observed = Vec::new();
    let mut ready = Vec::new();
    for (namespace, name) in services {
        let api: Api<PortalService> = Api::namespaced(client.clone(), namespace);
        let patch =
            json!({ "spec": { "env": [{ "name": "REVISION", "value": revision.to_string() }] } });
        let start = Instant::now();
        let changed = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let generation = changed.metadata.generation;
        let mut seen_observed = None;
        let deadline = start + Duration::from_secs(120);
        loop {
            let ps = api.get(name).await?;
            let status = ps.status.unwrap_or_default();
            if status.observed_generation >= generation {
                seen_observed.get_or_insert_with(|| start.elapsed());
                if conditions::is_true(&status.conditions, kind::READY) {
                    ready.push(start.elapsed());
                    break;
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("{namespace}/{name} did not converge after a change within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        observed.extend(seen_observed);
    }
    Ok((observed, ready))
}

/// The namespaces each tenant of a tier has, by tenant.
pub fn layout(tenants: usize, namespaces: usize) -> BTreeMap<String, Vec<String>> {
    (0..tenants)
        .map(|i| {
            (
                tenant_name(i),
                (0..namespaces).map(|j| namespace_name(i, j)).collect(),
            )
        })
        .collect()
}
