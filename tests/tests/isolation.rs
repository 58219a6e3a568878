//! Tenant isolation against a hostile tenant admin, on the real API server with the operator
//! running: every attack is made as the tenant admin (impersonated, with exactly the role
//! Verbund binds) and refused with a message naming the rule and its BSI requirement; what a
//! tenant legitimately does keeps working.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use verbund_operator::api::{PortalService, Site, Tenant};
use verbund_tests::admission::{self, Answer};
use verbund_tests::baselines::apply_audit_baseline;
use verbund_tests::control_plane::{self, ControlPlane};
use verbund_tests::{crds, operator, unique_name, wait};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The test tenants' baseline: it audits, so that these tests see isolation's refusals only.
const TEST_BASELINE: &str = "isolation-tests";

async fn pool() -> &'static ControlPlane {
    static BASELINE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cp = control_plane::shared().await;
    crds::ensure_installed(&cp.client().await).await;
    BASELINE
        .get_or_init(|| async {
            apply_audit_baseline(&cp.client().await, TEST_BASELINE).await;
        })
        .await;
    operator::in_process(cp.kubeconfig_path()).await;
    cp
}

/// A tenant with one namespace and one admin, as the tests' attacker.
struct Tenancy {
    name: String,
    ns: String,
    /// The tenant admin, impersonated.
    admin: Client,
    root: Client,
}

fn tenant_body(name: &str, ns: &str, routes: Value, policy: &str) -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant",
        "metadata": { "name": name },
        "spec": {
            "displayName": format!("Testmandant {name}"),
            "organisation": { "kind": "Municipality", "name": "Testgemeinde", "regionalKey": "100410100100" },
            "admins": [{ "kind": "User", "name": format!("anna@{name}") }],
            "namespaces": [ns],
            "quota": { "cpu": "2", "memory": "2Gi", "pods": 10 },
            "baseline": TEST_BASELINE,
            "routes": routes,
            "deletionPolicy": policy,
        }
    })
}

async fn apply_tenant(root: &Client, body: &Value) {
    let name = body["metadata"]["name"].as_str().expect("name");
    Api::<Tenant>::all(root.clone())
        .patch(
            name,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(body),
        )
        .await
        .expect("tenant accepted");
}

/// Creates a tenant holding `routes` and waits until it is Ready and its admin is bound.
async fn tenancy(cp: &ControlPlane, prefix: &str, routes: Value) -> Tenancy {
    tenancy_with(cp, prefix, routes, json!({})).await
}

/// A tenant as [`tenancy`], with `spec` merged into its spec.
async fn tenancy_with(cp: &ControlPlane, prefix: &str, routes: Value, spec: Value) -> Tenancy {
    let root = cp.client().await;
    let name = unique_name(prefix);
    let ns = format!("{name}-ns");
    let mut body = tenant_body(&name, &ns, routes, "Delete");
    merge(&mut body["spec"], &spec);
    apply_tenant(&root, &body).await;
    wait::ready(&Api::<Tenant>::all(root.clone()), &name, TIMEOUT).await;
    let admin = cp.impersonate(&format!("anna@{name}"), &[]).await;
    // Bound: the API server's authorizer sees the RoleBinding a moment after it is stored.
    let services: Api<PortalService> = Api::namespaced(admin.clone(), &ns);
    wait::until(TIMEOUT, "the admin bound", || async {
        services
            .list(&Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    Tenancy {
        name,
        ns,
        admin,
        root,
    }
}

impl Tenancy {
    async fn dry_run(&self, object: &Value) -> Answer {
        admission::create(&self.admin, &self.ns, object, true).await
    }

    /// Waits until the isolation policy refuses `object` (the API server picks up new
    /// bindings and parameters within a few seconds; the quota may refuse some of the same
    /// objects before), and returns that answer.
    async fn refused(&self, object: &Value) -> Answer {
        wait::until(TIMEOUT, "the isolation policy in force", || async {
            let answer = self.dry_run(object).await;
            if answer.status == 403 && answer.message.contains("verbund-tenant-isolation") {
                Ok(answer)
            } else {
                Err(answer)
            }
        })
        .await
    }

    async fn status(&self) -> Value {
        let tenant = Api::<Tenant>::all(self.root.clone())
            .get(&self.name)
            .await
            .expect("tenant");
        serde_json::to_value(tenant.status).expect("status")
    }
}

/// The refusal names the isolation policy, the rule and a BSI requirement.
fn assert_refused_by(answer: &Answer, rule: &str) {
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.message.contains("verbund-tenant-isolation"),
        "{}",
        answer.message
    );
    assert!(
        answer.message.contains(&format!("{rule}: ")),
        "names {rule}: {}",
        answer.message
    );
    assert!(
        answer.message.contains("BSI IT-Grundschutz APP.4.4.A"),
        "{}",
        answer.message
    );
}

fn service(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["ports"] = json!([{ "name": "http", "port": 80, "targetPort": 8080 }]);
    if spec.get("type") != Some(&json!("ExternalName")) {
        spec["selector"] = json!({ "app": name });
    }
    json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name }, "spec": spec })
}

