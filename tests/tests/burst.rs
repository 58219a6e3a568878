//! A burst as a new user makes one: many services in a new tenant, the tenant deleted, many
//! services again. Afterwards every status says what the cluster holds: each PortalService's
//! ready pods, each Tenant's services and use, each Site's pods. (The caches once froze here:
//! one slow subscriber could stall a watch for every controller.)

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use verbund_operator::api::{PortalService, Site, Tenant};
use verbund_operator::conditions::{self, kind};
use verbund_tests::cluster::{ClusterSpec, NodeShape, SimulatedCluster, ZONE_LABEL};
use verbund_tests::{crds, examples, operator, wait};

const TIMEOUT: Duration = Duration::from_secs(300);

fn tenant(name: &str, namespaces: &[String]) -> serde_json::Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant",
        "metadata": { "name": name },
        "spec": {
            "displayName": name, "organisation": { "kind": "State", "name": name },
            "namespaces": namespaces, "quota": { "cpu": "100", "memory": "200Gi", "pods": 1000 },
            "maxProtectionLevel": "Normal", "deletionPolicy": "Delete",
        }
    })
}

fn service(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService",
        "metadata": { "name": name },
        "spec": {
            "image": "registry.saarland.de/portal/formular:1.0.0",
            "ports": [{ "name": "http", "port": 8080 }],
            "replicas": { "min": 1, "max": 2 },
            "resources": { "cpu": "10m", "memory": "16Mi", "cpuLimit": "100m", "memoryLimit": "64Mi" },
        }
    })
}

/// Creates a tenant with two namespaces and `count` services spread over them.
async fn burst(client: &Client, name: &str, count: usize) -> Vec<String> {
    let namespaces: Vec<String> = (0..2).map(|i| format!("{name}-{i}")).collect();
    let tenants: Api<Tenant> = Api::all(client.clone());
    let params = PatchParams::apply("verbund-tests");
    tenants
        .patch(name, &params, &Patch::Apply(tenant(name, &namespaces)))
        .await
        .expect("tenant");
    wait::ready(&tenants, name, TIMEOUT).await;
    let creates = (0..count).map(|i| {
        let api: Api<PortalService> = Api::namespaced(client.clone(), &namespaces[i % 2]);
        let params = params.clone();
        async move {
            let name = format!("dienst-{i:03}");
            api.patch(&name, &params, &Patch::Apply(service(&name)))
                .await
                .map(|_| ())
        }
    });
    for result in futures::future::join_all(creates).await {
        result.expect("service");
    }
    namespaces
}

/// Every PortalService observed and Ready.
async fn all_ready(client: &Client, count: usize) {
    let services: Api<PortalService> = Api::all(client.clone());
    wait::until(TIMEOUT, &format!("{count} services Ready"), || {
        let services = services.clone();
        async move {
            let list = services
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .filter(|ps| {
                    ps.status.as_ref().is_some_and(|s| {
                        s.observed_generation == ps.metadata.generation
                            && conditions::is_true(&s.conditions, kind::READY)
                    })
                })
                .count();
            if list.items.len() == count && ready == count {
                Ok(())
            } else {
                Err(format!("{ready} of {} Ready", list.items.len()))
            }
        }
    })
    .await;
}

/// What the cluster holds, and what the statuses say of it; empty when they agree.
async fn disagreements(client: &Client) -> Vec<String> {
    let mut wrong = Vec::new();
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let running = |p: &&Pod| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    };
    // Services: ready pods.
    for ps in Api::<PortalService>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("services")
        .items
    {
        let ns = ps.namespace().unwrap_or_default();
        let actual = pods
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| p.labels().get("app.kubernetes.io/instance") == Some(&ps.name_any()))
            .filter(|p| ready(p))
            .count() as i32;
        let said = ps.status.as_ref().map_or(-1, |s| s.replicas.ready);
        if said != actual {
            wrong.push(format!(
                "{ns}/{}: status {said} ready, cluster {actual}",
                ps.name_any()
            ));
        }
    }
    // Tenants: services and pods used.
    for t in Api::<Tenant>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("tenants")
        .items
    {
        let namespaces = &t.spec.namespaces;
        let pods_used = pods
            .iter()
            .filter(|p| p.namespace().is_some_and(|ns| namespaces.contains(&ns)))
            .filter(running)
            .count();
        let status = t.status.clone().unwrap_or_default();
        let said = status.quota.used.get("pods").map(|q| q.0.clone());
        if said != Some(pods_used.to_string()) {
            wrong.push(format!(
                "tenant {}: status {said:?} pods, cluster {pods_used}",
                t.name_any()
            ));
        }
    }
    // Sites: pods on their nodes.
    let zone_of: BTreeMap<String, String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    for site in Api::<Site>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("sites")
        .items
    {
        let zone = site.name_any();
        let actual = pods
            .iter()
            .filter(running)
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .and_then(|n| zone_of.get(n))
                    == Some(&zone)
            })
            .count();
        let said = site
            .status
            .as_ref()
            .and_then(|s| s.requested.get("pods"))
            .map(|q| q.0.clone());
        if said != Some(actual.to_string()) {
            wrong.push(format!(
                "site {zone}: status {said:?} pods, cluster {actual}"
            ));
        }
    }
    wrong
}

#[tokio::test]
async fn after_a_burst_every_status_says_what_the_cluster_holds() {
    verbund_tests::init_logging();
    let mut spec = ClusterSpec::three_sites(2);
    spec.node = NodeShape {
        cpu: "64".into(),
        memory: "512Gi".into(),
        pods: "250".into(),
    };
    spec.service_ip_range = Some("10.96.0.0/16".into());
    let cluster = SimulatedCluster::start(spec)
        .await
        .unwrap_or_else(|e| panic!("cannot start the simulated cluster: {e}"));
    let client = cluster.client().await;
    crds::install(&client).await;
    for file in ["00-sites.yaml", "10-baselines.yaml"] {
        let path = examples::saarland_dir().join(file);
        cluster
            .kubectl()
            .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
            .await;
    }
    let operator = operator::InProcessOperator::start(cluster.kubeconfig_path())
        .await
        .expect("operator");

    let first = burst(&client, "erste-welle", 120).await;
    all_ready(&client, 120).await;
    Api::<Tenant>::all(client.clone())
        .delete("erste-welle", &DeleteParams::default())
        .await
        .expect("tenant deleted");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait::until(TIMEOUT, "the first tenant's namespaces gone", || {
        let namespaces = namespaces.clone();
        let first = first.clone();
        async move {
            let mut left = Vec::new();
            for ns in &first {
                if !matches!(namespaces.get_opt(ns).await, Ok(None)) {
                    left.push(ns.clone());
                }
            }
            if left.is_empty() { Ok(()) } else { Err(left) }
        }
    })
    .await;
    burst(&client, "zweite-welle", 80).await;
    all_ready(&client, 80).await;

    // Within seconds (figures are paced), every status agrees with the cluster.
    wait::until(
        Duration::from_secs(60),
        "statuses true to the cluster",
        || async {
            let wrong = disagreements(&client).await;
            if wrong.is_empty() { Ok(()) } else { Err(wrong) }
        },
    )
    .await;
    let metrics = operator.metrics().await;
    assert!(
        metrics.contains("verbund_cache_objects{cache=\"pods\"}"),
        "the caches report their size"
    );
    operator.stop();
}
