//! Portal services end to end on the kwok-simulated pool of three sites: placement by
//! protection level, tenant and site; spreading; moving off a cordoned site; scheduled peak
//! windows; the tenant's quota as the ceiling; Pod Security; garbage collection.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::RwLock;
use verbund_operator::api::portal_service::PortalService;
use verbund_operator::conditions;
use verbund_tests::cluster::{self, SimulatedCluster, ZONE_LABEL};
use verbund_tests::{crds, examples, operator, tenancy, unique_name, wait};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Tests that need all three sites open take it shared; the cordon test takes it exclusively.
static SITES: RwLock<()> = RwLock::const_new(());

async fn pool() -> &'static SimulatedCluster {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = cluster::shared().await;
    READY
        .get_or_init(|| async {
            crds::ensure_installed(&cluster.client().await).await;
            for file in ["00-sites.yaml", "10-baselines.yaml"] {
                let path = examples::saarland_dir().join(file);
                cluster
                    .kubectl()
                    .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
                    .await;
            }
            operator::in_process(cluster.kubeconfig_path()).await;
        })
        .await;
    cluster
}

fn service(name: &str, level: &str, min: i32, max: i32, extra: Value) -> Value {
    let mut body = json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService", "metadata": { "name": name },
        "spec": {
            "image": "registry.saarland.de/portal/test@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ports": [{ "name": "http", "port": 8080 }],
            "replicas": { "min": min, "max": max },
            "resources": { "cpu": "250m", "memory": "256Mi", "cpuLimit": "500m", "memoryLimit": "512Mi" },
            "protectionLevel": level,
        }
    });
    if let (Some(spec), Some(extra)) = (body["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    body
}

async fn apply_service(client: &Client, ns: &str, body: &Value) -> Api<PortalService> {
    let api: Api<PortalService> = Api::namespaced(client.clone(), ns);
    verbund_tests::apply(&api, body).await;
    api
}

/// Running, ready pods of a service per zone.
async fn running_per_zone(client: &Client, ns: &str, name: &str) -> BTreeMap<String, usize> {
    let zones: BTreeMap<String, String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .expect("pods");
    let mut per_zone = BTreeMap::new();
    for pod in pods.items {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if let (true, false, Some(node)) =
            (running, terminating, pod.spec.and_then(|s| s.node_name))
        {
            *per_zone
                .entry(zones.get(&node).cloned().unwrap_or(node))
                .or_default() += 1;
        }
    }
    per_zone
}

async fn await_spread(client: &Client, ns: &str, name: &str, expected: &[(&str, usize)]) {
    let expected: BTreeMap<String, usize> =
        expected.iter().map(|(z, n)| (z.to_string(), *n)).collect();
    wait::until(TIMEOUT, &format!("{name} running as {expected:?}"), || {
        let expected = expected.clone();
        async move {
            let seen = running_per_zone(client, ns, name).await;
            if seen == expected {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_normal_service_runs_one_pod_per_site_with_all_its_children() {
    let cluster = pool().await;
    let _sites = SITES.read().await;
    let client = cluster.client().await;
    let ns = tenancy::tenant(&client, "normal", "High", &[], "8").await;
    let exposure =
        json!({ "exposure": { "host": "service.saarland.de", "path": format!("/{ns}") } });
    let api = apply_service(
        &client,
        &ns,
        &service("buergerkonto", "Normal", 3, 6, exposure),
    )
    .await;
    await_spread(
        &client,
        &ns,
        "buergerkonto",
        &[("rz-ego", 1), ("rz-land", 1), ("rz-uds", 1)],
    )
    .await;

    let ps = wait::until(TIMEOUT, "status reports 1/1/1", || {
        let api = api.clone();
        async move {
            let ps = api.get("buergerkonto").await.map_err(|e| e.to_string())?;
            let status = ps.status.clone().unwrap_or_default();
            let sites: Vec<(String, i32)> = status
                .sites
                .iter()
                .map(|s| (s.site.clone(), s.ready))
                .collect();
            let want = vec![
                ("rz-ego".to_string(), 1),
                ("rz-land".to_string(), 1),
                ("rz-uds".to_string(), 1),
            ];
            if sites == want
                && status.replicas.ready == 3
                && conditions::is_true(&status.conditions, "Ready")
            {
                Ok(ps)
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await;
    let status = ps.status.clone().expect("status");
    assert_eq!(status.observed_generation, ps.metadata.generation);
    assert!(conditions::is_true(&status.conditions, "Placed"));
    assert!(
        conditions::is_true(&status.conditions, "Compliant"),
        "{:?}",
        status.conditions
    );
    assert_eq!(
        status.url.as_deref(),
        Some(format!("https://service.saarland.de/{ns}").as_str())
    );
    assert_eq!(
        status.site_summary.as_deref(),
        Some("rz-ego:1 rz-land:1 rz-uds:1")
    );

    let uid = ps.uid().expect("uid");
    let owned = |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
        refs.iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
    };
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get("buergerkonto")
        .await
        .expect("service account");
    assert!(owned(sa.owner_references()));
    assert_eq!(sa.automount_service_account_token, Some(false));
    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get("buergerkonto")
        .await
        .expect("service");
    assert!(owned(svc.owner_references()));
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
        .get("buergerkonto")
        .await
        .expect("hpa");
    assert!(owned(hpa.owner_references()));
    assert_eq!((hpa.spec.min_replicas, hpa.spec.max_replicas), (Some(3), 6));
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .get("buergerkonto")
        .await
        .expect("pdb");
    assert!(owned(pdb.owner_references()));
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get("buergerkonto")
        .await
        .expect("network policy");
    assert!(owned(np.owner_references()));
    let ingress = Api::<Ingress>::namespaced(client.clone(), &ns)
        .get("buergerkonto")
        .await
        .expect("ingress");
    assert!(owned(ingress.owner_references()));
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("buergerkonto")
        .await
        .expect("deployment");
    assert!(owned(deployment.owner_references()));
    let pod = deployment.spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let security = container
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());

    // Deleting the service removes every child (garbage collection by the controller-manager).
    api.delete("buergerkonto", &DeleteParams::default())
        .await
        .expect("delete");
    wait::until(TIMEOUT, "children collected", || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let left = [
                Api::<Deployment>::namespaced(client.clone(), &ns)
                    .get_opt("buergerkonto")
                    .await
                    .map(|o| o.is_some()),
                Api::<Service>::namespaced(client.clone(), &ns)
                    .get_opt("buergerkonto")
                    .await
                    .map(|o| o.is_some()),
                Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
                    .get_opt("buergerkonto")
                    .await
                    .map(|o| o.is_some()),
                Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
                    .get_opt("buergerkonto")
                    .await
                    .map(|o| o.is_some()),
                Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
                    .get_opt("buergerkonto")
                    .await
                    .map(|o| o.is_some()),
                Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                    .get_opt("buergerkonto")
                    .await
                    .map(|o| o.is_some()),
                Api::<Ingress>::namespaced(client.clone(), &ns)
                    .get_opt("buergerkonto")
                    .await
                    .map(|o| o.is_some()),
            ];
            let left: Vec<bool> = left.into_iter().map(|r| r.unwrap_or(true)).collect();
            if left.iter().any(|l| *l) {
                Err(format!("{left:?}"))
            } else {
                Ok(())
            }
        }
    })
    .await;
}

#[tokio::test]
async fn protection_level_and_tenant_sites_decide_the_placement() {
    let cluster = pool().await;
    let _sites = SITES.read().await;
    let client = cluster.client().await;
    let ns = tenancy::tenant(&client, "schutz", "VeryHigh", &[], "16").await;
    apply_service(
        &client,
        &ns,
        &service("sehr-hoch", "VeryHigh", 3, 6, json!({})),
    )
    .await;
    apply_service(&client, &ns, &service("hoch", "High", 4, 6, json!({}))).await;
    await_spread(&client, &ns, "sehr-hoch", &[("rz-land", 3)]).await;
    await_spread(&client, &ns, "hoch", &[("rz-land", 2), ("rz-uds", 2)]).await;

    let limited = tenancy::tenant(&client, "nur-uds", "Normal", &["rz-uds"], "8").await;
    apply_service(
        &client,
        &limited,
        &service("nur-uni", "Normal", 2, 4, json!({})),
    )
    .await;
    await_spread(&client, &limited, "nur-uni", &[("rz-uds", 2)]).await;

    // More protection than the tenant may have: refused, nothing runs.
    let api = apply_service(
        &client,
        &limited,
        &service("zu-hoch", "High", 2, 4, json!({})),
    )
    .await;
    let refused = wait::until(TIMEOUT, "refusal reported", || {
        let api = api.clone();
        async move {
            let ps = api.get("zu-hoch").await.map_err(|e| e.to_string())?;
            let ready = ps
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, "Ready").cloned());
            match ready {
                Some(c) if c.reason == "ProtectionAboveTenant" => Ok(c),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(refused.status, "False");
    assert!(
        refused.message.contains("spec.protectionLevel"),
        "{}",
        refused.message
    );
    let deployment = Api::<Deployment>::namespaced(client, &limited)
        .get_opt("zu-hoch")
        .await
        .expect("get");
    assert!(
        deployment.is_none(),
        "nothing rendered for a refused service"
    );
}

async fn set_cordon(cluster: &SimulatedCluster, site: &str, cordoned: bool) {
    let patch = if cordoned {
        r#"{"spec":{"cordoned":true,"cordonReason":"Wartung der Klimatechnik"}}"#
    } else {
        r#"{"spec":{"cordoned":false,"cordonReason":null}}"#
    };
    cluster
        .kubectl()
        .ok(["patch", "site", site, "--type=merge", "-p", patch])
        .await;
}

/// The Deployment's generation now.
async fn generation(client: &Client, ns: &str, name: &str) -> i64 {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment");
    d.metadata.generation.unwrap_or_default()
}

/// Waits until the operator has changed the Deployment (generation beyond `after`) and the
/// rollout of that change has completed.
async fn await_rollout(client: &Client, ns: &str, name: &str, after: i64) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait::until(TIMEOUT, &format!("rollout of {name} complete"), || {
        let api = api.clone();
        async move {
            let d = api.get(name).await.map_err(|e| e.to_string())?;
            let s = d.status.clone().unwrap_or_default();
            let want = d.spec.replicas.unwrap_or(1);
            let done = d.metadata.generation.unwrap_or_default() > after
                && s.observed_generation == d.metadata.generation
                && s.updated_replicas == Some(want)
                && s.ready_replicas == Some(want)
                && s.replicas == Some(want);
            if done { Ok(()) } else { Err(format!("{s:?}")) }
        }
    })
    .await;
}

#[tokio::test]
async fn cordoning_a_site_moves_its_pods_away_and_uncordoning_lets_them_back() {
    let cluster = pool().await;
    let _sites = SITES.write().await;
    let client = cluster.client().await;
    let ns = tenancy::tenant(&client, "umzug", "Normal", &[], "8").await;
    let api = apply_service(&client, &ns, &service("umzug", "Normal", 3, 6, json!({}))).await;
    await_spread(
        &client,
        &ns,
        "umzug",
        &[("rz-ego", 1), ("rz-land", 1), ("rz-uds", 1)],
    )
    .await;

    let before = generation(&client, &ns, "umzug").await;
    set_cordon(cluster, "rz-ego", true).await;
    await_rollout(&client, &ns, "umzug", before).await;
    let seen = running_per_zone(&client, &ns, "umzug").await;
    assert_eq!(seen.get("rz-ego"), None, "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 3);
    wait::until(TIMEOUT, "status shows 0 pods on rz-ego", || {
        let api = api.clone();
        async move {
            let status = api
                .get("umzug")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let ego = status
                .sites
                .iter()
                .find(|s| s.site == "rz-ego")
                .map(|s| s.ready);
            let placed = conditions::find(&status.conditions, "Placed")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            // "placed on rz-land, rz-uds; not on rz-ego (cordoned)"
            let placed_on = placed.split(';').next().unwrap_or_default();
            if ego == Some(0)
                && status.replicas.ready == 3
                && !placed_on.contains("rz-ego")
                && placed.contains("rz-ego (cordoned)")
            {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await;

    let before = generation(&client, &ns, "umzug").await;
    set_cordon(cluster, "rz-ego", false).await;
    await_rollout(&client, &ns, "umzug", before).await;
    await_spread(
        &client,
        &ns,
        "umzug",
        &[("rz-ego", 1), ("rz-land", 1), ("rz-uds", 1)],
    )
    .await;
}

#[tokio::test]
async fn a_window_active_now_raises_the_floor_until_it_ends() {
    let cluster = pool().await;
    let _sites = SITES.read().await;
    let client = cluster.client().await;
    let ns = tenancy::tenant(&client, "fenster", "Normal", &[], "8").await;

    // A window on today's weekday in Berlin, from midnight to two minutes from now.
    let berlin =
        jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").expect("tz"));
    let end = berlin
        .checked_add(jiff::SignedDuration::from_secs(150))
        .expect("time");
    let crosses_midnight = end.date() != berlin.date();
    let end_text = if crosses_midnight {
        "24:00".to_string()
    } else {
        format!("{:02}:{:02}", end.hour(), end.minute())
    };
    let day = format!("{:?}", berlin.weekday());
    let window = json!({ "scaling": { "windows": [{ "name": "jetzt", "days": [day], "start": "00:00", "end": end_text, "minReplicas": 5 }] } });
    let api = apply_service(&client, &ns, &service("spitze", "Normal", 2, 6, window)).await;

    let hpa: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let min_replicas = |hpa: Api<HorizontalPodAutoscaler>| async move {
        hpa.get_opt("spitze")
            .await
            .ok()
            .flatten()
            .and_then(|h| h.spec.min_replicas)
    };
    wait::until(TIMEOUT, "HPA floor raised to 5", || {
        let hpa = hpa.clone();
        async move {
            if min_replicas(hpa).await == Some(5) {
                Ok(())
            } else {
                Err("not yet")
            }
        }
    })
    .await;
    // The controller-manager's autoscaler brings the running pods up to the floor.
    wait::until(TIMEOUT, "5 pods running", || async {
        let n: usize = running_per_zone(&client, &ns, "spitze")
            .await
            .values()
            .sum();
        if n == 5 { Ok(()) } else { Err(n) }
    })
    .await;
    // The status follows the pods a few seconds behind (figure updates are paced).
    wait::until(TIMEOUT, "the status naming the active window", || async {
        let status = api
            .get("spitze")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match status.active_window.as_deref() {
            Some("jetzt") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    if crosses_midnight {
        // Too close to midnight to wait for the end: end it by moving it to another day.
        let other = if day == "Monday" { "Tuesday" } else { "Monday" };
        let moved = json!({ "scaling": { "windows": [{ "name": "jetzt", "days": [other], "start": "00:00", "end": "24:00", "minReplicas": 5 }] } });
        apply_service(&client, &ns, &service("spitze", "Normal", 2, 6, moved)).await;
    }
    // The operator requeued itself for the window's end: the floor drops without any change.
    wait::until(
        Duration::from_secs(240),
        "HPA floor back to 2 after the window",
        || {
            let hpa = hpa.clone();
            async move {
                if min_replicas(hpa).await == Some(2) {
                    Ok(())
                } else {
                    Err("still raised")
                }
            }
        },
    )
    .await;
    let status = api
        .get("spitze")
        .await
        .expect("service")
        .status
        .expect("status");
    assert_eq!(status.active_window, None);
}

#[tokio::test]
async fn the_tenant_quota_caps_the_autoscaler() {
    let cluster = pool().await;
    let _sites = SITES.read().await;
    let client = cluster.client().await;
    // 2 CPUs for the tenant; pods of 500m: at most 4 of them, not the 10 asked for.
    let ns = tenancy::tenant(&client, "knapp", "Normal", &[], "2").await;
    let mut body = service("gross", "Normal", 2, 10, json!({}));
    body["spec"]["resources"] =
        json!({ "cpu": "500m", "memory": "256Mi", "cpuLimit": "1", "memoryLimit": "512Mi" });
    let api = apply_service(&client, &ns, &body).await;
    let limited = wait::until(TIMEOUT, "ScalingLimited", || {
        let api = api.clone();
        async move {
            let ps = api.get("gross").await.map_err(|e| e.to_string())?;
            let c = ps
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, "ScalingLimited").cloned());
            match c {
                Some(c) if c.status == "True" => Ok(c),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(
        limited.message.contains("capped to 4"),
        "{}",
        limited.message
    );
    assert!(limited.message.contains("of 2 CPU"), "{}", limited.message);
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client, &ns)
        .get("gross")
        .await
        .expect("hpa");
    assert_eq!(hpa.spec.max_replicas, 4);
}

#[tokio::test]
async fn the_rendered_pod_of_every_example_service_passes_pod_security_restricted() {
    let cluster = pool().await;
    let client = cluster.client().await;
    let ns = unique_name("restricted");
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": { "name": ns, "labels": { "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest" } }
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    let eligible = vec![verbund_operator::placement::EligibleSite {
        site: "rz-land".into(),
        zone: "rz-land".into(),
    }];
    let services: Vec<_> = examples::saarland()
        .into_iter()
        .filter(|d| d.kind() == "PortalService")
        .collect();
    assert_eq!(services.len(), 12);
    for doc in services {
        let ps: PortalService = serde_json::from_value(doc.value.clone()).expect("PortalService");
        let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default();
        let spec = verbund_operator::controller::portal_service::build::pod_spec(
            &ps, &eligible, &selector,
        );
        let mut pod: Pod =
            serde_json::from_value(json!({ "metadata": { "name": ps.name_any() } })).expect("pod");
        pod.spec = Some(spec);
        // The service account the pod names must exist for the ServiceAccount admission plugin.
        let sa: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": ps.name_any() } })).expect("sa");
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &sa)
            .await
            .expect("sa");
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        Api::<Pod>::namespaced(client.clone(), &ns)
            .create(&dry_run, &pod)
            .await
            .unwrap_or_else(|e| panic!("restricted refused the pod of {}: {e}", ps.name_any()));
    }
}

/// A child the API server refuses leaves its trace where users look: `Ready=False` with the
/// error's category and the API server's own message, and one Warning Event; once the cause is
/// gone the service converges without anyone touching it.
#[tokio::test]
async fn a_refused_child_shows_in_ready_with_the_api_servers_message() {
    let cluster = pool().await;
    let _sites = SITES.read().await;
    let client = cluster.client().await;
    let ns = tenancy::tenant(&client, "abgelehnt", "Normal", &[], "8").await;
    // A quota of the namespace's own admins (not Verbund's) that allows no Service.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(client.clone(), &ns);
    let no_services: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "keine-services" },
        "spec": { "hard": { "services": "0" } }
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &no_services)
        .await
        .expect("quota");
    // Admission enforces a quota only once the controller-manager has counted it.
    wait::until(TIMEOUT, "the quota counted", || {
        let quotas = quotas.clone();
        async move {
            let q = quotas
                .get("keine-services")
                .await
                .map_err(|e| e.to_string())?;
            match q.status.and_then(|s| s.hard) {
                Some(hard) if hard.contains_key("services") => Ok(()),
                _ => Err("not counted yet".to_string()),
            }
        }
    })
    .await;
    let api = apply_service(
        &client,
        &ns,
        &service("formular", "Normal", 1, 2, json!({})),
    )
    .await;
    let ready = wait::until(TIMEOUT, "Ready=False with the refusal", || {
        let api = api.clone();
        async move {
            let ps = api.get("formular").await.map_err(|e| e.to_string())?;
            let conditions = ps.status.map(|s| s.conditions).unwrap_or_default();
            match conditions::find(&conditions, conditions::kind::READY) {
                Some(c) if c.reason == "QuotaRefused" => Ok(c.clone()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("exceeded quota: keine-services"),
        "the API server's words: {}",
        ready.message
    );

    quotas
        .delete("keine-services", &DeleteParams::default())
        .await
        .expect("quota deleted");
    // Retried with backoff: the Service is created and the service gets Ready.
    wait::ready(&api, "formular", Duration::from_secs(180)).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .get("formular")
        .await
        .expect("the Service exists now");
}

/// An admission policy's decision can change with no event Verbund sees (its binding removed,
/// its parameters reaching the API server's admission a moment late): a refused service is
/// retried with backoff and gets Ready once admission lets its children in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_refused_by_an_admission_policy_gets_ready_once_the_policy_lets_it() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let cluster = pool().await;
    let _sites = SITES.read().await;
    let client = cluster.client().await;
    let ns = tenancy::tenant(&client, "sperre", "Normal", &[], "8").await;
    // The cluster admins' own change freeze on this namespace, not one of Verbund's policies.
    let policy_name = format!("aenderungsstopp-{ns}");
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]
            }, {
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["services"]
            }]},
            "validations": [{ "expression": "false", "message": "Änderungsstopp", "reason": "Forbidden" }]
        }
    }))
    .expect("policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": { "matchLabels": {
                "kubernetes.io/metadata.name": ns
            }}}
        }
    }))
    .expect("binding");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy created");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding created");
    // The API server's admission takes up a new binding a moment after it is stored; a
    // Service probes it (a probe Deployment would meet Verbund's baselines first). The
    // Deployment is refused too, so no pod event can wake the service up.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let probe: Service = serde_json::from_value(json!({
        "metadata": { "name": "probe" },
        "spec": { "ports": [{ "port": 80 }] }
    }))
    .expect("probe");
    wait::until(TIMEOUT, "the change freeze in force", || {
        let services = services.clone();
        let probe = probe.clone();
        async move {
            match services
                .create(
                    &PostParams {
                        dry_run: true,
                        ..Default::default()
                    },
                    &probe,
                )
                .await
            {
                Err(kube::Error::Api(status)) if status.message.contains("Änderungsstopp") => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    let api = apply_service(
        &client,
        &ns,
        &service("formular", "Normal", 1, 2, json!({})),
    )
    .await;
    let refused = wait::until(TIMEOUT, "Ready=False with the policy's refusal", || {
        let api = api.clone();
        async move {
            let ps = api.get("formular").await.map_err(|e| e.to_string())?;
            let conditions = ps.status.map(|s| s.conditions).unwrap_or_default();
            match conditions::find(&conditions, conditions::kind::READY) {
                Some(c) if c.reason == "AdmissionRefused" => Ok(c.clone()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(refused.status, "False");
    assert!(
        refused.message.contains("Änderungsstopp"),
        "the policy's words: {}",
        refused.message
    );

    // Verbund watches neither policies nor bindings: only its retry can notice.
    bindings
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("binding deleted");
    wait::ready(&api, "formular", Duration::from_secs(180)).await;
    services
        .get("formular")
        .await
        .expect("the Service exists now");
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("policy deleted");
}