fn ingress(name: &str, host: &str, path: &str, extra: Value) -> Value {
    let mut object = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": { "name": name },
        "spec": { "rules": [{ "host": host, "http": { "paths": [{
            "path": path, "pathType": "Prefix",
            "backend": { "service": { "name": "web", "port": { "number": 80 } } }
        }]}}]}
    });
    merge(&mut object, &extra);
    object
}

/// Merges `extra` into `object` (objects key by key, anything else replaced).
fn merge(object: &mut Value, extra: &Value) {
    match (object, extra) {
        (Value::Object(o), Value::Object(e)) => {
            for (k, v) in e {
                merge(o.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (o, e) => *o = e.clone(),
    }
}

fn portal_service(name: &str, host: &str, path: &str) -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService",
        "metadata": { "name": name },
        "spec": {
            "image": "registry.saarland.de/portal/formular:1.0",
            "ports": [{ "name": "http", "port": 8080 }],
            "exposure": { "host": host, "path": path },
        }
    })
}

#[tokio::test]
async fn services_that_reach_past_the_tenant_are_refused() {
    let cp = pool().await;
    let t = tenancy(cp, "svc", json!([])).await;
    for (name, spec, rule) in [
        ("np", json!({ "type": "NodePort" }), "serviceTypeClusterIP"),
        (
            "lb",
            json!({ "type": "LoadBalancer" }),
            "serviceTypeClusterIP",
        ),
        (
            "extname",
            json!({ "type": "ExternalName", "externalName": "kubernetes.default.svc.cluster.local" }),
            "serviceTypeClusterIP",
        ),
    ] {
        let answer = t.refused(&service(name, spec)).await;
        assert_refused_by(&answer, rule);
    }
    // The API server's own DenyServiceExternalIPs refuses first; Verbund's rule backs it up.
    let hijack = t
        .dry_run(&service("hijack", json!({ "externalIPs": ["10.96.0.1"] })))
        .await;
    assert_eq!(hijack.status, 403, "{hijack:?}");
    assert!(
        hijack.message.contains("external IPs"),
        "{}",
        hijack.message
    );
    let plain = t.dry_run(&service("web", json!({}))).await;
    assert!(plain.admitted(), "a ClusterIP Service is fine: {plain:?}");
}

