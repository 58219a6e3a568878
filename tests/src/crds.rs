//! Installing Verbund's CRDs from `crds/` (the one generated source the chart uses too).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

use crate::tools::workspace_root;

/// The CRDs as checked in under `crds/`.
pub fn from_repository() -> Vec<CustomResourceDefinition> {
    let dir = workspace_root().join("crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("readable CRD file");
            serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not a CRD: {e}", path.display()))
        })
        .collect()
}

/// Applies every CRD (server-side) and waits until the API server serves each of them.
pub async fn install(client: &Client) {
    for crd in from_repository() {
        apply_established(client, &crd).await;
    }
}

/// Applies one CRD (server-side) and waits until the API server serves it.
async fn apply_established(client: &Client, crd: &CustomResourceDefinition) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("verbund-tests").force();
    let name = crd.metadata.name.clone().expect("CRD has a name");
    api.patch(&name, &params, &Patch::Apply(crd))
        .await
        .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api.clone(), &name, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
    .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
}

/// Installs the CRDs once per test binary (the first caller installs, the others wait).
pub async fn ensure_installed(client: &Client) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async { install(client).await })
        .await;
}

/// Installs the PolicyReport CRD (`tests/fixtures/policyreport-crd.yaml`) once per test binary,
/// as a cluster with a policy-report viewer has it.
pub async fn ensure_policy_reports(client: &Client) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let path = crate::tools::workspace_root().join("tests/fixtures/policyreport-crd.yaml");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let crd: CustomResourceDefinition =
                serde_yaml::from_str(&text).expect("the PolicyReport CRD");
            apply_established(client, &crd).await;
        })
        .await;
}
