//! Enforcement lives in the API server: with the operator stopped, a baseline's admission
//! policy still refuses what breaks it.

use std::time::Duration;

use serde_json::json;
use verbund_operator::api::security_baseline::RuleName;
use verbund_operator::baseline::fixtures;
use verbund_tests::admission;
use verbund_tests::baselines::{await_policy, bound};
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{control_plane, crds, operator_binary};

#[tokio::test]
async fn with_the_operator_stopped_the_baseline_still_refuses() {
    let cp = control_plane::shared().await;
    crds::ensure_installed(&cp.client().await).await;
    let mut verbund =
        OperatorProcess::start_as_operator(operator_binary!(), cp.kubeconfig_path(), &[])
            .await
            .expect("start");
    verbund
        .await_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    let b = bound(cp, "Enforce", |_| json!([])).await;
    await_policy(&b, |a| a.status == 403).await;

    verbund.signal("TERM").await.expect("stop");
    let (status, log) = verbund.wait(Duration::from_secs(30)).await.expect("exits");
    assert!(status.success(), "{log}");

    // Not a dry run: the pod would be stored if admission let it through.
    for rule in [
        RuleName::RunAsNonRoot,
        RuleName::NoHostPath,
        RuleName::AllowedRegistries,
    ] {
        let pod = fixtures::breaking(rule, "Pod").object;
        let answer = admission::create(&b.admin, b.ns.name(), &pod, false).await;
        assert_eq!(
            answer.status, 403,
            "{rule:?} admitted without the operator: {answer:?}"
        );
        assert!(
            answer.message.contains("ValidatingAdmissionPolicy"),
            "{}",
            answer.message
        );
    }
    let fine = fixtures::compliant()[0].object.clone();
    let answer = admission::create(&b.admin, b.ns.name(), &fine, false).await;
    assert!(answer.admitted(), "a compliant pod still runs: {answer:?}");
}