#[tokio::test]
async fn ingresses_and_exposures_stay_on_the_tenants_routes() {
    let cp = pool().await;
    let suffix = unique_name("h");
    let shared = format!("portal-{suffix}.example.de");
    let own = format!("land-{suffix}.example.de");
    let land = tenancy(
        cp,
        "land",
        json!([{ "host": shared, "pathPrefix": "/" }, { "host": own }]),
    )
    .await;
    let town = tenancy(
        cp,
        "town",
        json!([{ "host": shared, "pathPrefix": "/town" }]),
    )
    .await;

    // The town's prefix is carved out of the Land's route on the shared host.
    let land_tenant = land.name.clone();
    wait::until(TIMEOUT, "the town's prefix carved out", || async {
        let status = land.status().await;
        let routes = status["routes"].clone();
        let carved = routes
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["host"] == json!(shared) && r["except"] == json!(["/town"]));
        if carved {
            Ok(())
        } else {
            Err(format!("{land_tenant}: {routes}"))
        }
    })
    .await;

    // Taking the town's URLs, or a host nobody gave: refused.
    let theft = land
        .refused(&ingress("steal", &shared, "/town/kfz", json!({})))
        .await;
    assert_refused_by(&theft, "ingressWithinRoutes");
    let elsewhere = town.refused(&ingress("other", &own, "/", json!({}))).await;
    assert_refused_by(&elsewhere, "ingressWithinRoutes");
    let above = town
        .refused(&ingress("above", &shared, "/", json!({})))
        .await;
    assert_refused_by(&above, "ingressWithinRoutes");
    let tls = land
        .refused(&ingress(
            "tls",
            &own,
            "/",
            json!({ "spec": { "tls": [{ "hosts": ["bank.example.de"], "secretName": "x" }] } }),
        ))
        .await;
    assert_refused_by(&tls, "ingressWithinRoutes");
    let default_backend = land
        .refused(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": { "name": "catch-all" },
            "spec": { "defaultBackend": { "service": { "name": "web", "port": { "number": 80 } } } }
        }))
        .await;
    assert_refused_by(&default_backend, "ingressWithinRoutes");
    let mut regex = ingress("regex", &own, "/", json!({}));
    regex["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("ImplementationSpecific");
    regex["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/.*");
    assert_refused_by(&land.refused(&regex).await, "ingressWithinRoutes");
    let steer = land
        .refused(&ingress(
            "mirror",
            &own,
            "/",
            json!({ "metadata": { "annotations": {
                "nginx.ingress.kubernetes.io/auth-url": "http://evil.example/",
                "nginx.ingress.kubernetes.io/ssl-redirect": "true"
            }}}),
        ))
        .await;
    assert_refused_by(&steer, "ingressAnnotationsAllowed");
    assert!(
        steer
            .message
            .contains("nginx.ingress.kubernetes.io/auth-url")
            && !steer.message.contains("ssl-redirect"),
        "names the annotation that is not allowed: {}",
        steer.message
    );
    let exposure = town
        .refused(&portal_service("antrag", &shared, "/land"))
        .await;
    assert_refused_by(&exposure, "exposureWithinRoutes");

    // What each holds stays usable.
    for (who, object) in [
        (&land, ingress("start", &shared, "/", json!({}))),
        (&land, ingress("near", &shared, "/townhall", json!({}))),
        (
            &land,
            ingress(
                "own",
                &own,
                "/",
                json!({ "metadata": { "annotations": {
            "nginx.ingress.kubernetes.io/ssl-redirect": "true" }}}),
            ),
        ),
        (&town, ingress("kfz", &shared, "/town/kfz", json!({}))),
        (&town, portal_service("antrag", &shared, "/town/antrag")),
    ] {
        let answer = who.dry_run(&object).await;
        assert!(
            answer.admitted(),
            "{}: {answer:?}",
            object["metadata"]["name"]
        );
    }

    // The same route declared by a later tenant belongs to the first.
    let late = unique_name("late");
    let late_ns = format!("{late}-ns");
    apply_tenant(
        &land.root,
        &tenant_body(
            &late,
            &late_ns,
            json!([{ "host": shared, "pathPrefix": "/town" }]),
            "Delete",
        ),
    )
    .await;
    let tenants: Api<Tenant> = Api::all(land.root.clone());
    let refused = wait::not_ready_because(&tenants, &late, "RouteHeldByOtherTenant", TIMEOUT).await;
    assert!(refused.contains(&town.name), "{refused}");
    assert!(refused.contains("spec.routes"), "{refused}");
    tenants
        .delete(&late, &DeleteParams::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn service_account_token_secrets_are_refused() {
    let cp = pool().await;
    let t = tenancy(cp, "tok", json!([])).await;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "forever", "annotations": { "kubernetes.io/service-account.name": "default" } },
        "type": "kubernetes.io/service-account-token"
    });
    assert_refused_by(&t.refused(&secret).await, "noServiceAccountTokenSecrets");
    let opaque = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "zugang" }, "type": "Opaque", "stringData": { "k": "v" }
    });
    assert!(t.dry_run(&opaque).await.admitted());
}

