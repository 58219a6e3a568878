//! An object of Verbund's kinds that the operator's types cannot decode is skipped and
//! reported, and never stops the watch of its kind: the other objects keep reconciling, and
//! the bad one is picked up once it is fixed.
//!
//! The bad object is stored the way one can arrive in a real cluster: through a looser version
//! of the CRD (here `v1alpha2`, served without a schema), read back through `v1alpha1`.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;
use verbund_operator::api::Site;
use verbund_tests::{control_plane, crds, operator, wait};

const TIMEOUT: Duration = Duration::from_secs(60);

fn site(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
        "metadata": { "name": name },
        "spec": { "displayName": name, "operatedBy": { "kind": "State", "name": "IT-DLZ" } }
    })
}

/// The Site CRD with a second, schemaless version that stores whatever it is given.
fn loose_site_crd() -> CustomResourceDefinition {
    let mut crd = crds::from_repository()
        .into_iter()
        .find(|c| c.spec.names.kind == "Site")
        .expect("the Site CRD");
    let mut loose = crd.spec.versions[0].clone();
    loose.name = "v1alpha2".into();
    loose.storage = false;
    loose.additional_printer_columns = None;
    loose.schema = serde_json::from_value(json!({
        "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    }))
    .expect("schema");
    crd.spec.versions.push(loose);
    crd
}

fn invalid_sites(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with("verbund_invalid_objects{cache=\"sites\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn an_undecodable_site_is_reported_and_the_others_still_reconcile() {
    verbund_tests::init_logging();
    let cp = control_plane::shared().await;
    let client = cp.client().await;
    crds::install(&client).await;
    let crds_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds_api
        .patch(
            "sites.verbund.saarland.de",
            &PatchParams::apply("verbund-tests").force(),
            &Patch::Apply(&loose_site_crd()),
        )
        .await
        .expect("the loose CRD");

    let operator = operator::in_process(cp.kubeconfig_path()).await;
    let sites: Api<Site> = Api::all(client.clone());
    let params = PatchParams::apply("verbund-tests");
    sites
        .patch("rz-gut", &params, &Patch::Apply(site("rz-gut")))
        .await
        .expect("good site");
    wait::observed(&sites, "rz-gut", TIMEOUT).await;

    // Stored through v1alpha2: a number where v1alpha1 says string, an object where it says
    // an operator. The API server keeps it; v1alpha1 serves it as it is.
    let loose = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("verbund.saarland.de", "v1alpha2", "Site"),
        "sites",
    );
    let loose_sites: Api<DynamicObject> = Api::all_with(client.clone(), &loose);
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "verbund.saarland.de/v1alpha2", "kind": "Site",
        "metadata": { "name": "rz-kaputt" },
        "spec": { "displayName": 42, "operatedBy": "niemand" }
    }))
    .expect("object");
    wait::until(TIMEOUT, "the API server serves v1alpha2", || {
        let (loose_sites, bad) = (loose_sites.clone(), bad.clone());
        async move {
            loose_sites
                .patch(
                    "rz-kaputt",
                    &PatchParams::apply("verbund-tests"),
                    &Patch::Apply(&bad),
                )
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;

    // Reported: a Warning Event on the object, and the metric.
    let events: Api<Event> = Api::all(client.clone());
    let event = wait::until(TIMEOUT, "an Undecodable event on rz-kaputt", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields("regarding.name=rz-kaputt"))
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Undecodable"))
                .ok_or_else(|| "no event yet".to_string())
        }
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("displayName"),
        "{event:?}"
    );
    wait::until(TIMEOUT, "verbund_invalid_objects 1", || async {
        match invalid_sites(&operator.metrics().await) {
            Some(1.0) => Ok(()),
            other => Err(other),
        }
    })
    .await;

    // The watch goes on: a site created after the bad one reconciles.
    sites
        .patch("rz-neu", &params, &Patch::Apply(site("rz-neu")))
        .await
        .expect("new site");
    wait::observed(&sites, "rz-neu", TIMEOUT).await;

    // Fixed (where it was broken), the bad one is read and reconciled too.
    let mut fixed = site("rz-kaputt");
    fixed["apiVersion"] = json!("verbund.saarland.de/v1alpha2");
    loose_sites
        .patch("rz-kaputt", &params, &Patch::Apply(&fixed))
        .await
        .expect("fixed site");
    wait::observed(&sites, "rz-kaputt", TIMEOUT).await;
    wait::until(TIMEOUT, "verbund_invalid_objects 0", || async {
        match invalid_sites(&operator.metrics().await) {
            Some(0.0) => Ok(()),
            other => Err(other),
        }
    })
    .await;
}
