//! The integration-mode test bed works: a real API server stores and serves objects, and its
//! RBAC refuses a user without rights.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use verbund_tests::control_plane::{self, ControlPlane};

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "web", "image": "registry.example/portal:1.0" }] }
            }
        }
    }))
    .expect("valid deployment")
}

#[tokio::test]
async fn stores_and_serves_a_namespace_and_a_deployment() {
    let cp = control_plane::shared().await;
    let ns = cp.namespace("smoke").await;

    let namespaces: Api<Namespace> = Api::all(cp.client().await);
    let stored = namespaces.get(ns.name()).await.expect("namespace readable");
    assert_eq!(stored.metadata.name.as_deref(), Some(ns.name()));

    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment("portal"))
        .await
        .expect("created");
    let read = deployments
        .get("portal")
        .await
        .expect("deployment readable");
    let spec = read.spec;
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.template.spec.expect("pod spec").containers[0]
            .image
            .as_deref(),
        Some("registry.example/portal:1.0")
    );
    // The controller-manager runs: the deployment controller records what it observed.
    verbund_tests::wait::until(
        std::time::Duration::from_secs(30),
        "deployment observed",
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("portal").await.map_err(|e| e.to_string())?;
                let observed = d.status.and_then(|s| s.observed_generation);
                if observed == d.metadata.generation {
                    Ok(())
                } else {
                    Err(format!("{observed:?}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn rbac_denies_an_impersonated_user_without_rights() {
    let cp = control_plane::shared().await;
    let ns = cp.namespace("rbac").await;
    let mallory = cp
        .impersonate("mallory@kommune.example", &["kommune-ohne-rechte"])
        .await;

    let pods: Api<Pod> = Api::namespaced(mallory.clone(), ns.name());
    let listed = pods.list(&ListParams::default()).await;
    assert_forbidden(listed.map(|_| ()), "list pods");

    let deployments: Api<Deployment> = Api::namespaced(mallory, ns.name());
    let created = deployments
        .create(&PostParams::default(), &deployment("intruder"))
        .await;
    assert_forbidden(created.map(|_| ()), "create deployment");

    // The same calls succeed as admin, so the refusal above is RBAC's, not a broken request.
    let admin_deployments: Api<Deployment> = ns.api();
    admin_deployments
        .create(&PostParams::default(), &deployment("intruder"))
        .await
        .expect("admin may create");
}

fn assert_forbidden(result: Result<(), kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 403,
                "{what}: expected 403 Forbidden, got {status:?}"
            );
            assert!(
                status.message.contains("mallory@kommune.example"),
                "{what}: {}",
                status.message
            );
        }
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// A broken test bed fails loudly: with a kube-apiserver that exits at once, start-up returns
/// an error naming the process and quoting its log, instead of hanging or skipping.
#[tokio::test]
async fn a_broken_api_server_fails_start_up_with_its_reason() {
    let real = verbund_tests::tools::bin_dir().expect("pinned binaries");
    let broken = tempfile::tempdir().expect("temp dir");
    for name in ["etcd", "kube-controller-manager", "kubectl"] {
        std::os::unix::fs::symlink(real.join(name), broken.path().join(name)).expect("link");
    }
    let fake = broken.path().join("kube-apiserver");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake kube-apiserver: refusing to start' >&2\nexit 3\n",
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let error = ControlPlane::start_with(broken.path())
        .await
        .expect_err("must not start");
    let message = error.to_string();
    assert!(message.contains("kube-apiserver exited"), "{message}");
    assert!(message.contains("refusing to start"), "{message}");

    let missing = tempfile::tempdir().expect("temp dir");
    let error = ControlPlane::start_with(missing.path())
        .await
        .expect_err("must not start");
    assert!(error.to_string().contains("does not exist"), "{error}");
}
