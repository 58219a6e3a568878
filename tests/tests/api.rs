//! The Verbund API as the API server sees it: the CRDs install and are served, the examples are
//! accepted as they are, `kubectl explain` shows the documentation, and bad input is refused
//! with a message that names the offending field.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use verbund_operator::api::{PortalService, SecurityBaseline, Site, Tenant};
use verbund_tests::control_plane::{self, ControlPlane};
use verbund_tests::{crds, examples};

/// The shared control plane with the CRDs installed (once per test binary).
async fn api_server() -> &'static ControlPlane {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cp = control_plane::shared().await;
    INSTALLED
        .get_or_init(|| async { crds::install(&cp.client().await).await })
        .await;
    cp
}

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "Site" => ApiResource::erase::<Site>(&()),
        "Tenant" => ApiResource::erase::<Tenant>(&()),
        "SecurityBaseline" => ApiResource::erase::<SecurityBaseline>(&()),
        "PortalService" => ApiResource::erase::<PortalService>(&()),
        other => panic!("not a Verbund kind: {other}"),
    }
}

fn dynamic_api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = api_resource(kind);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

#[tokio::test]
async fn every_crd_is_established_with_its_names_and_columns() {
    let cp = api_server().await;
    let api: Api<CustomResourceDefinition> = Api::all(cp.client().await);
    for (plural, short) in [
        ("sites", "site"),
        ("tenants", "tn"),
        ("securitybaselines", "sbl"),
        ("portalservices", "ps"),
    ] {
        let crd = api
            .get(&format!("{plural}.verbund.saarland.de"))
            .await
            .expect("CRD installed");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{plural} not Established");
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
    }

    // `kubectl get` resolves the short names and the category, and shows the columns.
    let out = cp.kubectl().ok(["get", "site,tn,sbl,ps", "-A"]).await;
    assert!(
        out.contains("No resources found") || out.is_empty(),
        "{out}"
    );
    let out = cp.kubectl().ok(["get", "verbund", "-A"]).await;
    assert!(
        out.contains("No resources found") || out.is_empty(),
        "{out}"
    );
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_documentation() {
    let cp = api_server().await;
    let cases = [
        (
            "portalservice.spec.catalog.serviceKey",
            "Leistungsschlüssel",
        ),
        (
            "portalservice.spec.placement.spread",
            "spread evenly over the sites",
        ),
        ("site.spec.maxProtectionLevel", "certified for"),
        ("tenant.spec.deletionPolicy", "Retain"),
        (
            "tenant.spec.organisation.regionalKey",
            "Amtlicher Regionalschlüssel",
        ),
        ("securitybaseline.spec.exceptions.expires", "time-bounded"),
        (
            "securitybaseline.spec.rules.readOnlyRootFilesystem",
            "SYS.1.6.A23",
        ),
    ];
    for (path, expected) in cases {
        // The API server publishes a new CRD's OpenAPI shortly after it is Established.
        let out = verbund_tests::wait::until(Duration::from_secs(30), path, || async move {
            let out = cp.kubectl().run(["explain", path]).await;
            if out.success {
                Ok(out.stdout)
            } else {
                Err(out.stderr)
            }
        })
        .await;
        assert!(
            out.contains(expected),
            "kubectl explain {path} lacks {expected:?}:\n{out}"
        );
    }
}

/// `kubectl explain site` (and `tn`, `sbl`, `ps`) describes the kind itself, not a placeholder.
#[tokio::test]
async fn kubectl_explain_describes_every_kind() {
    let cp = api_server().await;
    for (short, expected) in [
        ("site", "data-centre site contributing machines to the pool"),
        ("tn", "organisation that uses the pool"),
        ("sbl", "BSI IT-Grundschutz"),
        ("ps", "online service of the citizens' portal"),
    ] {
        let out = verbund_tests::wait::until(Duration::from_secs(30), short, || async move {
            let out = cp.kubectl().run(["explain", short]).await;
            if out.success {
                Ok(out.stdout)
            } else {
                Err(out.stderr)
            }
        })
        .await;
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(expected),
            "kubectl explain {short} lacks {expected:?}:\n{out}"
        );
        assert!(
            !out.contains("Auto-generated"),
            "kubectl explain {short}:\n{out}"
        );
    }
}

