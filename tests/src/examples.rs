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
