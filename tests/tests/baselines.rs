//! Security baselines against the real API server: the compiled ValidatingAdmissionPolicy
//! refuses, warns or audits as the baseline says, for every rule, acting as a tenant admin;
//! the CEL the API server evaluates and the Rust checks of the audit agree on the same
//! objects; exceptions end by themselves; the audit reports exactly what is wrong (status,
//! events, PolicyReports) and clears when it is fixed; a policy the API server refuses leaves
//! its baseline not Ready and the others untouched.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};
use verbund_operator::api::SecurityBaseline;
use verbund_operator::api::security_baseline::RuleName;
use verbund_operator::baseline::{fixtures, rules};
use verbund_tests::admission::{self, Answer};
use verbund_tests::baselines::{await_policy, bound};
use verbund_tests::control_plane::{self, ControlPlane};
use verbund_tests::{crds, operator, wait};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The control plane with the CRDs (Verbund's and PolicyReport) and a running operator.
async fn pool() -> &'static ControlPlane {
    let cp = control_plane::shared().await;
    let client = cp.client().await;
    crds::ensure_installed(&client).await;
    crds::ensure_policy_reports(&client).await;
    operator::in_process(cp.kubeconfig_path()).await;
    cp
}

/// The rules named in admission warnings.
fn warned_rules(answer: &Answer) -> BTreeSet<RuleName> {
    rules::CATALOGUE
        .iter()
        .filter(|r| {
            let needle = format!(": {}: ", rules::rule_key(r.name));
            answer.warnings.iter().any(|w| w.contains(&needle))
        })
        .map(|r| r.name)
        .collect()
}

#[tokio::test]
async fn enforce_refuses_every_rule_with_its_bsi_ids_and_admits_compliant_workloads() {
    let cp = pool().await;
    let b = bound(cp, "Enforce", |_| json!([])).await;
    await_policy(&b, |a| a.status == 403).await;
    let policy = format!("ValidatingAdmissionPolicy 'verbund-{}'", b.baseline);
    for fixture in fixtures::violating() {
        let answer = b.dry_run(&fixture.object).await;
        let rule = rules::rule(fixture.expected[0]);
        assert_eq!(
            answer.status, 403,
            "{} was not refused: {answer:?}",
            fixture.name
        );
        assert!(
            answer.message.contains(&policy),
            "{}: {}",
            fixture.name,
            answer.message
        );
        assert!(
            answer
                .message
                .contains(&format!(": {}: ", rules::rule_key(rule.name))),
            "{}: the refusal names the rule: {}",
            fixture.name,
            answer.message
        );
        for id in rule.bsi {
            assert!(
                answer.message.contains(id),
                "{}: {id} missing: {}",
                fixture.name,
                answer.message
            );
        }
    }
    for fixture in fixtures::compliant() {
        let answer = b.dry_run(&fixture.object).await;
        assert!(answer.admitted(), "{} refused: {answer:?}", fixture.name);
        assert!(
            answer.warnings.is_empty(),
            "{}: {:?}",
            fixture.name,
            answer.warnings
        );
    }

    // A debug container added to a running pod obeys the privilege and image rules too.
    let pod = fixtures::compliant()[0].object.clone();
    let created = admission::create(&b.admin, b.ns.name(), &pod, false).await;
    assert!(created.admitted(), "{created:?}");
    let pods: Api<Pod> = Api::namespaced(b.root.clone(), b.ns.name());
    let debug = json!({"spec": {"ephemeralContainers": [{
        "name": "debugger", "image": "docker.io/library/busybox:1.37",
        "securityContext": {"privileged": true, "runAsUser": 0}
    }]}});
    let refused = pods
        .patch_subresource(
            "ephemeralcontainers",
            pod["metadata"]["name"].as_str().expect("name"),
            &PatchParams::default(),
            &Patch::Strategic(debug),
        )
        .await
        .expect_err("a privileged debug container from a foreign registry is refused");
    assert!(
        refused.to_string().contains(&policy),
        "refused by the baseline: {refused}"
    );
}

#[tokio::test]
async fn tightening_a_baseline_does_not_jam_what_already_runs() {
    let cp = pool().await;
    let b = bound(cp, "Audit", |_| json!([])).await;
    let old = fixtures::breaking(RuleName::ProbesRequired, "Deployment").object;
    let name = old["metadata"]["name"].as_str().expect("name").to_string();
    let created = admission::create(&b.admin, b.ns.name(), &old, false).await;
    assert!(created.admitted(), "{created:?}");

    Api::<SecurityBaseline>::all(b.root.clone())
        .patch(
            &b.baseline,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"enforcement": "Enforce"}})),
        )
        .await
        .expect("baseline tightened");
    await_policy(&b, |a| a.status == 403).await;

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(b.admin.clone(), b.ns.name());
    // Labels, scaling and the like leave the pod template alone: still admitted.
    deployments
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"verfahren": "alt"}}})),
        )
        .await
        .expect("a label change on an existing workload is admitted");
    // A new template that still breaks the rule is not.
    let new_image = old["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image")
        .replace(":1.0@", ":1.1@");
    let refused = deployments
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": new_image}]}}}})),
        )
        .await
        .expect_err("a changed template is judged again");
    assert!(
        refused.to_string().contains(": probesRequired: "),
        "{refused}"
    );
}