/// Every notation of Kubernetes' quantity language is stored by the API server and read back
/// by the operator as the API server means it; what the API server refuses, the operator
/// refuses too. The CEL rules of the Tenant quota parse with the API server's own parser, so a
/// value the schema let through but Kubernetes could not read would be refused here.
#[tokio::test]
async fn the_schema_and_the_operator_read_quantities_alike() {
    use verbund_operator::quantity::Amount;
    let cp = api_server().await;
    let client = cp.client().await;
    let tenants = dynamic_api(&client, "Tenant", None);
    // (quantity, millicores as Kubernetes' MilliValue gives them)
    let accepted: [(Value, i128); 22] = [
        (json!("1"), 1000),
        (json!("250m"), 250),
        (json!("1.5"), 1500),
        (json!(".5"), 500),
        (json!("1."), 1000),
        (json!("+2"), 2000),
        (json!("1000000n"), 1),
        (json!("1n"), 1),
        (json!("2000u"), 2),
        (json!("2k"), 2_000_000),
        (json!("1M"), 1_000_000_000),
        (json!("1G"), 1_000_000_000_000),
        (json!("1T"), 1_000_000_000_000_000),
        (json!("1P"), 1_000_000_000_000_000_000),
        (json!("1E"), 1_000_000_000_000_000_000_000),
        (json!("1Ki"), 1_024_000),
        (json!("1Mi"), 1_048_576_000),
        (json!("1.5Gi"), 1_610_612_736_000),
        (json!("2e3"), 2_000_000),
        (json!("5E-1"), 500),
        (json!("1e+2"), 100_000),
        (json!(4), 4000),
    ];
    for (i, (quantity, millis)) in accepted.iter().enumerate() {
        let name = format!("quantity-{i}");
        let tenant = set(base_tenant(&name), "/spec/quota/cpu", quantity.clone());
        let stored = tenants
            .patch(
                &name,
                &PatchParams::apply("verbund-tests"),
                &Patch::Apply(&tenant),
            )
            .await
            .unwrap_or_else(|e| panic!("{quantity} refused: {e}"));
        let typed: Tenant = serde_json::from_value(serde_json::to_value(&stored).expect("json"))
            .expect("the operator's types read the stored tenant");
        assert_eq!(
            Amount::of(&typed.spec.quota.cpu),
            Ok(Amount(*millis)),
            "{quantity} read back"
        );
    }
    for quantity in [
        "1e1.5", "1K", "1ki", "1e", "1.2.3", "e3", "1 Gi", "--1", "0x10",
    ] {
        let tenant = set(
            base_tenant("quantity-bad"),
            "/spec/quota/cpu",
            json!(quantity),
        );
        let refused = tenants
            .patch(
                "quantity-bad",
                &PatchParams::apply("verbund-tests").dry_run(),
                &Patch::Apply(&tenant),
            )
            .await;
        assert!(refused.is_err(), "the API server stored {quantity:?}");
        assert!(
            Amount::parse(quantity).is_err(),
            "the operator reads {quantity:?}"
        );
    }
}

/// Creates the namespaces the example services live in (the operator does this in a real pool).
async fn example_namespaces(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for doc in examples::saarland() {
        if let Some(ns) = doc.namespace() {
            let body =
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
            namespaces
                .patch(
                    ns,
                    &PatchParams::apply("verbund-tests"),
                    &Patch::Apply(&body),
                )
                .await
                .expect("namespace");
        }
    }
}

#[tokio::test]
async fn the_saarland_example_is_accepted_by_kubectl_server_side_apply() {
    let cp = api_server().await;
    example_namespaces(&cp.client().await).await;
    let dir = examples::saarland_dir();
    let applied = cp
        .kubectl()
        .run([
            "apply",
            "--server-side",
            "--field-manager=verbund-example",
            "-f",
            &dir.to_string_lossy(),
        ])
        .await;
    assert!(
        applied.success,
        "kubectl apply refused the example:\n{}",
        applied.stderr
    );
    let docs = examples::saarland();
    for doc in &docs {
        let line = format!(
            "{}.verbund.saarland.de/{} serverside-applied",
            doc.kind().to_lowercase(),
            doc.name()
        );
        assert!(
            applied.stdout.contains(&line),
            "missing {line:?} in:\n{}",
            applied.stdout
        );
    }

    // Counts the demo relies on.
    let count = |kind: &str| docs.iter().filter(|d| d.kind() == kind).count();
    assert_eq!(count("Site"), 3);
    assert_eq!(count("SecurityBaseline"), 3);
    assert_eq!(count("Tenant"), 6);
    assert_eq!(count("PortalService"), 12);

    // What `kubectl get site,tn,sbl,ps -A` shows at a glance.
    let table = cp.kubectl().ok(["get", "site,tn,sbl,ps", "-A"]).await;
    for header in [
        "OPERATOR",
        "ZONE",
        "PROTECTION",
        "CPU QUOTA",
        "ENFORCEMENT",
        "SERVICE KEY",
        "SITES",
    ] {
        assert!(table.contains(header), "no column {header}:\n{table}");
    }
    assert!(table.contains("99115005104000"), "{table}");
}

