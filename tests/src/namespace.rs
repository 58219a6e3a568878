//! A temporary namespace per test: deleted when the test passes; when it fails, everything in
//! it is dumped to `.test-dumps/<namespace>/` and the namespace is left in place.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

use crate::kubectl::Kubectl;

/// Label on every namespace the harness creates, to tell them apart from the operator's.
pub const TEST_LABEL: &str = "verbund.saarland.de/test";

/// A namespace that lives as long as one test.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubectl: Kubectl,
}

impl TestNamespace {
    /// Creates `prefix-<unique>`; panics (failing the test) if the API server refuses.
    pub async fn create(client: Client, kubectl: Kubectl, prefix: &str) -> Self {
        let name = crate::unique_name(prefix);
        let mut ns = Namespace::default();
        ns.meta_mut().name = Some(name.clone());
        ns.meta_mut().labels = Some([(TEST_LABEL.to_string(), "true".to_string())].into());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create test namespace {name}: {e}"));
        Self {
            name,
            client,
            kubectl,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An API for namespaced kind `K` in this namespace, as cluster admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Where the dump of a failed test goes.
    fn dump_dir(&self) -> PathBuf {
        std::env::var_os("VERBUND_TEST_DUMPS")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::tools::workspace_root().join(".test-dumps"))
            .join(&self.name)
    }

    /// Writes every object in the namespace and its events to the dump folder.
    fn dump(&self) {
        let dir = self.dump_dir();
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let kinds = self.kubectl.run_blocking(&[
            "api-resources",
            "--namespaced",
            "--verbs=list",
            "-o",
            "name",
        ]);
        let kinds: Vec<&str> = kinds
            .stdout
            .lines()
            .filter(|k| *k != "events" && *k != "events.events.k8s.io")
            .collect();
        let objects = self.kubectl.run_blocking(&[
            "get",
            &kinds.join(","),
            "-n",
            &self.name,
            "-o",
            "yaml",
            "--ignore-not-found",
        ]);
        let events = self.kubectl.run_blocking(&[
            "get",
            "events",
            "-n",
            &self.name,
            "--sort-by=.lastTimestamp",
        ]);
        let _ = std::fs::write(dir.join("objects.yaml"), objects.stdout + &objects.stderr);
        let _ = std::fs::write(dir.join("events.txt"), events.stdout + &events.stderr);
        eprintln!(
            "test failed: namespace {} kept, its objects dumped to {}",
            self.name,
            dir.display()
        );
    }
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        } else {
            let _ = self
                .kubectl
                .run_blocking(&["delete", "namespace", &self.name, "--wait=false"]);
        }
    }
}
