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
    let root = cp.client().await;
    let name = unique_name(prefix);
    let ns = format!("{name}-ns");
    apply_tenant(&root, &tenant_body(&name, &ns, routes, "Delete")).await;
    wait::ready(&Api::<Tenant>::all(root.clone()), &name, TIMEOUT).await;
    let admin = cp.impersonate(&format!("anna@{name}"), &[]).await;
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

    /// Waits until admission answers `object` with a refusal (the API server picks up new
    /// bindings and parameters within a few seconds), and returns that answer.
    async fn refused(&self, object: &Value) -> Answer {
        wait::until(TIMEOUT, "the isolation policy in force", || async {
            let answer = self.dry_run(object).await;
            if answer.status == 403 {
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