#[tokio::test]
async fn the_saarland_example_is_accepted_by_the_rust_client() {
    let cp = api_server().await;
    let client = cp.client().await;
    example_namespaces(&client).await;
    for doc in examples::saarland() {
        // Typed first: the example must fit the Rust types exactly.
        let typed: Value = match doc.kind() {
            "Site" => serde_json::to_value(
                serde_json::from_value::<Site>(doc.value.clone()).expect("Site"),
            ),
            "Tenant" => serde_json::to_value(
                serde_json::from_value::<Tenant>(doc.value.clone()).expect("Tenant"),
            ),
            "SecurityBaseline" => serde_json::to_value(
                serde_json::from_value::<SecurityBaseline>(doc.value.clone())
                    .expect("SecurityBaseline"),
            ),
            "PortalService" => serde_json::to_value(
                serde_json::from_value::<PortalService>(doc.value.clone()).expect("PortalService"),
            ),
            other => panic!("unexpected kind {other} in {}", doc.file.display()),
        }
        .expect("serialisable");
        let api = dynamic_api(&client, doc.kind(), doc.namespace());
        // A dry run: validated and admitted like a real write, without storing what the
        // kubectl test (running beside this one) applies under another field manager.
        api.patch(
            doc.name(),
            &PatchParams::apply("verbund-example-rust")
                .validation_strict()
                .dry_run(),
            &Patch::Apply(&typed),
        )
        .await
        .unwrap_or_else(|e| panic!("{} {} refused: {e}", doc.kind(), doc.name()));
    }
}

#[tokio::test]
async fn the_api_server_applies_the_documented_defaults() {
    let cp = api_server().await;
    let ns = cp.namespace("defaults").await;
    let client = cp.client().await;
    let ps = dynamic_api(&client, "PortalService", Some(ns.name()));
    let created = ps
        .patch(
            "minimal",
            &PatchParams::apply("verbund-tests").validation_strict(),
            &Patch::Apply(&portal_service()),
        )
        .await
        .expect("accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["placement"]["spread"], "Required");
    assert_eq!(spec["protectionLevel"], "Normal");
    assert_eq!(spec["scaling"]["windows"][0]["timeZone"], "Europe/Berlin");
    assert_eq!(spec["resources"]["cpu"], "250m");
    assert_eq!(spec["catalog"]["languages"], json!(["de"]));

    let tenant = base_tenant("defaults-tenant");
    let tenants = dynamic_api(&client, "Tenant", None);
    let created = tenants
        .patch(
            "defaults-tenant",
            &PatchParams::apply("verbund-tests").dry_run(),
            &Patch::Apply(&tenant),
        )
        .await
        .expect("accepted");
    assert_eq!(created.data["spec"]["deletionPolicy"], "Retain");
    assert_eq!(created.data["spec"]["maxProtectionLevel"], "Normal");
}

fn base_site(name: &str) -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
        "metadata": { "name": name },
        "spec": {
            "displayName": "Testrechenzentrum",
            "operatedBy": { "kind": "State", "name": "IT-DLZ" },
            "maxProtectionLevel": "High"
        }
    })
}

fn base_tenant(name: &str) -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant",
        "metadata": { "name": name },
        "spec": {
            "displayName": "Gemeinde Testdorf",
            "organisation": { "kind": "Municipality", "name": "Gemeinde Testdorf", "regionalKey": "100420111111" },
            "admins": [{ "kind": "Group", "name": "testdorf:it" }],
            "namespaces": ["testdorf-a", "testdorf-b"],
            "quota": { "cpu": "4", "memory": "8Gi", "pods": 20 },
            "egress": [{ "name": "ewo", "cidr": "10.1.0.0/16", "ports": [{ "port": 443 }] }]
        }
    })
}

fn base_baseline(name: &str) -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "SecurityBaseline",
        "metadata": { "name": name },
        "spec": {
            "protectionLevel": "Normal",
            "rules": { "runAsNonRoot": true, "minReplicas": 2, "allowedRegistries": ["registry.saarland.de"] },
            "exceptions": [{
                "namespace": "testdorf-a",
                "rules": ["runAsNonRoot"],
                "reason": "Altverfahren, Ablösung beschlossen",
                "expires": "2027-01-31T00:00:00Z"
            }]
        }
    })
}

