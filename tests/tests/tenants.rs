//! The Tenant controller against a real API server and controller-manager: namespaces with
//! quota, limits, admin rights and isolation; RBAC proven by impersonation; a quota that holds
//! across namespaces; deletion policies; drift repair.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use verbund_operator::api::Tenant;
use verbund_operator::controller::status::FIGURES_INTERVAL_MAX;
use verbund_operator::quantity::Amount;
use verbund_tests::baselines::apply_audit_baseline;
use verbund_tests::control_plane::{self, ControlPlane};
use verbund_tests::{crds, examples, operator, tenancy, unique_name, wait};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The node label of a site's zone, and the zone of an example site every test tenant may
/// use: admission lets a tenant's pods run only there.
const ZONE: &str = "topology.kubernetes.io/zone";
const SITE_ZONE: &str = "rz-land";

/// The baseline of the test tenants (the Saarland tenants keep theirs).
const TEST_BASELINE: &str = "tenancy-tests";

/// The control plane with CRDs, the Saarland baselines and a running operator.
async fn pool() -> &'static ControlPlane {
    static BASELINES: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cp = control_plane::shared().await;
    crds::ensure_installed(&cp.client().await).await;
    BASELINES
        .get_or_init(|| async {
            // The sites first: a tenant's pods may run only in the zones of its sites.
            for file in ["00-sites.yaml", "10-baselines.yaml"] {
                let file = examples::saarland_dir().join(file);
                cp.kubectl()
                    .ok(["apply", "--server-side", "-f", &file.to_string_lossy()])
                    .await;
            }
            // The test tenants' workloads are about tenancy, not hardening: their baseline
            // audits (Pod Security `restricted` still applies) instead of refusing.
            apply_audit_baseline(&cp.client().await, TEST_BASELINE).await;
        })
        .await;
    operator::in_process(cp.kubeconfig_path()).await;
    cp
}

fn tenant(
    name: &str,
    namespaces: &[&str],
    admins: serde_json::Value,
    quota: serde_json::Value,
    policy: &str,
) -> serde_json::Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant",
        "metadata": { "name": name },
        "spec": {
            "displayName": format!("Testmandant {name}"),
            "organisation": { "kind": "State", "name": "Testbehörde" },
            "admins": admins,
            "namespaces": namespaces,
            "quota": quota,
            "deletionPolicy": policy,
            "baseline": TEST_BASELINE,
        }
    })
}

/// Every child Verbund keeps in a tenant namespace, checked against the tenant.
async fn assert_namespace_guarded(client: &Client, tenant: &Tenant, ns: &str) {
    let name = tenant.name_any();
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace exists");
    let labels = namespace.labels();
    assert_eq!(
        labels.get("verbund.saarland.de/tenant"),
        Some(&name),
        "{ns}"
    );
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("verbund-operator")
    );
    assert!(
        labels.contains_key("verbund.saarland.de/baseline"),
        "{ns} has a baseline label"
    );
    // The Saarland baselines enforce rules covering every check of Pod Security `restricted`:
    // Pod Security only warns and audits, and Verbund's policy refuses, naming the rule.
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged")
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/warn")
            .map(String::as_str),
        Some("restricted")
    );

    let owned = |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
        refs.iter()
            .any(|r| r.kind == "Tenant" && r.name == name && r.controller == Some(true))
    };
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .get("verbund-tenant-quota")
        .await
        .expect("quota");
    assert!(owned(quota.owner_references()), "quota owned by the tenant");
    let limits = Api::<LimitRange>::namespaced(client.clone(), ns)
        .get("verbund-defaults")
        .await
        .expect("limit range");
    assert!(owned(limits.owner_references()));
    let binding = Api::<RoleBinding>::namespaced(client.clone(), ns)
        .get("verbund-tenant-admins")
        .await
        .expect("role binding");
    assert!(owned(binding.owner_references()));
    assert_eq!(binding.role_ref.name, "verbund-tenant-admin");
    let subjects: Vec<String> = binding
        .subjects
        .unwrap_or_default()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let admins: Vec<String> = tenant.spec.admins.iter().map(|a| a.name.clone()).collect();
    assert_eq!(subjects, admins);
    let policies: Vec<String> = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("policies")
        .items
        .iter()
        .filter(|p| owned(p.owner_references()))
        .map(|p| p.name_any())
        .collect();
    for expected in [
        "verbund-default-deny",
        "verbund-allow-dns",
        "verbund-allow-tenant",
        "verbund-allow-gateway",
    ] {
        assert!(
            policies.contains(&expected.to_string()),
            "{ns} lacks {expected}: {policies:?}"
        );
    }
    assert_eq!(
        policies.contains(&"verbund-egress".to_string()),
        !tenant.spec.egress.is_empty()
    );
}

