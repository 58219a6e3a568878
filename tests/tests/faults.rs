//! Faults injected into a working pool, one after the other on one simulated cluster, each
//! ending converged with nothing lost: no orphaned or duplicated children, every tenant
//! namespace guarded, every status true to the world. Each scenario prints what it measured
//! (time to converge, the operator's writes); `docs/faults.md` tabulates them.
//!
//! - the operator killed (`kill -9`) in the middle of a mass create, and started again;
//! - another field manager fighting Verbund over a child's image;
//! - a Site deleted while services run on it, and applied again;
//! - the CRDs upgraded with a new optional field while the operator runs;
//! - a tenant deleted while its services are being created;
//! - hostile input: a service at every schema limit, one past each, and 1,000 invalid applies.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use verbund_operator::api::{PortalService, Site, Tenant};
use verbund_operator::conditions::{self, kind};
use verbund_operator::controller::status::FIGURES_INTERVAL_MAX;
use verbund_operator::isolation;
use verbund_tests::faults::{
    MASS, TIMEOUT, all_ready, apply, create, first_child, invariants, pool, quiet, service,
    start_operator, tenant, total, writes,
};
use verbund_tests::{examples, operator_binary, wait};

/// Services created in the scenarios after the mass create.
const BATCH: usize = 20;
/// Invalid applies in the hostile-input scenario.
const HOSTILE: usize = 1000;
/// Longer than the longest pacing of status figures, so no paced write is still to come.
const QUIET: Duration = Duration::from_secs(FIGURES_INTERVAL_MAX.as_secs() + 2);

/// A service at every list and string limit of the schema.
fn largest_service(name: &str) -> Value {
    let mut body = service(name, 1);
    let spec = &mut body["spec"];
    spec["command"] = json!(
        (0..32)
            .map(|i| format!("/bin/dienst-{i}"))
            .collect::<Vec<_>>()
    );
    spec["args"] = json!((0..64).map(|i| format!("--option-{i}")).collect::<Vec<_>>());
    spec["env"] = json!(
        (0..64)
            .map(|i| json!({ "name": format!("VARIABLE_{i:02}"), "value": "x".repeat(4096) }))
            .collect::<Vec<_>>()
    );
    spec["scaling"] = json!({ "windows": (0..16).map(|i| json!({
        "name": format!("fenster-{i:02}"), "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        "start": format!("{i:02}:00"), "end": format!("{i:02}:30"), "minReplicas": 1,
    })).collect::<Vec<_>>() });
    spec["placement"] = json!({ "sites": ["rz-ego", "rz-land", "rz-uds"] });
    body
}

/// Services one step past a limit, and the field the refusal must name.
fn past_the_limits() -> Vec<(&'static str, Value, &'static str)> {
    let one_more = |field: &str, extra: Value| {
        let mut body = largest_service("dienst-zu-gross");
        match field {
            "windows" => body["spec"]["scaling"]["windows"]
                .as_array_mut()
                .expect("windows")
                .push(extra),
            _ => body["spec"][field].as_array_mut().expect(field).push(extra),
        }
        body
    };
    let mut long_value = largest_service("dienst-zu-gross");
    long_value["spec"]["env"][0]["value"] = json!("x".repeat(4097));
    vec![
        (
            "65 environment variables",
            one_more("env", json!({ "name": "EINE_ZU_VIEL", "value": "x" })),
            "spec.env",
        ),
        (
            "33 command words",
            one_more("command", json!("zu-viel")),
            "spec.command",
        ),
        (
            "17 scaling windows",
            one_more(
                "windows",
                json!({ "name": "fenster-zu-viel", "days": ["Monday"], "start": "20:00", "end": "21:00", "minReplicas": 1 }),
            ),
            "spec.scaling.windows",
        ),
        (
            "an environment value of 4,097 characters",
            long_value,
            "spec.env[0].value",
        ),
    ]
}