fn portal_service() -> Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService",
        "metadata": { "name": "minimal" },
        "spec": {
            "image": "registry.saarland.de/test/wohnsitz:1.0.0",
            "ports": [{ "name": "http", "port": 8080 }, { "name": "grpc", "port": 9090, "protocol": "Grpc" }],
            "replicas": { "min": 2, "max": 6 },
            "scaling": { "windows": [{ "name": "montag", "days": ["Monday"], "start": "08:00", "end": "12:00", "minReplicas": 4 }] },
            "env": [{ "name": "MODE", "value": "test" }],
            "probes": { "port": "http" },
            "exposure": { "host": "service.saarland.de", "path": "/test" },
            "catalog": {
                "serviceKey": "99115005104000",
                "title": "Wohnsitz anmelden",
                "responsibleAuthority": "Bürgeramt Testdorf",
                "regionalKeys": ["100420111111"],
                "accessibility": "Full",
                "trustLevel": "High",
                "onlineServiceUrl": "https://service.saarland.de/test"
            }
        }
    })
}

/// Sets the JSON pointer `path` of `value` to `new` (creating objects on the way).
fn set(mut value: Value, path: &str, new: Value) -> Value {
    let mut target = &mut value;
    for part in path.trim_start_matches('/').split('/') {
        target = match target {
            Value::Array(items) => &mut items[part.parse::<usize>().expect("index")],
            other => &mut other[part],
        };
    }
    *target = new;
    value
}

/// Removes the field at the JSON pointer `path`.
fn remove(mut value: Value, path: &str) -> Value {
    let (parent, key) = path.rsplit_once('/').expect("pointer");
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(key);
    }
    value
}

/// One invalid object and the field its refusal must name.
struct Invalid {
    what: &'static str,
    object: Value,
    field: &'static str,
}