/// Σ spec.hard over the tenant's quotas, per resource.
async fn hard_sum(client: &Client, namespaces: &[String]) -> BTreeMap<String, Amount> {
    let mut sums = BTreeMap::new();
    for ns in namespaces {
        let quota = Api::<ResourceQuota>::namespaced(client.clone(), ns)
            .get("verbund-tenant-quota")
            .await
            .expect("quota");
        for (key, q) in quota.spec.and_then(|s| s.hard).unwrap_or_default() {
            *sums.entry(key).or_insert(Amount::ZERO) += Amount::of(&q).expect("quantity");
        }
    }
    sums
}

/// Waits until the quota of `ns` counts exactly the CPU its pods request, and the quota
/// controller has taken up its current hard: Kubernetes' own accounting has caught up.
async fn settled(client: &Client, ns: &str) {
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), ns);
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    wait::until(
        Duration::from_secs(60),
        &format!("the quota of {ns} counting its pods"),
        || async {
            let quota = quotas
                .get("verbund-tenant-quota")
                .await
                .map_err(|e| e.to_string())?;
            let requested: Amount = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .map(|q| Amount::of(q).expect("quantity"))
                .sum();
            let status = quota.status.unwrap_or_default();
            let used = status
                .used
                .as_ref()
                .and_then(|u| u.get("requests.cpu"))
                .map(|q| Amount::of(q).expect("quantity"))
                .unwrap_or(Amount::ZERO);
            let amounts = |hard: Option<BTreeMap<String, Quantity>>| -> BTreeMap<String, Amount> {
                hard.unwrap_or_default()
                    .iter()
                    .map(|(k, q)| (k.clone(), Amount::of(q).expect("quantity")))
                    .collect()
            };
            let hard_taken_up =
                amounts(status.hard.clone()) == amounts(quota.spec.and_then(|s| s.hard));
            if used == requested && hard_taken_up {
                Ok(())
            } else {
                Err(format!(
                    "used {used:?} of requested {requested:?}; hard taken up: {hard_taken_up}"
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_saarland_tenants_get_their_namespaces_and_guard_rails() {
    let cp = pool().await;
    let client = cp.client().await;
    let dir = examples::saarland_dir();
    for file in ["00-sites.yaml", "10-baselines.yaml", "20-tenants.yaml"] {
        cp.kubectl()
            .ok([
                "apply",
                "--server-side",
                "-f",
                &dir.join(file).to_string_lossy(),
            ])
            .await;
    }
    let api: Api<Tenant> = Api::all(client.clone());
    let names: Vec<String> = examples::saarland()
        .iter()
        .filter(|d| d.kind() == "Tenant")
        .map(|d| d.name().to_string())
        .collect();
    assert_eq!(names.len(), 6);
    for name in &names {
        let tenant = wait::ready(&api, name, TIMEOUT).await;
        let status = tenant.status.clone().expect("status");
        assert_eq!(status.observed_generation, tenant.metadata.generation);
        assert_eq!(status.namespaces, tenant.spec.namespaces);
        assert_eq!(
            status.namespace_count as usize,
            tenant.spec.namespaces.len()
        );
        for ns in &tenant.spec.namespaces {
            assert_namespace_guarded(&client, &tenant, ns).await;
        }
        // The per-namespace quotas add up to exactly the tenant's quota.
        let sums = hard_sum(&client, &tenant.spec.namespaces).await;
        assert_eq!(
            sums["requests.cpu"],
            Amount::of(&tenant.spec.quota.cpu).expect("cpu"),
            "{name}"
        );
        assert_eq!(
            sums["requests.memory"],
            Amount::of(&tenant.spec.quota.memory).expect("memory"),
            "{name}"
        );
        assert_eq!(
            sums["pods"],
            Amount::count(i64::from(tenant.spec.quota.pods)),
            "{name}"
        );
    }
    // The baseline label follows the protection level when spec.baseline is not set.
    let mibs = Api::<Namespace>::all(client.clone())
        .get("mibs-portal")
        .await
        .expect("mibs-portal");
    assert_eq!(
        mibs.labels()
            .get("verbund.saarland.de/baseline")
            .map(String::as_str),
        Some("grundschutz-sehr-hoch")
    );
    let igb = Api::<Namespace>::all(client)
        .get("igb-buergerdienste")
        .await
        .expect("igb");
    assert_eq!(
        igb.labels()
            .get("verbund.saarland.de/baseline")
            .map(String::as_str),
        Some("grundschutz-normal")
    );
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "nodeSelector": { ZONE: SITE_ZONE },
                    "containers": [{ "name": "web", "image": "registry.saarland.de/test/web:1.0" }]
                }
            }
        }
    }))
    .expect("deployment")
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn tenant_admins_control_their_workloads_and_nothing_else() {
    let cp = pool().await;
    let client = cp.client().await;
    let a = unique_name("rbac-a");
    let b = unique_name("rbac-b");
    let (a1, a2, b1) = (format!("{a}-1"), format!("{a}-2"), format!("{b}-1"));
    let quota = json!({ "cpu": "4", "memory": "8Gi", "pods": 20 });
    tenancy::apply_ready(
        &client,
        &tenant(
            &a,
            &[&a1, &a2],
            json!([{ "kind": "User", "name": "anna@a.example" }]),
            quota.clone(),
            "Delete",
        ),
    )
    .await;
    tenancy::apply_ready(
        &client,
        &tenant(
            &b,
            &[&b1],
            json!([{ "kind": "User", "name": "bernd@b.example" }]),
            quota,
            "Delete",
        ),
    )
    .await;

    let anna = cp.impersonate("anna@a.example", &[]).await;
    // Full control of workloads in her own namespaces.
    for ns in [&a1, &a2] {
        Api::<Deployment>::namespaced(anna.clone(), ns)
            .create(&PostParams::default(), &deployment("portal"))
            .await
            .unwrap_or_else(|e| panic!("anna cannot create a Deployment in {ns}: {e}"));
    }
    // She sees her guard rails ...
    Api::<ResourceQuota>::namespaced(anna.clone(), &a1)
        .get("verbund-tenant-quota")
        .await
        .expect("may read quota");
    // ... but cannot change them.
    forbidden(
        Api::<ResourceQuota>::namespaced(anna.clone(), &a1)
            .patch(
                "verbund-tenant-quota",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "hard": { "requests.cpu": "100" } } })),
            )
            .await,
        "patch own ResourceQuota",
    );
    forbidden(
        Api::<NetworkPolicy>::namespaced(anna.clone(), &a1)
            .delete("verbund-default-deny", &DeleteParams::default())
            .await,
        "delete own NetworkPolicy",
    );
    forbidden(
        Api::<Namespace>::all(anna.clone())
            .patch(
                &a1,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "metadata": { "labels": { "verbund.saarland.de/baseline": "none" } } }),
                ),
            )
            .await,
        "relabel own namespace",
    );
    forbidden(
        Api::<RoleBinding>::namespaced(anna.clone(), &a1)
            .create(&PostParams::default(), &serde_json::from_value(json!({
                "metadata": { "name": "escalate" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
                "subjects": [{ "kind": "User", "name": "anna@a.example", "apiGroup": "rbac.authorization.k8s.io" }]
            })).expect("binding"))
            .await,
        "create a RoleBinding",
    );
    // Tenant B is invisible and untouchable to her.
    forbidden(
        Api::<Pod>::namespaced(anna.clone(), &b1)
            .list(&ListParams::default())
            .await,
        "list B's pods",
    );
    forbidden(
        Api::<Deployment>::namespaced(anna.clone(), &b1)
            .list(&ListParams::default())
            .await,
        "list B's deployments",
    );
    forbidden(
        Api::<Deployment>::namespaced(anna.clone(), &b1)
            .create(&PostParams::default(), &deployment("intruder"))
            .await,
        "create in B",
    );
    forbidden(
        Api::<ResourceQuota>::namespaced(anna, &b1)
            .get("verbund-tenant-quota")
            .await,
        "read B's quota",
    );
}

