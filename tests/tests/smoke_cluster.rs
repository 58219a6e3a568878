//! The cluster-mode test bed works: the scheduler spreads a Deployment over three sites of
//! fake nodes and the kwok controller runs its pods.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use verbund_tests::cluster::{self, ZONE_LABEL};

#[tokio::test]
async fn six_replicas_spread_two_per_site_and_run() {
    let cluster = cluster::shared().await;
    let ns = cluster.namespace("spread").await;

    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "servicekonto" },
        "spec": {
            "replicas": 6,
            "selector": { "matchLabels": { "app": "servicekonto" } },
            "template": {
                "metadata": { "labels": { "app": "servicekonto" } },
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "registry.example/servicekonto:1.0",
                        "resources": { "requests": { "cpu": "500m", "memory": "512Mi" } }
                    }],
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": ZONE_LABEL,
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": { "matchLabels": { "app": "servicekonto" } }
                    }]
                }
            }
        }
    }))
    .expect("valid deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .expect("created");

    let nodes: Api<Node> = Api::all(cluster.client().await);
    let zone_of: BTreeMap<String, String> = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| {
            let zone = n.metadata.labels.as_ref()?.get(ZONE_LABEL)?.clone();
            Some((n.metadata.name?, zone))
        })
        .collect();
    assert_eq!(zone_of.len(), 6, "three sites with two fake nodes each");

    let pods: Api<Pod> = ns.api();
    let per_site = verbund_tests::wait::until(Duration::from_secs(90), "6 Running pods", || {
        let pods = pods.clone();
        let zone_of = zone_of.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=servicekonto"))
                .await;
            let list = list.map_err(|e| e.to_string())?;
            let mut per_site: BTreeMap<String, usize> = BTreeMap::new();
            let mut running = 0;
            for pod in &list.items {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
                if let (Some("Running"), Some(node)) = (phase, node) {
                    running += 1;
                    let zone = zone_of
                        .get(node)
                        .ok_or(format!("pod on unknown node {node}"))?;
                    *per_site.entry(zone.clone()).or_default() += 1;
                }
            }
            if running == 6 {
                Ok(per_site)
            } else {
                Err(format!("{running} running: {per_site:?}"))
            }
        }
    })
    .await;

    let expected: BTreeMap<String, usize> = [("rz-ego", 2), ("rz-land", 2), ("rz-uds", 2)]
        .map(|(z, n)| (z.to_string(), n))
        .into();
    assert_eq!(per_site, expected);
}