fn invalid_objects() -> Vec<Invalid> {
    let site = || base_site("invalid-site");
    let tenant = || base_tenant("invalid-tenant");
    let sbl = || base_baseline("invalid-baseline");
    let ps = portal_service;
    let case = |what, object, field| Invalid {
        what,
        object,
        field,
    };
    vec![
        // Site
        case(
            "empty display name",
            set(site(), "/spec/displayName", json!("")),
            "spec.displayName",
        ),
        case(
            "unknown protection level",
            set(site(), "/spec/maxProtectionLevel", json!("Extreme")),
            "spec.maxProtectionLevel",
        ),
        case(
            "unknown organisation kind",
            set(site(), "/spec/operatedBy/kind", json!("Company")),
            "spec.operatedBy.kind",
        ),
        case(
            "cordoned without reason",
            set(site(), "/spec/cordoned", json!(true)),
            "spec.cordonReason",
        ),
        case(
            "cordon reason without cordon",
            set(site(), "/spec/cordonReason", json!("Wartung")),
            "spec.cordonReason",
        ),
        case(
            "zone not a label value",
            set(site(), "/spec/zone", json!("rz land!")),
            "spec.zone",
        ),
        case(
            "unknown field",
            set(site(), "/spec/colour", json!("blau")),
            "spec.colour",
        ),
        case(
            "cordoned not a boolean",
            set(site(), "/spec/cordoned", json!("ja")),
            "spec.cordoned",
        ),
        // Tenant
        case(
            "duplicate namespace",
            set(
                tenant(),
                "/spec/namespaces",
                json!(["testdorf-a", "testdorf-a"]),
            ),
            "spec.namespaces[1]",
        ),
        case(
            "namespace not a DNS label",
            set(tenant(), "/spec/namespaces/0", json!("Testdorf_A")),
            "spec.namespaces[0]",
        ),
        case(
            "no namespace",
            set(tenant(), "/spec/namespaces", json!([])),
            "spec.namespaces",
        ),
        case(
            "cpu quota not a quantity",
            set(tenant(), "/spec/quota/cpu", json!("lots")),
            "spec.quota.cpu",
        ),
        case(
            "negative memory quota",
            set(tenant(), "/spec/quota/memory", json!("-4Gi")),
            "spec.quota.memory",
        ),
        case(
            "zero pods",
            set(tenant(), "/spec/quota/pods", json!(0)),
            "spec.quota.pods",
        ),
        case(
            "pods not a number",
            set(tenant(), "/spec/quota/pods", json!("many")),
            "spec.quota.pods",
        ),
        case(
            "municipality without regional key",
            remove(tenant(), "/spec/organisation/regionalKey"),
            "spec.organisation.regionalKey",
        ),
        case(
            "regional key too short",
            set(tenant(), "/spec/organisation/regionalKey", json!("1004101")),
            "spec.organisation.regionalKey",
        ),
        case(
            "service account admin without namespace",
            set(tenant(), "/spec/admins/0/kind", json!("ServiceAccount")),
            "spec.admins[0].namespace",
        ),
        case(
            "egress with two destinations",
            set(tenant(), "/spec/egress/0/namespace", json!("shared")),
            "spec.egress[0]",
        ),
        case(
            "egress cidr out of range",
            set(tenant(), "/spec/egress/0/cidr", json!("10.0.0.0/33")),
            "spec.egress[0].cidr",
        ),
        case(
            "egress port out of range",
            set(tenant(), "/spec/egress/0/ports/0/port", json!(0)),
            "spec.egress[0].ports[0].port",
        ),
        case(
            "unknown deletion policy",
            set(tenant(), "/spec/deletionPolicy", json!("Purge")),
            "spec.deletionPolicy",
        ),
        // SecurityBaseline
        case(
            "exception without expiry",
            remove(sbl(), "/spec/exceptions/0/expires"),
            "spec.exceptions[0].expires",
        ),
        case(
            "expiry not a time",
            set(sbl(), "/spec/exceptions/0/expires", json!("next year")),
            "spec.exceptions[0].expires",
        ),
        case(
            "exception for unknown rule",
            set(sbl(), "/spec/exceptions/0/rules/0", json!("noRootKits")),
            "spec.exceptions[0].rules[0]",
        ),
        case(
            "exception reason too short",
            set(sbl(), "/spec/exceptions/0/reason", json!("weil")),
            "spec.exceptions[0].reason",
        ),
        case(
            "unknown enforcement",
            set(sbl(), "/spec/enforcement", json!("Block")),
            "spec.enforcement",
        ),
        case(
            "min replicas zero",
            set(sbl(), "/spec/rules/minReplicas", json!(0)),
            "spec.rules.minReplicas",
        ),
        case(
            "registry given as URL",
            set(
                sbl(),
                "/spec/rules/allowedRegistries/0",
                json!("https://registry.saarland.de"),
            ),
            "spec.rules.allowedRegistries[0]",
        ),
        case(
            "switch not a boolean",
            set(sbl(), "/spec/rules/runAsNonRoot", json!("yes")),
            "spec.rules.runAsNonRoot",
        ),
        case(
            "unknown rule",
            set(sbl(), "/spec/rules/noRootKits", json!(true)),
            "spec.rules.noRootKits",
        ),
        // PortalService
        case(
            "service key of 13 digits",
            set(ps(), "/spec/catalog/serviceKey", json!("9911500510400")),
            "spec.catalog.serviceKey",
        ),
        case(
            "min above max",
            set(ps(), "/spec/replicas/min", json!(8)),
            "spec.replicas",
        ),
        case(
            "max above 100",
            set(ps(), "/spec/replicas/max", json!(500)),
            "spec.replicas.max",
        ),
        case(
            "window ends before it starts",
            set(ps(), "/spec/scaling/windows/0/end", json!("07:00")),
            "spec.scaling.windows[0].end",
        ),
        case(
            "window floor above max",
            set(ps(), "/spec/scaling/windows/0/minReplicas", json!(10)),
            "spec.scaling",
        ),
        case(
            "window time malformed",
            set(ps(), "/spec/scaling/windows/0/start", json!("8 Uhr")),
            "spec.scaling.windows[0].start",
        ),
        case(
            "unknown weekday",
            set(ps(), "/spec/scaling/windows/0/days/0", json!("Funday")),
            "spec.scaling.windows[0].days[0]",
        ),
        case(
            "time zone malformed",
            set(
                ps(),
                "/spec/scaling/windows/0/timeZone",
                json!("Berlin Time"),
            ),
            "spec.scaling.windows[0].timeZone",
        ),
        case(
            "duplicate port name",
            set(ps(), "/spec/ports/1/name", json!("http")),
            "spec.ports[1]",
        ),
        case(
            "duplicate port number",
            set(ps(), "/spec/ports/1/port", json!(8080)),
            "spec.ports",
        ),
        case(
            "port out of range",
            set(ps(), "/spec/ports/0/port", json!(70000)),
            "spec.ports[0].port",
        ),
        case(
            "cpu not a quantity",
            set(ps(), "/spec/resources", json!({ "cpu": "1.5 cores" })),
            "spec.resources.cpu",
        ),
        case(
            "cpu limit below request",
            set(
                ps(),
                "/spec/resources",
                json!({ "cpu": "2", "cpuLimit": "1" }),
            ),
            "spec.resources.cpuLimit",
        ),
        case(
            "unknown protection level",
            set(ps(), "/spec/protectionLevel", json!("Secret")),
            "spec.protectionLevel",
        ),
        case(
            "env with value and secret",
            set(
                ps(),
                "/spec/env/0/secretKeyRef",
                json!({ "name": "s", "key": "k" }),
            ),
            "spec.env[0]",
        ),
        case(
            "probe on undeclared port",
            set(ps(), "/spec/probes/port", json!("metrics")),
            "spec.probes.port",
        ),
        case(
            "host not a DNS name",
            set(ps(), "/spec/exposure/host", json!("Service Portal")),
            "spec.exposure.host",
        ),
        case(
            "trust level outside eIDAS",
            set(ps(), "/spec/catalog/trustLevel", json!("Medium")),
            "spec.catalog.trustLevel",
        ),
        case(
            "regional key too short",
            set(ps(), "/spec/catalog/regionalKeys/0", json!("10041")),
            "spec.catalog.regionalKeys[0]",
        ),
        case(
            "service URL without TLS",
            set(
                ps(),
                "/spec/catalog/onlineServiceUrl",
                json!("http://service.saarland.de/x"),
            ),
            "spec.catalog.onlineServiceUrl",
        ),
        case(
            "name not a DNS-1035 label",
            set(ps(), "/metadata/name", json!("1-wohnsitz")),
            "metadata.name",
        ),
        case(
            "misspelt field",
            set(ps(), "/spec/replica", json!({ "min": 1 })),
            "spec.replica",
        ),
    ]
}

