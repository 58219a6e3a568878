//! The Site controller on a kwok-simulated cluster: node counts, allocatable and requested
//! resources follow the fake nodes and the pods the scheduler places on them; cordoning shows.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use verbund_operator::api::Site;
use verbund_operator::quantity::Amount;
use verbund_tests::cluster::{self, ZONE_LABEL};
use verbund_tests::{crds, examples, operator, wait};

const SITES: [&str; 3] = ["rz-land", "rz-uds", "rz-ego"];

/// CPU requested by running pods on each zone's nodes, as the API server lists them.
async fn requested_by_zone(client: &Client) -> BTreeMap<String, Amount> {
    let zone_of: BTreeMap<String, String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    let mut sums = BTreeMap::new();
    for pod in Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
    {
        let Some(zone) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| zone_of.get(n))
        else {
            continue;
        };
        if matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        for container in pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
        {
            let cpu = container
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("cpu").cloned());
            *sums.entry(zone.clone()).or_insert(Amount::ZERO) += cpu
                .map(|q| Amount::of(&q).expect("cpu"))
                .unwrap_or_default();
        }
    }
    sums
}

fn cpu(
    status: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Amount {
    status
        .get("cpu")
        .map(|q| Amount::of(q).expect("cpu"))
        .unwrap_or_default()
}

#[tokio::test]
async fn site_status_follows_nodes_pods_and_cordons() {
    let cluster = cluster::shared().await;
    let client = cluster.client().await;
    crds::ensure_installed(&client).await;
    cluster
        .kubectl()
        .ok([
            "apply",
            "--server-side",
            "-f",
            &examples::saarland_dir()
                .join("00-sites.yaml")
                .to_string_lossy(),
        ])
        .await;
    operator::in_process(cluster.kubeconfig_path()).await;
    let sites: Api<Site> = Api::all(client.clone());

    // Each site: two fake nodes of 32 CPUs, all Ready.
    for name in SITES {
        let site = wait::ready(&sites, name, Duration::from_secs(60)).await;
        let status = site.status.expect("status");
        assert_eq!((status.nodes.total, status.nodes.ready), (2, 2), "{name}");
        assert_eq!(status.zone.as_deref(), Some(name));
        assert_eq!(
            cpu(&status.capacity),
            Amount::parse("64").expect("64"),
            "{name}"
        );
        assert_eq!(
            cpu(&status.allocatable),
            Amount::parse("64").expect("64"),
            "{name}"
        );
    }

    // Six pods of 2 CPUs spread over the three sites: 4 CPUs requested on each.
    let ns = cluster.namespace("site-load").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "last" },
        "spec": {
            "replicas": 6,
            "selector": { "matchLabels": { "app": "last" } },
            "template": {
                "metadata": { "labels": { "app": "last" } },
                "spec": {
                    "containers": [{ "name": "c", "image": "registry.saarland.de/test/last:1", "resources": { "requests": { "cpu": "2", "memory": "4Gi" } } }],
                    "topologySpreadConstraints": [{ "maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": { "matchLabels": { "app": "last" } } }]
                }
            }
        }
    }))
    .expect("deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .expect("created");
    wait::until(
        Duration::from_secs(90),
        "requested CPU in every site status matches the pods",
        || {
            let (client, sites) = (client.clone(), sites.clone());
            async move {
                let truth = requested_by_zone(&client).await;
                let mut seen = BTreeMap::new();
                for name in SITES {
                    let site = sites.get(name).await.map_err(|e| e.to_string())?;
                    let status = site.status.unwrap_or_default();
                    seen.insert(
                        name.to_string(),
                        (cpu(&status.requested), status.utilisation.cpu),
                    );
                }
                let ok = SITES.iter().all(|s| {
                    let (requested, percent) = seen[*s];
                    let expected = truth.get(*s).copied().unwrap_or_default();
                    requested == expected
                        && requested >= Amount(4000)
                        && percent == expected.percent_of(Amount(64000))
                });
                if ok {
                    Ok(())
                } else {
                    Err(format!("status {seen:?}, pods {truth:?}"))
                }
            }
        },
    )
    .await;

    // Cordoning the site (Verbund) and a node (kubectl cordon) both show in the status.
    cluster
        .kubectl()
        .ok([
            "patch",
            "site",
            "rz-ego",
            "--type=merge",
            "-p",
            r#"{"spec":{"cordoned":true,"cordonReason":"Wartung der Stromversorgung"}}"#,
        ])
        .await;
    let node = cluster.node_names("rz-uds", 1).remove(0);
    cluster.kubectl().ok(["cordon", &node]).await;
    wait::until(Duration::from_secs(30), "cordons reported", || {
        let sites = sites.clone();
        async move {
            let ego = sites
                .get("rz-ego")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let uds = sites
                .get("rz-uds")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let ready = verbund_operator::conditions::find(&ego.conditions, "Ready").cloned();
            let cordoned = ready.as_ref().is_some_and(|c| {
                c.status == "False" && c.reason == "Cordoned" && c.message.contains("Wartung")
            });
            if cordoned && uds.nodes.unschedulable == 1 {
                Ok(())
            } else {
                Err(format!("{ready:?}, uds {:?}", uds.nodes))
            }
        }
    })
    .await;
    cluster.kubectl().ok(["uncordon", &node]).await;
    cluster
        .kubectl()
        .ok([
            "patch",
            "site",
            "rz-ego",
            "--type=merge",
            "-p",
            r#"{"spec":{"cordoned":false,"cordonReason":null}}"#,
        ])
        .await;
}