#[tokio::test]
async fn a_portal_service_never_takes_a_guard_rail_or_a_hand_made_object() {
    let cp = pool().await;
    let host = format!("{}.example.de", unique_name("names"));
    let t = tenancy(cp, "names", json!([{ "host": host }])).await;
    // A service named like a guard rail: refused by the schema, naming the field.
    let mut rail = portal_service("verbund-default-deny", "x.example.de", "/");
    rail["spec"].as_object_mut().map(|s| s.remove("exposure"));
    let answer = t.dry_run(&rail).await;
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(
        answer.message.contains("metadata.name") && answer.message.contains("verbund-"),
        "{}",
        answer.message
    );

    // A child name taken by hand: reported, never applied over. (A site, so that the
    // service gets as far as its children.)
    let site = unique_name("rz");
    let sites: Api<Site> = Api::all(t.root.clone());
    sites
        .patch(
            &site,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(json!({
                "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
                "metadata": { "name": site },
                "spec": { "displayName": "Testrechenzentrum", "operatedBy": { "kind": "State", "name": "Land" },
                          "maxProtectionLevel": "VeryHigh" }
            })),
        )
        .await
        .expect("site");
    let accounts: Api<ServiceAccount> = Api::namespaced(t.admin.clone(), &t.ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": { "name": "formular", "labels": { "hand": "made" } } }),
            )
            .expect("sa"),
        )
        .await
        .expect("the tenant admin may create service accounts");
    let service = portal_service("formular", &host, "/antrag");
    let services: Api<PortalService> = Api::namespaced(t.admin.clone(), &t.ns);
    services
        .patch(
            "formular",
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(&service),
        )
        .await
        .expect("portal service accepted");
    let conflict = wait::not_ready_because(&services, "formular", "NameConflict", TIMEOUT).await;
    assert!(
        conflict.contains("ServiceAccount") && conflict.contains("formular"),
        "{conflict}"
    );
    let kept = accounts.get("formular").await.expect("still there");
    assert!(kept.owner_references().is_empty(), "not adopted");
    assert_eq!(kept.labels().get("hand").map(String::as_str), Some("made"));

    // Once the hand-made object is gone, the service gets its own.
    accounts
        .delete("formular", &DeleteParams::default())
        .await
        .expect("delete");
    wait::until(
        Duration::from_secs(120),
        "the service's own account",
        || async {
            let sa = accounts
                .get_opt("formular")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_string())?;
            if sa
                .owner_references()
                .iter()
                .any(|o| o.kind == "PortalService")
            {
                Ok(())
            } else {
                Err("not the service's".to_string())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn admins_are_bound_only_after_the_guard_rails_hold() {
    let cp = pool().await;
    let root = cp.client().await;
    let name = unique_name("order");
    let ns = format!("{name}-ns");
    let bindings: Api<RoleBinding> = Api::namespaced(root.clone(), &ns);
    let config = watcher::Config::default().fields("metadata.name=verbund-tenant-admins");
    let first = tokio::spawn(async move {
        watcher(bindings, config)
            .applied_objects()
            .boxed()
            .try_next()
            .await
    });
    apply_tenant(&root, &tenant_body(&name, &ns, json!([]), "Delete")).await;
    let binding = tokio::time::timeout(TIMEOUT, first)
        .await
        .expect("the admins are bound in time")
        .expect("watch task")
        .expect("watch")
        .expect("a binding");
    assert_eq!(binding.namespace().as_deref(), Some(ns.as_str()));
    // The moment the admins could act, every guard rail was there.
    let namespace = Api::<Namespace>::all(root.clone())
        .get(&ns)
        .await
        .expect("namespace");
    assert_eq!(
        namespace
            .labels()
            .get("verbund.saarland.de/baseline")
            .map(String::as_str),
        Some(TEST_BASELINE)
    );
    assert!(
        Api::<ResourceQuota>::namespaced(root.clone(), &ns)
            .get_opt("verbund-tenant-quota")
            .await
            .expect("get")
            .is_some(),
        "quota before admins"
    );
    assert!(
        Api::<NetworkPolicy>::namespaced(root.clone(), &ns)
            .get_opt("verbund-default-deny")
            .await
            .expect("get")
            .is_some(),
        "default-deny before admins"
    );
    assert!(
        Api::<ValidatingAdmissionPolicyBinding>::all(root.clone())
            .get_opt(&format!("verbund-isolation-{name}"))
            .await
            .expect("get")
            .is_some(),
        "isolation bound before admins"
    );
    Api::<Tenant>::all(root)
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn admin_service_accounts_come_only_from_the_tenants_own_namespaces() {
    let cp = pool().await;
    let root = cp.client().await;
    let name = unique_name("sa");
    let mut body = tenant_body(&name, &format!("{name}-ns"), json!([]), "Delete");
    body["spec"]["admins"] =
        json!([{ "kind": "ServiceAccount", "name": "ci", "namespace": "kube-system" }]);
    let error = Api::<Tenant>::all(root)
        .patch(
            &name,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(&body),
        )
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("spec.admins") && message.contains("own spec.namespaces"),
        "{message}"
    );
}

#[tokio::test]
async fn a_released_namespace_keeps_its_default_deny_and_is_not_handed_over_silently() {
    let cp = pool().await;
    let root = cp.client().await;
    let first = unique_name("rel");
    let ns = format!("{first}-ns");
    apply_tenant(&root, &tenant_body(&first, &ns, json!([]), "Retain")).await;
    let tenants: Api<Tenant> = Api::all(root.clone());
    wait::ready(&tenants, &first, TIMEOUT).await;
    tenants
        .delete(&first, &DeleteParams::default())
        .await
        .expect("delete");
    wait::until(TIMEOUT, "tenant gone", || async {
        match tenants.get_opt(&first).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;

    let namespaces: Api<Namespace> = Api::all(root.clone());
    let released = namespaces.get(&ns).await.expect("kept");
    let labels = released.labels();
    assert_eq!(
        labels.get("verbund.saarland.de/released-from"),
        Some(&first),
        "{labels:?}"
    );
    assert!(!labels.contains_key("verbund.saarland.de/tenant"));
    assert_eq!(
        labels
            .get("verbund.saarland.de/baseline")
            .map(String::as_str),
        Some(TEST_BASELINE),
        "admission still guards what runs there"
    );
    // Garbage collection ran (the tenant is gone); the default-deny has no owner to follow.
    let policies: Api<NetworkPolicy> = Api::namespaced(root.clone(), &ns);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deny = policies
        .get_opt("verbund-default-deny")
        .await
        .expect("get")
        .expect("default-deny kept");
    assert!(deny.owner_references().is_empty());
    assert!(
        policies
            .get_opt("verbund-allow-tenant")
            .await
            .expect("get")
            .is_none(),
        "the policies that open it are gone"
    );

    // Another tenant claiming the name is refused, naming who released it...
    let second = unique_name("claim");
    apply_tenant(&root, &tenant_body(&second, &ns, json!([]), "Delete")).await;
    let refusal =
        wait::not_ready_because(&tenants, &second, "NamespaceOwnedByOtherTenant", TIMEOUT).await;
    assert!(
        refusal.contains(&first) && refusal.contains("released-from"),
        "{refusal}"
    );
    // ...until an administrator hands it over.
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "labels": { "verbund.saarland.de/released-from": null } } }),
            ),
        )
        .await
        .expect("label removed");
    wait::ready(&tenants, &second, Duration::from_secs(120)).await;
    let claimed = namespaces.get(&ns).await.expect("namespace");
    assert_eq!(
        claimed.labels().get("verbund.saarland.de/tenant"),
        Some(&second)
    );
    tenants
        .delete(&second, &DeleteParams::default())
        .await
        .expect("delete");
}