/// Invalid applies, to existing services and new ones: (name, body, field the refusal names).
fn invalid_applies() -> Vec<(String, Value, &'static str)> {
    let with = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut body = service(name, 1);
        edit(&mut body["spec"]);
        (name.to_string(), body)
    };
    let cases: Vec<((String, Value), &'static str)> = vec![
        (
            with("dienst-00", &|s| s["protectionLevel"] = json!("Geheim")),
            "spec.protectionLevel",
        ),
        (
            with("dienst-01", &|s| s["image"] = json!("kein image")),
            "spec.image",
        ),
        (
            with("dienst-02", &|s| s["replicas"]["min"] = json!(-1)),
            "spec.replicas.min",
        ),
        (with("boese-01", &|s| s["ports"] = json!([])), "spec.ports"),
        (
            with(
                "boese-02",
                &|s| {
                    s["ports"] =
                        json!([{ "name": "a", "port": 8080 }, { "name": "b", "port": 8080 }])
                },
            ),
            "spec.ports",
        ),
        (
            with(
                "boese-03",
                &|s| s["scaling"] = json!({ "windows": [{ "name": "nacht", "days": ["Monday"], "start": "22:00", "end": "06:00", "minReplicas": 1 }] }),
            ),
            "spec.scaling.windows[0].end",
        ),
        (
            with(
                "boese-04",
                &|s| s["scaling"] = json!({ "windows": [{ "name": "spitze", "days": ["Monday"], "start": "08:00", "end": "10:00", "minReplicas": 50 }] }),
            ),
            "spec.scaling",
        ),
        (
            with("dienst-03", &|s| {
                s["env"] = json!([{ "name": "LANG", "value": "x".repeat(4097) }])
            }),
            "spec.env[0].value",
        ),
    ];
    cases
        .into_iter()
        .map(|((name, body), field)| (name, body, field))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_leave_the_pool_converged_with_nothing_lost() {
    let (pool, client, kubeconfig) = pool().await;
    let mut operator = start_operator(operator_binary!(), &kubeconfig, &[]).await;

    // 1. kill -9 in the middle of a mass create.
    let ns = tenant(&client, "abbruch").await;
    let services: Api<PortalService> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let creating = {
        let services = services.clone();
        tokio::spawn(async move { create(&services, 0, MASS).await })
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    first_child(&client, &ns).await;
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
    operator = start_operator(operator_binary!(), &kubeconfig, &[]).await;
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
    // The CRD as a release upgrade installs it: forced, by its own field manager.
    let install = |crd: &CustomResourceDefinition| {
        let (definitions, crd) = (definitions.clone(), crd.clone());
        async move {
            definitions
                .patch(
                    "portalservices.verbund.saarland.de",
                    &PatchParams::apply("verbund-upgrade").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .expect("CRD installed");
        }
    };
    let before = writes(&operator).await;
    let upgraded_at = Instant::now();
    install(&crd).await;
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
    install(&original).await;

    // 5. A tenant deleted while its services are being created.
    let doomed = tenant(&client, "aufloesung").await;
    let doomed_services: Api<PortalService> = Api::namespaced(client.clone(), &doomed);
    create(&doomed_services, 0, BATCH).await;
    first_child(&client, &doomed).await;
    let before = writes(&operator).await;
    let deleted_at = Instant::now();
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&doomed, &DeleteParams::default())
        .await
        .expect("tenant deleted");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    wait::until(
        TIMEOUT,
        "the tenant, its namespace and its binding gone",
        || async {
            let left = [
                tenants.get_opt(&doomed).await.map(|o| o.is_some()),
                namespaces.get_opt(&doomed).await.map(|o| o.is_some()),
                bindings
                    .get_opt(&isolation::binding_name(&doomed))
                    .await
                    .map(|o| o.is_some()),
            ];
            match left.iter().filter(|l| !matches!(l, Ok(false))).count() {
                0 => Ok(()),
                n => Err(format!("{n} of 3 still there: {left:?}")),
            }
        },
    )
    .await;
    let gone = deleted_at.elapsed();
    // The operator is still at work for everyone else.
    all_ready(&services, MASS).await;
    invariants(&client, &ns).await;
    eprintln!(
        "fault tenant deleted mid-create: tenant, namespace and admission binding gone {:.1} s after the delete ({BATCH} services being created); writes {:.0}",
        gone.as_secs_f64(),
        total(&writes(&operator).await) - total(&before)
    );

    // 6. Hostile input at volume. A service at every list and string limit is admitted
    //    (its CEL rules within the cost budget) and runs; one past a limit is refused naming
    //    the field; 1,000 invalid applies change nothing stored and not the operator's memory.
    let largest = largest_service("dienst-gross");
    apply(&services, &largest).await;
    wait::ready(&services, "dienst-gross", TIMEOUT).await;
    for (what, body, field) in past_the_limits() {
        let refused = services
            .patch(
                "dienst-zu-gross",
                &PatchParams::apply("verbund-tests"),
                &Patch::Apply(&body),
            )
            .await
            .expect_err(what);
        assert!(
            refused.to_string().contains(field),
            "{what}: the refusal names {field}: {refused}"
        );
    }
    all_ready(&services, MASS + 1).await;
    let stored = |list: Vec<PortalService>| -> BTreeMap<String, Option<String>> {
        list.into_iter()
            .map(|ps| (ps.name_any(), ps.resource_version()))
            .collect()
    };
    let before_versions = stored(
        services
            .list(&ListParams::default())
            .await
            .expect("list")
            .items,
    );
    quiet(&operator, QUIET).await;
    let rss_before = operator.metric("process_resident_memory_bytes", &[]).await;
    let before = writes(&operator).await;
    let invalid = invalid_applies();
    let mut refused = 0;
    for i in 0..HOSTILE {
        let (name, body, field) = &invalid[i % invalid.len()];
        match services
            .patch(
                name,
                &PatchParams::apply("angreifer").force(),
                &Patch::Apply(body),
            )
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 422 => {
                assert!(
                    status.message.contains(field),
                    "{field}: {}",
                    status.message
                );
                refused += 1;
            }
            other => panic!("invalid apply {i} to {name} was not refused: {other:?}"),
        }
    }
    // Let a refused change reach the operator if one could: none may.
    tokio::time::sleep(QUIET).await;
    let rss_after = operator.metric("process_resident_memory_bytes", &[]).await;
    let after_versions = stored(
        services
            .list(&ListParams::default())
            .await
            .expect("list")
            .items,
    );
    assert_eq!(refused, HOSTILE, "every invalid apply refused");
    assert_eq!(before_versions, after_versions, "nothing stored changed");
    let hostile_writes = total(&writes(&operator).await) - total(&before);
    assert_eq!(
        hostile_writes, 0.0,
        "the operator wrote nothing for refused input"
    );
    let grown = (rss_after - rss_before) / (1024.0 * 1024.0);
    assert!(
        grown < 8.0,
        "the operator's memory grew by {grown:.1} MiB over {HOSTILE} refused applies"
    );
    eprintln!(
        "fault hostile input: the largest service Ready; {HOSTILE} invalid applies refused with 422 naming the field; operator RSS {:.1} -> {:.1} MiB; 0 writes",
        rss_before / (1024.0 * 1024.0),
        rss_after / (1024.0 * 1024.0)
    );
    invariants(&client, &ns).await;

    operator.signal("TERM").await.expect("stop");
    let (status, log) = operator.wait(Duration::from_secs(30)).await.expect("stops");
    assert!(status.success(), "{log}");
}
