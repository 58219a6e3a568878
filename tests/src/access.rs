//! How tests reach a control plane: clients (admin or impersonating), kubectl, namespaces.
//! Shared by both modes; [`crate::control_plane::ControlPlane`] and
//! [`crate::cluster::SimulatedCluster`] dereference to it.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::HarnessError;
use crate::kubectl::Kubectl;
use crate::namespace::TestNamespace;

/// Credentials and tools for one running API server.
#[derive(Debug)]
pub struct Access {
    kubeconfig: Kubeconfig,
    kubeconfig_path: PathBuf,
    kubectl: Kubectl,
}

impl Access {
    /// Reads the admin kubeconfig at `path`; `kubectl` is the kubectl binary to use with it.
    pub fn new(path: &Path, kubectl: PathBuf) -> Result<Self, HarnessError> {
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
            HarnessError::Start(format!("invalid kubeconfig {}: {e}", path.display()))
        })?;
        Ok(Self {
            kubeconfig,
            kubeconfig_path: path.to_path_buf(),
            kubectl: Kubectl::new(kubectl, path.to_path_buf()),
        })
    }

    /// A client authenticated as cluster admin.
    pub async fn client(&self) -> Client {
        client_from(self.kubeconfig.clone()).await
    }

    /// A client that impersonates `user` in `groups`, for RBAC tests. `system:authenticated`
    /// is added, as the API server does for every real user.
    pub async fn impersonate(&self, user: &str, groups: &[&str]) -> Client {
        let mut kubeconfig = self.kubeconfig.clone();
        for named in &mut kubeconfig.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(user.to_string());
                let mut all: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
                all.push("system:authenticated".to_string());
                auth.impersonate_groups = Some(all);
            }
        }
        client_from(kubeconfig).await
    }

    /// `kubectl` as cluster admin.
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
    }

    /// The admin kubeconfig file, for tools and for an operator under test.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A fresh namespace for one test, deleted afterwards or dumped and kept on failure.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        TestNamespace::create(self.client().await, self.kubectl.clone(), prefix).await
    }
}

async fn client_from(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot build a client config from the test kubeconfig: {e}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a client: {e}"))
}