/// Creates a site certified for `level`; its zone is its name.
async fn site(root: &Client, level: &str) -> String {
    let name = unique_name("rz");
    Api::<Site>::all(root.clone())
        .patch(
            &name,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(json!({
                "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
                "metadata": { "name": name },
                "spec": { "displayName": "Testrechenzentrum", "operatedBy": { "kind": "State", "name": "Land" },
                          "maxProtectionLevel": level }
            })),
        )
        .await
        .expect("site");
    name
}

/// A Deployment whose pod template has `labels` and `spec` merged in.
fn workload(name: &str, labels: Value, spec: Value) -> Value {
    let mut object = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "registry.saarland.de/portal/app:1.0" }] }
            }
        }
    });
    merge(
        &mut object["spec"]["template"]["metadata"]["labels"],
        &labels,
    );
    merge(&mut object["spec"]["template"]["spec"], &spec);
    object
}

/// A Pod that Pod Security `restricted` admits, with `spec` merged in.
fn restricted_pod(name: &str, spec: Value) -> Value {
    let mut object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "app",
                "image": "registry.saarland.de/portal/app:1.0",
                "resources": { "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "cpu": "100m", "memory": "64Mi" } },
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
            }]
        }
    });
    merge(&mut object["spec"], &spec);
    object
}

const ZONE: &str = "topology.kubernetes.io/zone";