/// A pod that Pod Security `restricted` admits, requesting `cpu`.
fn restricted_pod(name: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "automountServiceAccountToken": false,
            "nodeSelector": { ZONE: SITE_ZONE },
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "app",
                "image": "registry.saarland.de/test/app:1.0",
                "resources": { "requests": { "cpu": cpu, "memory": "64Mi" }, "limits": { "cpu": cpu, "memory": "64Mi" } },
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
            }]
        }
    }))
    .expect("pod")
}

async fn await_service_account(client: &Client, ns: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    wait::until(TIMEOUT, &format!("service account default in {ns}"), || {
        let api = api.clone();
        async move {
            api.get_opt("default")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "missing".to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn the_tenant_quota_holds_across_its_namespaces() {
    let cp = pool().await;
    let client = cp.client().await;
    let name = unique_name("quota");
    let namespaces = [format!("{name}-a"), format!("{name}-b")];
    let quota = json!({ "cpu": "1", "memory": "4Gi", "pods": 20 });
    tenancy::apply_ready(
        &client,
        &tenant(
            &name,
            &[&namespaces[0], &namespaces[1]],
            json!([]),
            quota,
            "Delete",
        ),
    )
    .await;
    for ns in &namespaces {
        await_service_account(&client, ns).await;
    }

    let create = |ns: &str, pod: &str| {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod = restricted_pod(pod, "200m");
        async move { pods.create(&PostParams::default(), &pod).await.map(|_| ()) }
    };
    let cpu_hard_sum = || hard_sum(&client, &namespaces);

    // The quota is the tenant's, not a fixed half per namespace: with the other namespace
    // idle, pods of 200m in one namespace get well beyond 500m as the shares are redrawn after
    // each of them (each creation is retried while the operator redraws).
    let mut admitted = Amount::ZERO;
    for i in 0..4 {
        wait::until(
            Duration::from_secs(30),
            &format!("pod a{i} admitted"),
            || async {
                create(&namespaces[0], &format!("a{i}"))
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        admitted += Amount(200);
        assert!(
            cpu_hard_sum().await["requests.cpu"] <= Amount(1000),
            "quotas add up to more than the tenant's CPU"
        );
    }
    assert_eq!(
        admitted,
        Amount(800),
        "one namespace uses 80% of the tenant's CPU"
    );

    // Now both namespaces together: whatever the shares, the API server refuses every pod that
    // would take the tenant beyond 1 CPU, however long one waits for the operator. Pods of
    // 100m, so that the last 200m can be used whichever way the shares split them.
    let create_small = |ns: &str, pod: &str| {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod = restricted_pod(pod, "100m");
        async move { pods.create(&PostParams::default(), &pod).await.map(|_| ()) }
    };
    for attempt in 0..10 {
        for (j, ns) in namespaces.iter().enumerate() {
            // Kubernetes' quota controller recounts a quota's use from its pod cache whenever
            // the quota's hard changes, and can miss a pod admitted a moment before: the next
            // pod is then admitted against too low a use (kubernetes/kubernetes#123434). Each
            // pod here comes once both quotas' counts have caught up with the pods.
            for ns in &namespaces {
                settled(&client, ns).await;
            }
            match create_small(ns, &format!("more-{attempt}-{j}")).await {
                Ok(()) => admitted += Amount(100),
                Err(kube::Error::Api(status)) => {
                    assert_eq!(status.code, 403, "{status:?}");
                    assert!(
                        status
                            .message
                            .contains("exceeded quota: verbund-tenant-quota"),
                        "{}",
                        status.message
                    );
                }
                Err(other) => panic!("unexpected error {other}"),
            }
            assert!(
                admitted <= Amount(1000),
                "pods beyond the tenant's CPU quota were admitted: {admitted:?}"
            );
        }
        assert!(cpu_hard_sum().await["requests.cpu"] <= Amount(1000));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The status follows within the pacing of a tenant's figures (30 s).
    let tenants = Api::<Tenant>::all(client);
    let status = wait::until(
        FIGURES_INTERVAL_MAX + Duration::from_secs(15),
        "status shows the quota used",
        || {
            let tenants = tenants.clone();
            let name = name.clone();
            async move {
                let status = tenants
                    .get(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .ok_or("no status")?;
                match status.quota.used.get("cpu").map(|q| q.0.as_str()) {
                    Some("1") => Ok(status),
                    other => Err(format!("used cpu {other:?}: {:?}", status.quota)),
                }
            }
        },
    )
    .await;
    assert!(
        verbund_operator::conditions::is_true(&status.conditions, "QuotaExceeded"),
        "{:?}",
        status.conditions
    );
}

#[tokio::test]
async fn deleting_a_retain_tenant_keeps_its_namespaces_and_workloads() {
    let cp = pool().await;
    let client = cp.client().await;
    let name = unique_name("retain");
    let ns = format!("{name}-daten");
    tenancy::apply_ready(
        &client,
        &tenant(
            &name,
            &[&ns],
            json!([]),
            json!({ "cpu": "2", "memory": "2Gi", "pods": 10 }),
            "Retain",
        ),
    )
    .await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("fachverfahren"))
        .await
        .expect("deployment");

    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait::until(TIMEOUT, "tenant gone", || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            if tenants
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                Ok(())
            } else {
                Err("still there".to_string())
            }
        }
    })
    .await;

    let namespace = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .expect("namespace kept");
    assert!(
        namespace.metadata.deletion_timestamp.is_none(),
        "namespace not being deleted"
    );
    assert!(
        !namespace
            .labels()
            .contains_key("verbund.saarland.de/tenant"),
        "released: {:?}",
        namespace.labels()
    );
    assert!(
        !namespace
            .labels()
            .contains_key("app.kubernetes.io/managed-by")
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("fachverfahren")
        .await
        .expect("workload kept");
    assert!(deployment.metadata.deletion_timestamp.is_none());
    assert!(
        Api::<ResourceQuota>::namespaced(client, &ns)
            .get_opt("verbund-tenant-quota")
            .await
            .expect("get")
            .is_none()
    );
}

#[tokio::test]
async fn deleting_a_delete_tenant_removes_its_namespaces() {
    let cp = pool().await;
    let client = cp.client().await;
    let name = unique_name("delete");
    let ns = format!("{name}-weg");
    tenancy::apply_ready(
        &client,
        &tenant(
            &name,
            &[&ns],
            json!([]),
            json!({ "cpu": "2", "memory": "2Gi", "pods": 10 }),
            "Delete",
        ),
    )
    .await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment("alt"))
        .await
        .expect("deployment");

    Api::<Tenant>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait::until(Duration::from_secs(120), "namespace deleted", || {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move {
            match namespaces.get_opt(&ns).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(n) => Err(format!("phase {:?}", n.status.and_then(|s| s.phase))),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_namespace_removed_from_spec_is_released_with_its_data() {
    let cp = pool().await;
    let client = cp.client().await;
    let name = unique_name("shrink");
    let (keep, leave) = (format!("{name}-bleibt"), format!("{name}-geht"));
    let quota = json!({ "cpu": "2", "memory": "2Gi", "pods": 10 });
    tenancy::apply_ready(
        &client,
        &tenant(&name, &[&keep, &leave], json!([]), quota.clone(), "Retain"),
    )
    .await;
    Api::<Deployment>::namespaced(client.clone(), &leave)
        .create(&PostParams::default(), &deployment("daten"))
        .await
        .expect("deployment");

    let updated = tenancy::apply_ready(
        &client,
        &tenant(&name, &[&keep], json!([]), quota, "Retain"),
    )
    .await;
    assert_eq!(
        updated.status.expect("status").namespaces,
        vec![keep.clone()]
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait::until(TIMEOUT, "namespace released", || {
        let namespaces = namespaces.clone();
        let leave = leave.clone();
        async move {
            let ns = namespaces.get(&leave).await.map_err(|e| e.to_string())?;
            if ns.labels().contains_key("verbund.saarland.de/tenant") {
                Err("still labelled".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
    Api::<Deployment>::namespaced(client.clone(), &leave)
        .get("daten")
        .await
        .expect("workload kept");
    assert!(
        Api::<ResourceQuota>::namespaced(client.clone(), &leave)
            .get_opt("verbund-tenant-quota")
            .await
            .expect("get")
            .is_none()
    );
    // The remaining namespace now holds the whole quota.
    let sums = hard_sum(&client, &[keep]).await;
    assert_eq!(sums["requests.cpu"], Amount(2000));
}

#[tokio::test]
async fn deleted_and_edited_children_are_restored() {
    let cp = pool().await;
    let client = cp.client().await;
    let name = unique_name("drift");
    let ns = format!("{name}-ns");
    tenancy::apply_ready(
        &client,
        &tenant(
            &name,
            &[&ns],
            json!([]),
            json!({ "cpu": "3", "memory": "3Gi", "pods": 12 }),
            "Delete",
        ),
    )
    .await;

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let before = policies
        .get("verbund-default-deny")
        .await
        .expect("policy")
        .uid();
    policies
        .delete("verbund-default-deny", &DeleteParams::default())
        .await
        .expect("delete");
    let restored = wait::until(Duration::from_secs(15), "default-deny restored", || {
        let policies = policies.clone();
        let before = before.clone();
        async move {
            match policies
                .get_opt("verbund-default-deny")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(p) if p.uid() != before => Ok(p),
                _ => Err("not yet".to_string()),
            }
        }
    })
    .await;
    assert_eq!(
        restored.spec.and_then(|s| s.policy_types),
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );

    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    cp.kubectl()
        .ok([
            "patch",
            "resourcequota",
            "verbund-tenant-quota",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"hard":{"requests.cpu":"100"}}}"#,
        ])
        .await;
    wait::until(Duration::from_secs(15), "quota edit reverted", || {
        let quotas = quotas.clone();
        async move {
            let quota = quotas
                .get("verbund-tenant-quota")
                .await
                .map_err(|e| e.to_string())?;
            let cpu = quota
                .spec
                .and_then(|s| s.hard)
                .and_then(|h| h.get("requests.cpu").cloned());
            if cpu.as_ref().map(|q| q.0.as_str()) == Some("3") {
                Ok(())
            } else {
                Err(format!("{cpu:?}"))
            }
        }
    })
    .await;
}
