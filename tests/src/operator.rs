//! The operator as users run it: the `verbund-operator` binary as a separate process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::HarnessError;
use crate::control_plane::free_port;

/// The operator binary for an integration test: `verbund-operator-e2e`, this crate's build of
/// the `verbund-operator` command line. A macro, because Cargo tells only integration tests
/// where it put the binaries.
#[macro_export]
macro_rules! operator_binary {
    () => {
        std::path::Path::new(env!("CARGO_BIN_EXE_verbund-operator-e2e"))
    };
}

/// A running `verbund-operator run`, killed when dropped.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Child,
    admin: SocketAddr,
}

impl OperatorProcess {
    /// Starts `binary run` (see [`operator_binary!`]) against `kubeconfig`, with the admin
    /// server on a free port.
    pub async fn start(
        binary: &Path,
        kubeconfig: &Path,
        extra_args: &[&str],
    ) -> Result<Self, HarnessError> {
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let child = Command::new(binary)
            .arg("run")
            .arg(format!("--admin-addr={admin}"))
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HarnessError::Start(format!("cannot start verbund-operator: {e}")))?;
        Ok(Self { child, admin })
    }

    /// Base URL of the admin server (`/livez`, `/readyz`, `/metrics`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200; fails early if the process exits.
    pub async fn await_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let url = format!("{}/readyz", self.admin_url());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| HarnessError::Start(e.to_string()))?
            {
                return Err(HarnessError::Start(format!(
                    "verbund-operator exited ({status}) before ready"
                )));
            }
            if let Ok(resp) = reqwest::get(&url).await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::Start(format!(
                    "verbund-operator not ready after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub async fn signal(&self, signal: &str) -> Result<(), HarnessError> {
        let pid = self
            .id()
            .ok_or_else(|| HarnessError::Start("operator already exited".into()))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await
            .map_err(|e| HarnessError::Start(format!("cannot run kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError::Start(format!("kill -{signal} {pid} failed")))
        }
    }

    /// Waits for the process to exit and returns its exit status and everything it logged.
    pub async fn wait(
        self,
        timeout: Duration,
    ) -> Result<(std::process::ExitStatus, String), HarnessError> {
        let output = tokio::time::timeout(timeout, self.child.wait_with_output())
            .await
            .map_err(|_| {
                HarnessError::Start(format!("verbund-operator still running after {timeout:?}"))
            })?
            .map_err(|e| HarnessError::Start(e.to_string()))?;
        let log = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        Ok((output.status, log))
    }
}
