//! The example resources under `examples/`, as the documents a user would apply.

use std::path::PathBuf;

use crate::tools::workspace_root;

/// One YAML document of an example file.
#[derive(Debug, Clone)]
pub struct ExampleDoc {
    pub file: PathBuf,
    pub value: serde_json::Value,
}

impl ExampleDoc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
}

/// The folder of the realistic pool used by the demo.
pub fn saarland_dir() -> PathBuf {
    workspace_root().join("examples/saarland")
}

/// Every document of every `.yaml` file in `examples/saarland/`, in file order.
pub fn saarland() -> Vec<ExampleDoc> {
    let dir = saarland_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
            if !value.is_null() {
                docs.push(ExampleDoc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

/// Applies the Saarland pool as a user would: sites, baselines and tenants first, the portal
/// services once their tenants have made their namespaces; returns when every one is Ready.
pub async fn apply_saarland(pool: &crate::cluster::SimulatedCluster, timeout: std::time::Duration) {
    use kube::Api;
    use verbund_operator::api::{PortalService, Tenant};
    let client = pool.client().await;
    let dir = saarland_dir();
    let apply = |file: &'static str| {
        let path = dir.join(file);
        async move {
            pool.kubectl()
                .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
                .await;
        }
    };
    for file in ["00-sites.yaml", "10-baselines.yaml", "20-tenants.yaml"] {
        apply(file).await;
    }
    let tenants: Api<Tenant> = Api::all(client.clone());
    for doc in saarland().iter().filter(|d| d.kind() == "Tenant") {
        crate::wait::ready(&tenants, doc.name(), timeout).await;
    }
    for file in [
        "30-services-land.yaml",
        "31-services-hochschulen.yaml",
        "32-services-saarbruecken.yaml",
        "33-services-kommunen.yaml",
    ] {
        apply(file).await;
    }
    for doc in saarland().iter().filter(|d| d.kind() == "PortalService") {
        let namespace = doc.namespace().expect("a namespaced example");
        let api: Api<PortalService> = Api::namespaced(client.clone(), namespace);
        crate::wait::ready(&api, doc.name(), timeout).await;
    }
}