#[tokio::test]
async fn replica_floors_hold_through_the_scale_subresource_and_autoscalers() {
    let cp = pool().await;
    let b = bound(cp, "Enforce", |_| json!([])).await;
    await_policy(&b, |a| a.status == 403).await;
    let deployment = fixtures::compliant()[1].object.clone();
    let name = deployment["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let created = admission::create(&b.admin, b.ns.name(), &deployment, false).await;
    assert!(created.admitted(), "{created:?}");

    // `kubectl scale` below the floor (2 in the fixtures' baseline): refused, naming the rule.
    let below = admission::scale(&b.admin, b.ns.name(), "deployments", &name, 1).await;
    assert_eq!(below.status, 403, "{below:?}");
    assert!(
        below.message.contains(": minReplicas: "),
        "{}",
        below.message
    );
    assert!(below.message.contains("APP.4.4.A19"), "{}", below.message);
    let up = admission::scale(&b.admin, b.ns.name(), "deployments", &name, 3).await;
    assert!(up.admitted(), "scaling up is fine: {up:?}");

    // An autoscaler that would go below the floor: refused; one that keeps it: admitted.
    let autoscaler = |min: i32| {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": format!("hpa-{min}") },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
                "minReplicas": min, "maxReplicas": 5,
                "metrics": [{ "type": "Resource", "resource": { "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": 70 } } }]
            }
        })
    };
    let low = admission::create(&b.admin, b.ns.name(), &autoscaler(1), true).await;
    assert_eq!(low.status, 403, "{low:?}");
    assert!(low.message.contains(": minReplicas: "), "{}", low.message);
    let fine = admission::create(&b.admin, b.ns.name(), &autoscaler(2), true).await;
    assert!(fine.admitted(), "{fine:?}");
}

