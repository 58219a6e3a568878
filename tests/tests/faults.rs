//! Faults injected into a working pool, one after the other on one simulated cluster, each
//! ending converged with nothing lost: no orphaned or duplicated children, every tenant
//! namespace guarded, every status true to the world. Each scenario prints what it measured
//! (time to converge, the operator's writes); `docs/faults.md` tabulates them.
//!
//! - the operator killed (`kill -9`) in the middle of a mass create, and started again;
//! - another field manager fighting Verbund over a child's image;
//! - a Site deleted while services run on it, and applied again;
//! - the CRDs upgraded with a new optional field while the operator runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use verbund_operator::api::{PortalService, Site, Tenant};
use verbund_operator::conditions::{self, kind};
use verbund_tests::cluster::{self, SimulatedCluster};
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{crds, examples, operator_binary, unique_name, wait};

const TIMEOUT: Duration = Duration::from_secs(300);
/// Services created at once in the mass create.
const MASS: usize = 40;
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=verbund-operator";

fn service(name: &str, min: i32) -> Value {
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

/// A tenant owning one namespace of its name, Ready; returns the name.
async fn tenant(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let body = json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant", "metadata": { "name": name },
        "spec": {
            "displayName": name, "organisation": { "kind": "State", "name": "Testbehörde" },
            "namespaces": [name], "quota": { "cpu": "16", "memory": "32Gi", "pods": 120 },
            "maxProtectionLevel": "Normal", "deletionPolicy": "Delete",
            "routes": [{ "host": "service.saarland.de", "pathPrefix": format!("/{name}") }]
        }
    });
    let api: Api<Tenant> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("verbund-tests"),
        &Patch::Apply(&body),
    )
    .await
    .expect("tenant");
    wait::ready(&api, &name, TIMEOUT).await;
    name
}

async fn apply(api: &Api<PortalService>, body: &Value) {
    let name = body["metadata"]["name"].as_str().expect("name");
    api.patch(
        name,
        &PatchParams::apply("verbund-tests"),
        &Patch::Apply(body),
    )
    .await
    .expect("service accepted");
}