/// Creates `object` as `kubectl create` does (strict field validation), without storing it.
async fn create_strict_dry_run(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
    object: &Value,
) -> Result<DynamicObject, kube::Error> {
    let resource = api_resource(kind);
    let url = match namespace {
        Some(ns) => format!(
            "/apis/{}/namespaces/{ns}/{}",
            resource.api_version, resource.plural
        ),
        None => format!("/apis/{}/{}", resource.api_version, resource.plural),
    };
    let body = serde_json::to_vec(object).expect("serialisable");
    let request = http::Request::post(format!("{url}?dryRun=All&fieldValidation=Strict"))
        .header("Content-Type", "application/json")
        .body(body)
        .expect("request");
    client.request::<DynamicObject>(request).await
}

#[tokio::test]
async fn invalid_objects_are_refused_with_a_message_naming_the_field() {
    let cp = api_server().await;
    let ns = cp.namespace("invalid").await;
    let client = cp.client().await;
    let params = PatchParams::apply("verbund-tests")
        .dry_run()
        .validation_strict();

    // The base objects are valid: each refusal below is caused by its one change.
    for base in [
        base_site("valid-site"),
        base_tenant("valid-tenant"),
        base_baseline("valid-baseline"),
        portal_service(),
    ] {
        let kind = base["kind"].as_str().expect("kind");
        let name = base["metadata"]["name"].as_str().expect("name");
        let namespace = (kind == "PortalService").then(|| ns.name());
        dynamic_api(&client, kind, namespace)
            .patch(name, &params, &Patch::Apply(&base))
            .await
            .unwrap_or_else(|e| panic!("base {kind} refused: {e}"));
    }

    let cases = invalid_objects();
    assert!(cases.len() >= 30, "at least 30 cases across the four kinds");
    let mut failures = Vec::new();
    for case in &cases {
        let kind = case.object["kind"].as_str().expect("kind");
        let namespace = (kind == "PortalService").then(|| ns.name());
        let result = create_strict_dry_run(&client, kind, namespace, &case.object).await;
        match result {
            Ok(_) => failures.push(format!("{kind}: {}: accepted", case.what)),
            Err(kube::Error::Api(status)) => {
                if !(status.code == 422 || status.code == 400)
                    || !status.message.contains(case.field)
                {
                    failures.push(format!(
                        "{kind}: {}: expected a refusal naming {:?}, got {} {}",
                        case.what, case.field, status.code, status.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{kind}: {}: unexpected error {other}", case.what)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