/// Objects with several violations at once and the corners of each rule, for the
/// equivalence of admission (CEL) and audit (Rust).
fn corner_cases() -> Vec<Value> {
    let base = || fixtures::compliant()[1].object.clone();
    let mut cases = Vec::new();
    let mut v = base();
    v["metadata"]["name"] = json!("registry-port-no-tag");
    v["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.saarland.de:5000/portal/x");
    cases.push(v);
    let mut v = base();
    v["metadata"]["name"] = json!("container-overrides-pod");
    v["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] =
        json!({"type": "Unconfined"});
    v["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
        json!({"type": "RuntimeDefault"});
    v["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] =
        json!(false);
    cases.push(v);
    let mut v = base();
    v["metadata"]["name"] = json!("init-container");
    let mut init = v["spec"]["template"]["spec"]["containers"][0].clone();
    init["name"] = json!("migrate");
    init["image"] = json!("docker.io/library/busybox:latest");
    init["securityContext"] = json!({"privileged": true, "allowPrivilegeEscalation": true});
    // Plain init containers may not have probes at all.
    let fields = init.as_object_mut().expect("container");
    fields.remove("livenessProbe");
    fields.remove("readinessProbe");
    v["spec"]["template"]["spec"]["initContainers"] = json!([init]);
    cases.push(v);
    let mut v = base();
    v["metadata"]["name"] = json!("defaulted-replicas");
    v["spec"].as_object_mut().expect("spec").remove("replicas");
    v["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    v["spec"]["template"]["spec"]["serviceAccountName"] = json!("default");
    cases.push(v);
    let mut pod = fixtures::compliant()[0].object.clone();
    pod["metadata"]["name"] = json!("everything-wrong");
    pod["spec"] = json!({"containers": [{"name": "app", "image": "nginx"}]});
    cases.push(pod);
    cases
}

#[tokio::test]
async fn warn_admits_with_one_warning_per_rule_and_agrees_with_the_audit_checks() {
    let cp = pool().await;
    let b = bound(cp, "Warn", |_| json!([])).await;
    await_policy(&b, |a| a.admitted() && !a.warnings.is_empty()).await;
    let all = fixtures::all_rules();
    let objects: Vec<Value> = fixtures::compliant()
        .into_iter()
        .chain(fixtures::violating())
        .map(|f| f.object)
        .chain(corner_cases())
        .collect();
    for object in objects {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let answer = b.dry_run(&object).await;
        assert!(answer.admitted(), "{name} refused under Warn: {answer:?}");
        // What the audit's Rust checks say about the same object.
        let workload =
            verbund_operator::baseline::workload::workload_of(&object).expect("workload");
        let audit: BTreeSet<RuleName> = rules::violations(&all, &workload.as_workload())
            .into_iter()
            .collect();
        assert_eq!(
            warned_rules(&answer),
            audit,
            "{name}: admission (left) and audit (right) disagree; warnings: {:?}",
            answer.warnings
        );
    }
}

#[tokio::test]
async fn audit_admits_then_reports_exactly_the_violations_and_clears_them_when_fixed() {
    let cp = pool().await;
    let b = bound(cp, "Audit", |_| json!([])).await;
    // A default-deny policy, as a tenant namespace has one.
    b.ns.api::<NetworkPolicy>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "default-deny"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
            }))
            .expect("policy"),
        )
        .await
        .expect("network policy");
    let no_probes = fixtures::breaking(RuleName::ProbesRequired, "Deployment").object;
    let host_path = fixtures::breaking(RuleName::NoHostPath, "Pod").object;
    let mut fine = fixtures::compliant()[1].object.clone();
    fine["metadata"]["name"] = json!("fine");
    for object in [&no_probes, &host_path, &fine] {
        let answer = admission::create(&b.admin, b.ns.name(), object, false).await;
        assert!(answer.admitted(), "Audit admits: {answer:?}");
        assert!(
            answer.warnings.is_empty(),
            "Audit does not warn: {:?}",
            answer.warnings
        );
    }

    // Status: the namespace and three workloads checked (the Deployments' ReplicaSets and
    // pods are reported through them), two violating: one rule, and hostPath, which is also a
    // volume type outside the allowed ones.
    let status = wait::until(TIMEOUT, "the audit results", || async {
        let status = b.status().await;
        let counts: Vec<(String, i64)> = status["violations"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .map(|v| {
                        (
                            v["rule"].as_str().unwrap_or_default().to_string(),
                            v["count"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let expected = vec![
            ("probesRequired".to_string(), 1),
            ("noHostPath".to_string(), 1),
            ("allowedVolumeTypes".to_string(), 1),
        ];
        if status["checked"] == 4 && status["compliant"] == 2 && counts == expected {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await;
    assert_eq!(status["violationCount"], 2);
    assert_eq!(
        status["violations"][0]["bsi"],
        json!(["APP.4.4.A11", "SYS.1.6.A3"])
    );
    assert_eq!(status["violations"][1]["bsi"], json!(["SYS.1.6.A19"]));
    let offenders: BTreeSet<String> = status["topOffenders"]
        .as_array()
        .expect("offenders")
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        offenders,
        BTreeSet::from([
            "Deployment/probesrequired-deployment".to_string(),
            "Pod/nohostpath-pod".to_string()
        ])
    );

    // A Warning event on each offender, naming the rule and its BSI IDs.
    let events: Api<Event> = Api::namespaced(b.root.clone(), b.ns.name());
    wait::until(TIMEOUT, "audit events", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let seen: BTreeSet<String> = list
            .items
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("BaselineViolated")
                    && e.type_.as_deref() == Some("Warning")
            })
            .filter(|e| {
                let note = e.note.as_deref().unwrap_or_default();
                note.contains("probesRequired (APP.4.4.A11, SYS.1.6.A3)")
                    || note.contains("noHostPath (SYS.1.6.A19)")
            })
            .filter_map(|e| e.regarding.as_ref().and_then(|r| r.name.clone()))
            .collect();
        let wanted = BTreeSet::from([
            "probesrequired-deployment".to_string(),
            "nohostpath-pod".to_string(),
        ]);
        if seen == wanted {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;

    // The namespace's PolicyReport.
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let reports: Api<DynamicObject> = Api::namespaced_with(b.root.clone(), b.ns.name(), &resource);
    let report = |fail: i64| {
        let reports = reports.clone();
        async move {
            let report = reports
                .get_opt("verbund-security-baseline")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no report")?;
            if report.data["summary"]["fail"] == fail {
                Ok(report)
            } else {
                Err(format!("{:?}", report.data["summary"]))
            }
        }
    };
    let found = wait::until(TIMEOUT, "the PolicyReport with three failures", || {
        report(3)
    })
    .await;
    let failed: BTreeSet<(String, String)> = found.data["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["resources"][0]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        BTreeSet::from([
            (
                "probesRequired".to_string(),
                "probesrequired-deployment".to_string()
            ),
            ("noHostPath".to_string(), "nohostpath-pod".to_string()),
            (
                "allowedVolumeTypes".to_string(),
                "nohostpath-pod".to_string()
            ),
        ])
    );

    // Fixed: the Deployment gets its liveness probe, the pod with the host path goes.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(b.admin.clone(), b.ns.name());
    deployments
        .patch(
            "probesrequired-deployment",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "add", "path": "/spec/template/spec/containers/0/livenessProbe",
                     "value": {"httpGet": {"path": "/live", "port": 8080}}}
                ]))
                .expect("patch"),
            ),
        )
        .await
        .expect("fixed deployment");
    Api::<Pod>::namespaced(b.admin.clone(), b.ns.name())
        .delete("nohostpath-pod", &DeleteParams::default())
        .await
        .expect("pod deleted");
    wait::until(TIMEOUT, "the audit to clear", || async {
        let status = b.status().await;
        let clear = status["checked"] == 3
            && status["compliant"] == 3
            && status["violations"].is_null()
            && status["topOffenders"].is_null();
        if clear { Ok(()) } else { Err(status) }
    })
    .await;
    let cleared = wait::until(TIMEOUT, "the PolicyReport to clear", || report(0)).await;
    assert_eq!(cleared.data["results"], json!([]));
}