/// The operator's writes so far, by kind (its own counter).
async fn writes(operator: &OperatorProcess) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("{}/metrics", operator.admin_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
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

fn total(w: &BTreeMap<String, f64>) -> f64 {
    w.values().sum()
}

/// Every service of `ns` Ready for its generation.
async fn all_ready(api: &Api<PortalService>, count: usize) {
    wait::until(TIMEOUT, &format!("{count} services Ready"), || async {
        let list = api
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
    })
    .await;
}

/// Names of the objects of one kind in `ns` that Verbund manages, with their owner's uid.
async fn children<K>(client: &Client, ns: &str) -> Vec<(String, Option<String>)>
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
async fn invariants(client: &Client, ns: &str) {
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

async fn start_operator(kubeconfig: &std::path::Path) -> OperatorProcess {
    let mut operator = OperatorProcess::start(operator_binary!(), kubeconfig, &[])
        .await
        .expect("operator starts");
    operator.await_ready(TIMEOUT).await.expect("operator ready");
    operator
}

async fn pool() -> (&'static SimulatedCluster, Client, std::path::PathBuf) {
    let pool = cluster::shared().await;
    let client = pool.client().await;
    crds::ensure_installed(&client).await;
    for file in ["00-sites.yaml", "10-baselines.yaml"] {
        let path = examples::saarland_dir().join(file);
        pool.kubectl()
            .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
            .await;
    }
    let kubeconfig = verbund_tests::operator::as_operator(pool.kubeconfig_path())
        .await
        .expect("the operator's account");
    (pool, client, kubeconfig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_leave_the_pool_converged_with_nothing_lost() {
    let (pool, client, kubeconfig) = pool().await;
    let mut operator = start_operator(&kubeconfig).await;

    // 1. kill -9 in the middle of a mass create.
    let ns = tenant(&client, "abbruch").await;
    let services: Api<PortalService> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let creating = {
        let services = services.clone();
        tokio::spawn(async move {
            for i in 0..MASS {
                apply(&services, &service(&format!("dienst-{i:02}"), 1)).await;
            }
        })
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait::until(TIMEOUT, "the first children written", || async {
        let n = deployments
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if n > 0 {
            Ok(n)
        } else {
            Err(format!("{n} Deployments"))
        }
    })
    .await;
    operator.signal("KILL").await.expect("kill -9");
    let _ = operator.wait(Duration::from_secs(10)).await;
    creating.await.expect("every service created");
    let half = deployments
        .list(&ListParams::default())
        .await
        .expect("deployments")
        .items
        .len();
    let restarted = Instant::now();
    operator = start_operator(&kubeconfig).await;
    all_ready(&services, MASS).await;
    invariants(&client, &ns).await;
    eprintln!(
        "fault kill -9 mid-create: {half} of {MASS} Deployments written when killed; converged {:.1} s after the restart ({:.1} s after the create); writes after the restart: {:.0}",
        restarted.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        total(&writes(&operator).await)
    );

    // 2. Another field manager fights Verbund over a child's image.
    let fought = "dienst-00";
    let container = deployments
        .get(fought)
        .await
        .expect("deployment")
        .spec
        .template
        .spec
        .expect("pod spec")
        .containers[0]
        .clone();
    let verbund_image = container.image.clone();
    let before = writes(&operator).await;
    let fight = Instant::now();
    let mut fighter_writes = 0u32;
    while fight.elapsed() < Duration::from_secs(15) {
        let patch = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": fought, "namespace": ns },
            "spec": { "template": { "spec": { "containers": [
                { "name": container.name, "image": format!("registry.saarland.de/portal/fremd@sha256:{fighter_writes:064x}") }
            ]}}}
        });
        deployments
            .patch(
                fought,
                &PatchParams::apply("kollege").force(),
                &Patch::Apply(&patch),
            )
            .await
            .expect("the other manager's apply");
        fighter_writes += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let restored = wait::until(TIMEOUT, "Verbund's image restored", || async {
        let d = deployments.get(fought).await.map_err(|e| e.to_string())?;
        let image = d
            .spec
            .template
            .spec
            .and_then(|s| s.containers.first().map(|c| c.image.clone()))
            .unwrap_or_default();
        if image == verbund_image {
            Ok(fight.elapsed())
        } else {
            Err(image)
        }
    })
    .await;
    let after = writes(&operator).await;
    let deployment_writes = after.get("Deployment").copied().unwrap_or(0.0)
        - before.get("Deployment").copied().unwrap_or(0.0);
    eprintln!(
        "fault field-manager fight: {fighter_writes} foreign applies in 15 s; Verbund wrote the Deployment {deployment_writes:.0} times; restored {:.1} s after the fight began",
        restored.as_secs_f64()
    );
    // No hot loop: one restoring write per foreign change, and at most one more when the
    // change reaches the operator's cache after its own write.
    assert!(
        deployment_writes <= 2.0 * f64::from(fighter_writes),
        "{deployment_writes} writes for {fighter_writes} foreign changes"
    );
    all_ready(&services, MASS).await;
    invariants(&client, &ns).await;

    // 3. A Site deleted while services run on it, then applied again.
    let sites: Api<Site> = Api::all(client.clone());
    let before = writes(&operator).await;
    let deleted_at = Instant::now();
    sites
        .delete("rz-uds", &DeleteParams::default())
        .await
        .expect("site deleted");
    wait::until(
        TIMEOUT,
        "every service re-placed without rz-uds",
        || async {
            let list = services
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let left = list
                .items
                .iter()
                .filter(|ps| {
                    ps.status
                        .as_ref()
                        .and_then(|s| conditions::find(&s.conditions, kind::PLACED))
                        .is_none_or(|c| c.message.contains("rz-uds"))
                })
                .count();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} still name rz-uds"))
            }
        },
    )
    .await;
    all_ready(&services, MASS).await;
    let replaced = deleted_at.elapsed();
    let path = examples::saarland_dir().join("00-sites.yaml");
    pool.kubectl()
        .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
        .await;
    wait::ready(&sites, "rz-uds", TIMEOUT).await;
    all_ready(&services, MASS).await;
    invariants(&client, &ns).await;
    eprintln!(
        "fault site deleted: services re-placed and Ready in {:.1} s; writes {:.0}",
        replaced.as_secs_f64(),
        total(&writes(&operator).await) - total(&before)
    );

    // 4. The CRDs upgraded with a new optional field while the operator runs.
    let definitions: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = definitions
        .get("portalservices.verbund.saarland.de")
        .await
        .expect("crd");
    crd.metadata.managed_fields = None;
    crd.metadata.resource_version = None;
    crd.status = None;
    let original = crd.clone();
    for version in &mut crd.spec.versions {
        let spec = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
            .expect("spec properties");
        spec.insert(
            "maintenanceContact".into(),
            serde_json::from_value(json!({ "type": "string", "maxLength": 200 })).expect("prop"),
        );
    }
    let before = writes(&operator).await;
    let upgraded_at = Instant::now();
    definitions
        .patch(
            "portalservices.verbund.saarland.de",
            &PatchParams::apply("verbund-upgrade").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD upgraded");
    let mut with_field = service("dienst-neu", 1);
    with_field["spec"]["maintenanceContact"] = json!("it-dlz@saarland.de");
    // The API server serves the new schema a moment after the CRD is stored: until then the
    // field is pruned.
    let stored = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<PortalService>(&()),
    );
    wait::until(TIMEOUT, "the new field stored", || async {
        services
            .patch(
                "dienst-neu",
                &PatchParams::apply("verbund-tests"),
                &Patch::Apply(&with_field),
            )
            .await
            .map_err(|e| e.to_string())?;
        let object = stored.get("dienst-neu").await.map_err(|e| e.to_string())?;
        if object.data["spec"]["maintenanceContact"].is_string() {
            Ok(())
        } else {
            Err("pruned".to_string())
        }
    })
    .await;
    all_ready(&services, MASS + 1).await;
    invariants(&client, &ns).await;
    let object = stored.get("dienst-neu").await.expect("service");
    assert_eq!(
        object.data["spec"]["maintenanceContact"],
        json!("it-dlz@saarland.de"),
        "Verbund's writes keep a field its types do not know"
    );
    eprintln!(
        "fault CRD upgraded: a service using the new field Ready {:.1} s after the upgrade; writes {:.0}",
        upgraded_at.elapsed().as_secs_f64(),
        total(&writes(&operator).await) - total(&before)
    );
    // The upgrade is taken back for the other tests: the CRDs as the operator ships them.
    services
        .delete("dienst-neu", &DeleteParams::default())
        .await
        .expect("deleted");
    definitions
        .patch(
            "portalservices.verbund.saarland.de",
            &PatchParams::apply("verbund-upgrade").force(),
            &Patch::Apply(&original),
        )
        .await
        .expect("CRD as shipped");

    operator.signal("TERM").await.expect("stop");
    let (status, log) = operator.wait(Duration::from_secs(30)).await.expect("stops");
    assert!(status.success(), "{log}");
}