fn in_zones(zones: &[&str]) -> Value {
    json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{ "matchExpressions": [{ "key": ZONE, "operator": "In", "values": zones }] }]
    }}}})
}

#[tokio::test]
async fn pods_run_only_at_the_tenants_sites_certified_for_their_protection_level() {
    let cp = pool().await;
    let root = cp.client().await;
    let normal = site(&root, "Normal").await;
    let very_high = site(&root, "VeryHigh").await;
    let t = tenancy_with(
        cp,
        "place",
        json!([]),
        json!({ "maxProtectionLevel": "VeryHigh", "allowedSites": [normal, very_high], "priorityClasses": ["portal-batch"] }),
    )
    .await;
    wait::until(TIMEOUT, "the tenant's sites in its status", || async {
        let sites = t.status().await["sites"].clone();
        if sites.as_array().map(Vec::len) == Some(2) {
            Ok(())
        } else {
            Err(sites)
        }
    })
    .await;

    // Unplaced, or at the Normal site without saying the pod's protection level is Normal
    // (the tenant's highest, VeryHigh, counts): refused, naming the zones that would do.
    let unplaced = t.refused(&workload("unplaced", json!({}), json!({}))).await;
    assert_refused_by(&unplaced, "placementWithinSites");
    assert!(
        unplaced
            .message
            .contains(&format!("VeryHigh may run in the zones [{very_high}]")),
        "{}",
        unplaced.message
    );
    for (name, labels, spec) in [
        (
            "at-normal",
            json!({}),
            json!({ "nodeSelector": { ZONE: normal } }),
        ),
        (
            "elsewhere",
            json!({ "verbund.saarland.de/protection-level": "Normal" }),
            in_zones(&[&normal, "rz-fremd"]),
        ),
        (
            "node-name",
            json!({}),
            json!({ "nodeName": "node-1", "nodeSelector": { ZONE: very_high } }),
        ),
        // One term narrowed, the other not: the scheduler may pick either.
        (
            "open-term",
            json!({}),
            json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                { "matchExpressions": [{ "key": ZONE, "operator": "In", "values": [very_high] }] },
                { "matchExpressions": [{ "key": "kubernetes.io/os", "operator": "In", "values": ["linux"] }] }
            ] }}}}),
        ),
    ] {
        let answer = t.dry_run(&workload(name, labels, spec)).await;
        assert_refused_by(&answer, "placementWithinSites");
    }
    let pod = restricted_pod("at-normal-pod", json!({ "nodeSelector": { ZONE: normal } }));
    assert_refused_by(&t.dry_run(&pod).await, "placementWithinSites");

    // Placed as the rule asks: admitted.
    for (name, labels, spec) in [
        (
            "at-very-high",
            json!({}),
            json!({ "nodeSelector": { ZONE: very_high } }),
        ),
        (
            "normal-anywhere",
            json!({ "verbund.saarland.de/protection-level": "Normal" }),
            in_zones(&[&normal, &very_high]),
        ),
    ] {
        let answer = t.dry_run(&workload(name, labels, spec)).await;
        assert!(answer.admitted(), "{name}: {answer:?}");
    }

    // Next to another tenant's pods: refused; within the tenant: admitted.
    let placed = json!({ "nodeSelector": { ZONE: very_high } });
    let term = |namespaces: Value, selector: Option<Value>| {
        let mut term = json!({ "topologyKey": ZONE, "labelSelector": { "matchLabels": { "app": "x" } }, "namespaces": namespaces });
        if let Some(selector) = selector {
            term["namespaceSelector"] = selector;
        }
        term
    };
    let mut next_to_others = placed.clone();
    merge(
        &mut next_to_others,
        &json!({ "affinity": { "podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [term(json!(["kube-system"]), None)] }}}),
    );
    let mut any_namespace = placed.clone();
    merge(
        &mut any_namespace,
        &json!({ "affinity": { "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{ "weight": 10, "podAffinityTerm": term(json!([]), Some(json!({}))) }] }}}),
    );
    let mut own = placed.clone();
    merge(
        &mut own,
        &json!({ "affinity": { "podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [term(json!([t.ns]), None)] }}}),
    );
    assert_refused_by(
        &t.dry_run(&workload("next-to", json!({}), next_to_others))
            .await,
        "affinityWithinTenant",
    );
    assert_refused_by(
        &t.dry_run(&workload("any-ns", json!({}), any_namespace))
            .await,
        "affinityWithinTenant",
    );
    let answer = t.dry_run(&workload("own", json!({}), own)).await;
    assert!(answer.admitted(), "{answer:?}");

    // A priority class the tenant is not offered would preempt other tenants' pods.
    let mut critical = placed.clone();
    critical["priorityClassName"] = json!("system-cluster-critical");
    assert_refused_by(
        &t.dry_run(&workload("critical", json!({}), critical)).await,
        "priorityClassAllowed",
    );
    let mut offered = placed.clone();
    offered["priorityClassName"] = json!("portal-batch");
    let answer = t.dry_run(&workload("offered", json!({}), offered)).await;
    assert!(answer.admitted(), "{answer:?}");
}

/// The quota of `ns` once the controller-manager has counted it for `key`.
async fn counted_quota(root: &Client, ns: &str, key: &str) -> ResourceQuota {
    let quotas: Api<ResourceQuota> = Api::namespaced(root.clone(), ns);
    wait::until(TIMEOUT, &format!("{key} counted in {ns}"), || async {
        let quota = quotas
            .get_opt("verbund-tenant-quota")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no quota yet".to_string())?;
        let counted = quota
            .status
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .is_some_and(|h| h.contains_key(key));
        if counted {
            Ok(quota)
        } else {
            Err("not counted yet".to_string())
        }
    })
    .await
}

#[tokio::test]
async fn the_quota_bounds_limits_storage_and_objects() {
    let cp = pool().await;
    let root = cp.client().await;
    let zone = site(&root, "VeryHigh").await;
    let t = tenancy_with(
        cp,
        "objects",
        json!([]),
        json!({ "quota": { "objectsPerNamespace": 10 } }),
    )
    .await;
    let quota = counted_quota(&root, &t.ns, "count/configmaps").await;
    let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
    for (key, value) in [
        ("requests.storage", "0"),
        ("persistentvolumeclaims", "0"),
        ("services.nodeports", "0"),
        ("services.loadbalancers", "0"),
        ("count/configmaps", "10"),
        ("count/secrets", "10"),
        ("count/replicasets.apps", "110"),
        ("limits.ephemeral-storage", "20Gi"),
    ] {
        assert_eq!(hard.get(key).map(|q| q.0.as_str()), Some(value), "{key}");
    }

    // Tiny requests with huge limits: refused by the LimitRange.
    let pods_ready = || async {
        Api::<ServiceAccount>::namespaced(root.clone(), &t.ns)
            .get_opt("default")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no default service account yet".to_string())
    };
    wait::until(TIMEOUT, "the default service account", pods_ready).await;
    let greedy = restricted_pod(
        "greedy",
        json!({
            "nodeSelector": { ZONE: zone },
            "containers": [{
            "name": "app", "image": "registry.saarland.de/portal/app:1.0",
            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "cpu": "100m", "memory": "1Gi" } },
            "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
        }]
        }),
    );
    let answer = t.dry_run(&greedy).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer
            .message
            .contains("memory max limit to request ratio per Container is 4"),
        "{}",
        answer.message
    );

    // No storage in the tenant's quota: no claim.
    counted_quota(&root, &t.ns, "requests.storage").await;
    let claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": "daten" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
    });
    let answer = t.dry_run(&claim).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer
            .message
            .contains("exceeded quota: verbund-tenant-quota"),
        "{}",
        answer.message
    );

    // An object flood stops at the count (the namespace's own CA ConfigMap counts too).
    let mut created = 0;
    let refusal = loop {
        let config = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("flut-{created}") }, "data": { "x": "y" } });
        let answer = admission::create(&t.admin, &t.ns, &config, false).await;
        if !answer.admitted() {
            break answer;
        }
        created += 1;
        assert!(created <= 10, "more ConfigMaps than the quota's count");
    };
    assert_eq!(refusal.status, 403, "{refusal:?}");
    assert!(
        refusal.message.contains("count/configmaps"),
        "{}",
        refusal.message
    );

    // A new count in the Tenant reaches the quota though CPU, memory and pods stay as they were.
    let mut body = tenant_body(&t.name, &t.ns, json!([]), "Delete");
    body["spec"]["quota"]["objectsPerNamespace"] = json!(20);
    apply_tenant(&root, &body).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(root.clone(), &t.ns);
    wait::until(TIMEOUT, "the new count in the quota", || async {
        let quota = quotas
            .get("verbund-tenant-quota")
            .await
            .map_err(|e| e.to_string())?;
        let count = quota
            .spec
            .and_then(|s| s.hard)
            .and_then(|h| h.get("count/configmaps").map(|q| q.0.clone()));
        if count.as_deref() == Some("20") {
            Ok(())
        } else {
            Err(format!("{count:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_deleted_isolation_binding_comes_back() {
    let cp = pool().await;
    let t = tenancy(cp, "rebind", json!([])).await;
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(t.root.clone());
    let name = format!("verbund-isolation-{}", t.name);
    let before = bindings.get(&name).await.expect("binding").uid();
    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleted");
    wait::until(TIMEOUT, "the binding restored", || async {
        let now = bindings
            .get_opt(&name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "absent".to_string())?;
        if now.uid() != before {
            Ok(())
        } else {
            Err("not yet deleted".to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn pod_refusals_name_the_verbund_rule_where_pod_security_only_warns() {
    use verbund_operator::api::security_baseline::RuleName;
    use verbund_operator::baseline::{fixtures, rules};
    let cp = pool().await;
    let root = cp.client().await;
    let zone = site(&root, "VeryHigh").await;
    // An enforcing baseline with every rule: it covers every check of Pod Security
    // `restricted`, so Pod Security warns and audits there and Verbund refuses.
    let baseline = unique_name("sbl-psa");
    Api::<verbund_operator::api::SecurityBaseline>::all(root.clone())
        .patch(
            &baseline,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(json!({
                "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "SecurityBaseline",
                "metadata": { "name": baseline },
                "spec": { "protectionLevel": "High", "enforcement": "Enforce", "podSecurity": "Restricted", "rules": fixtures::all_rules() }
            })),
        )
        .await
        .expect("baseline");
    let t = tenancy_with(cp, "psa", json!([]), json!({ "baseline": baseline })).await;
    let labels = Api::<Namespace>::all(root.clone())
        .get(&t.ns)
        .await
        .expect("ns")
        .labels()
        .clone();
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
    Api::<ServiceAccount>::namespaced(root.clone(), &t.ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": fixtures::SERVICE_ACCOUNT } }))
                .expect("sa"),
        )
        .await
        .expect("service account");
    let policy = format!("ValidatingAdmissionPolicy 'verbund-{baseline}'");
    let placed = |rule: RuleName| {
        let mut pod = fixtures::breaking(rule, "Pod").object;
        pod["spec"]["nodeSelector"] = json!({ ZONE: zone });
        pod
    };
    // Pod Security `baseline` and `restricted` checks, each met first by Verbund's rule.
    for rule in [
        RuleName::NoPrivilegeEscalation,
        RuleName::NoHostNamespaces,
        RuleName::NoHostPath,
        RuleName::NoHostPorts,
        RuleName::KernelIsolation,
        RuleName::NoHostProbes,
        RuleName::SeccompRuntimeDefault,
        RuleName::DropAllCapabilities,
        RuleName::RunAsNonRoot,
        RuleName::AllowedVolumeTypes,
    ] {
        let pod = placed(rule);
        let answer = wait::until(TIMEOUT, "the baseline in force", || async {
            let answer = t.dry_run(&pod).await;
            if answer.message.contains(&policy) {
                Ok(answer)
            } else {
                Err(answer)
            }
        })
        .await;
        assert_eq!(answer.status, 403, "{answer:?}");
        let key = rules::rule_key(rule);
        assert!(
            answer.message.contains(&format!("{key}: ")),
            "{key}: {}",
            answer.message
        );
        assert!(
            !answer.message.contains("PodSecurity"),
            "{key}: {}",
            answer.message
        );
        for id in rules::rule(rule).bsi {
            assert!(
                answer.message.contains(id),
                "{key}: {id}: {}",
                answer.message
            );
        }
    }
    let mut compliant = fixtures::compliant()[0].object.clone();
    compliant["spec"]["nodeSelector"] = json!({ ZONE: zone });
    let answer = t.dry_run(&compliant).await;
    assert!(answer.admitted(), "{answer:?}");
    assert!(answer.warnings.is_empty(), "{:?}", answer.warnings);
}