#[tokio::test]
async fn an_exception_lets_its_rule_pass_until_it_expires_and_no_longer() {
    let cp = pool().await;
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(45);
    let b = bound(cp, "Enforce", |ns| {
        json!([{
            "namespace": ns,
            "rules": ["probesRequired"],
            "reason": "Altverfahren ohne Health-Endpunkt, Ablösung beschlossen",
            "expires": expires.to_string(),
        }])
    })
    .await;
    await_policy(&b, |a| a.status == 403).await;
    let no_probes = fixtures::breaking(RuleName::ProbesRequired, "Deployment").object;
    let answer = b.dry_run(&no_probes).await;
    assert!(
        jiff::Timestamp::now() < expires,
        "the set-up outlasted the exception; nothing was shown"
    );
    assert!(
        answer.admitted(),
        "the exception admits its rule: {answer:?}"
    );
    let other = b
        .dry_run(&fixtures::breaking(RuleName::NoHostPath, "Deployment").object)
        .await;
    assert_eq!(other.status, 403, "other rules still hold: {other:?}");

    // After `expires` the rule applies again, with nobody touching the baseline.
    let refused = wait::until(Duration::from_secs(90), "the exception to end", || async {
        let answer = b.dry_run(&no_probes).await;
        if answer.status == 403 {
            Ok(answer)
        } else {
            Err(answer)
        }
    })
    .await;
    assert!(
        jiff::Timestamp::now() >= expires,
        "refused before the exception expired"
    );
    assert!(
        refused.message.contains(": probesRequired: "),
        "{}",
        refused.message
    );
}

#[tokio::test]
async fn a_policy_the_api_server_refuses_leaves_its_baseline_not_ready_and_the_others_working() {
    let cp = pool().await;
    let working = bound(cp, "Enforce", |_| json!([])).await;
    // In force before the broken baseline arrives, so that "still refuses" below means it.
    await_policy(&working, |a| a.status == 403).await;
    // A label value holds at most 63 characters: no namespace can be bound to this name, and
    // the API server refuses the binding that would select them.
    let name = format!("grundschutz-{}", "x".repeat(60));
    let baselines: Api<SecurityBaseline> = Api::all(working.root.clone());
    baselines
        .patch(
            &name,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(json!({
                "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "SecurityBaseline",
                "metadata": { "name": name },
                "spec": { "protectionLevel": "Normal", "rules": { "runAsNonRoot": true } }
            })),
        )
        .await
        .expect("the baseline itself is accepted");
    let condition = wait::until(TIMEOUT, "Ready=False with the API server's reason", || {
        let baselines = baselines.clone();
        let name = name.clone();
        async move {
            let b = baselines.get(&name).await.map_err(|e| e.to_string())?;
            let value = serde_json::to_value(&b.status).map_err(|e| e.to_string())?;
            let ready = value["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
                .ok_or("no Ready condition")?;
            if ready["status"] == "False" && ready["reason"] == "PolicyRejected" {
                Ok(ready)
            } else {
                Err(ready.to_string())
            }
        }
    })
    .await;
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains("must be no more than 63"), "{message}");
    // The other baseline still stands and still refuses.
    wait::ready(&baselines, &working.baseline, TIMEOUT).await;
    let answer = working
        .dry_run(&fixtures::breaking(RuleName::NoHostPorts, "Pod").object)
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    baselines
        .delete(&name, &DeleteParams::default())
        .await
        .expect("cleanup");
}
