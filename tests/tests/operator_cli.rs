//! `verbund-operator run` as a process: it connects, serves its admin endpoints, and stops
//! cleanly on SIGTERM; it fails with a clear message when it cannot reach an API server.

use std::time::Duration;

use verbund_tests::operator::OperatorProcess;
use verbund_tests::{control_plane, operator_binary};

#[tokio::test]
async fn serves_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let cp = control_plane::shared().await;
    // Without its CRDs the operator's caches never sync and it never reports ready.
    verbund_tests::crds::ensure_installed(&cp.client().await).await;
    let mut operator =
        OperatorProcess::start_as_operator(operator_binary!(), cp.kubeconfig_path(), &[])
            .await
            .expect("started");
    operator
        .await_ready(Duration::from_secs(60))
        .await
        .expect("ready");

    let base = operator.admin_url();
    let livez = reqwest::get(format!("{base}/livez")).await.expect("livez");
    assert!(livez.status().is_success());
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics");
    assert!(metrics.status().is_success());
    let text = metrics.text().await.expect("body");
    assert!(text.contains("verbund_build_info{version=\""), "{text}");

    operator.signal("TERM").await.expect("signal");
    let (status, log) = operator.wait(Duration::from_secs(20)).await.expect("exits");
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn fails_with_a_clear_message_when_the_api_server_is_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let port = control_plane::free_port().expect("port");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\ncurrent-context: gone\n"
        ),
    )
    .expect("kubeconfig");
    let operator = OperatorProcess::start(operator_binary!(), &kubeconfig, &[])
        .await
        .expect("started");
    let (status, log) = operator.wait(Duration::from_secs(60)).await.expect("exits");
    assert!(!status.success(), "must fail; log:\n{log}");
    assert!(
        log.contains("cannot reach the Kubernetes API server"),
        "{log}"
    );
}
