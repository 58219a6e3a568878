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

/// A running `verbund-operator run`, killed when dropped. Its output goes to a file, so that a
/// chatty operator never blocks on a full pipe.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Child,
    admin: SocketAddr,
    log: tempfile::NamedTempFile,
}

/// A GET with a timeout: a probe must never hang a test.
async fn get(url: &str) -> Option<reqwest::Response> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    client.get(url).send().await.ok()
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
        let log = tempfile::NamedTempFile::new()
            .map_err(|e| HarnessError::Start(format!("cannot create the operator log: {e}")))?;
        // Duplicated handles share one file offset, so stdout and stderr interleave rather
        // than overwrite each other.
        let stdout = log
            .as_file()
            .try_clone()
            .map_err(|e| HarnessError::Start(e.to_string()))?;
        let stderr = log
            .as_file()
            .try_clone()
            .map_err(|e| HarnessError::Start(e.to_string()))?;
        // The catalogue and the directory page get free ports unless the test names them, so
        // that several replicas run side by side.
        let mut own_ports = Vec::new();
        for flag in ["--catalog-addr", "--directory-addr"] {
            if !extra_args.iter().any(|a| a.starts_with(flag)) {
                own_ports.push(format!("{flag}=127.0.0.1:0"));
            }
        }
        let child = Command::new(binary)
            .arg("run")
            .arg(format!("--admin-addr={admin}"))
            .args(&own_ports)
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HarnessError::Start(format!("cannot start verbund-operator: {e}")))?;
        Ok(Self { child, admin, log })
    }

    /// Starts `binary run` against the cluster of `admin_kubeconfig`, authenticated as the
    /// operator's ServiceAccount (see [`as_operator`]).
    pub async fn start_as_operator(
        binary: &Path,
        admin_kubeconfig: &Path,
        extra_args: &[&str],
    ) -> Result<Self, HarnessError> {
        let kubeconfig = as_operator(admin_kubeconfig).await?;
        Self::start(binary, &kubeconfig, extra_args).await
    }

    /// Base URL of the admin server (`/livez`, `/readyz`, `/metrics`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200; fails early, with the log, if the process exits.
    pub async fn await_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let url = format!("{}/readyz", self.admin_url());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let exited = self
                .child
                .try_wait()
                .map_err(|e| HarnessError::Start(e.to_string()))?;
            if let Some(status) = exited {
                let log = self.log_text();
                return Err(HarnessError::Start(format!(
                    "verbund-operator exited ({status}) before ready:\n{log}"
                )));
            }
            if get(&url).await.is_some_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let log = self.log_text();
                return Err(HarnessError::Start(format!(
                    "verbund-operator not ready after {timeout:?}; log:\n{log}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's `/metrics` exposition; None when it does not answer.
    pub async fn scrape(&self) -> Option<String> {
        get(&format!("{}/metrics", self.admin_url()))
            .await?
            .text()
            .await
            .ok()
    }

    /// The sum of the series of metric family `name` whose labels contain every one of
    /// `labels` (`key="value"`); NaN when the operator does not answer.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let Some(text) = self.scrape().await else {
            return f64::NAN;
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, v| sum + v)
    }

    /// Whether this replica holds the lease (`verbund_leader` 1).
    pub async fn leads(&self) -> bool {
        self.metric("verbund_leader", &[]).await == 1.0
    }

    /// Everything the operator logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
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
        mut self,
        timeout: Duration,
    ) -> Result<(std::process::ExitStatus, String), HarnessError> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| {
                HarnessError::Start(format!("verbund-operator still running after {timeout:?}"))
            })?
            .map_err(|e| HarnessError::Start(e.to_string()))?;
        Ok((status, self.log_text()))
    }
}

/// The operator running inside the test process, on a thread and runtime of its own so that
/// it outlives any single test. One per test binary (see [`in_process`]).
#[derive(Debug)]
pub struct InProcessOperator {
    admin: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
}

impl InProcessOperator {
    /// Starts the operator against the cluster of `admin_kubeconfig`, authenticated as the
    /// operator's ServiceAccount (`identity`), and waits until it is ready.
    pub async fn start(admin_kubeconfig: &Path) -> Result<Self, HarnessError> {
        let kubeconfig = as_operator(admin_kubeconfig).await?;
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| HarnessError::Start(format!("kubeconfig: {e}")))?;
        let token = shutdown.clone();
        std::thread::Builder::new()
            .name("verbund-operator".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => return eprintln!("operator runtime: {error}"),
                };
                runtime.block_on(async move {
                    let options = kube::config::KubeConfigOptions::default();
                    let client =
                        match kube::Config::from_custom_kubeconfig(kubeconfig, &options).await {
                            Ok(config) => kube::Client::try_from(config),
                            Err(e) => return eprintln!("operator config: {e}"),
                        };
                    let client = match client {
                        Ok(client) => client,
                        Err(e) => return eprintln!("operator client: {e}"),
                    };
                    let args = verbund_operator::runtime::RunArgs::local(admin);
                    if let Err(error) = verbund_operator::runtime::run(client, args, token).await {
                        eprintln!("in-process operator failed: {error:#}");
                    }
                });
            })
            .map_err(|e| HarnessError::Start(format!("cannot start the operator thread: {e}")))?;
        let operator = Self { admin, shutdown };
        operator.await_ready(Duration::from_secs(60)).await?;
        Ok(operator)
    }

    async fn await_ready(&self, timeout: Duration) -> Result<(), HarnessError> {
        let url = format!("{}/readyz", self.admin_url());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if get(&url).await.is_some_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::Start(format!(
                    "in-process operator not ready after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Base URL of the admin server.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The operator's metrics as Prometheus text.
    pub async fn metrics(&self) -> String {
        match get(&format!("{}/metrics", self.admin_url())).await {
            Some(r) => r.text().await.unwrap_or_default(),
            None => panic!("cannot read operator metrics"),
        }
    }

    /// Stops the operator (its controllers finish the reconcile in progress).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

/// A kubeconfig for the cluster of `admin_kubeconfig` that authenticates as the operator's
/// ServiceAccount with exactly the chart's rules: the tests never run Verbund as an admin.
pub async fn as_operator(admin_kubeconfig: &Path) -> Result<std::path::PathBuf, HarnessError> {
    let config = kube::config::Kubeconfig::read_from(admin_kubeconfig)
        .map_err(|e| HarnessError::Start(format!("kubeconfig: {e}")))?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .map_err(|e| HarnessError::Start(format!("kubeconfig: {e}")))?;
    let client =
        kube::Client::try_from(config).map_err(|e| HarnessError::Start(format!("client: {e}")))?;
    crate::identity::operator_kubeconfig(&client, admin_kubeconfig).await
}

/// The in-process operator of this test binary, started on first use against the cluster of
/// `kubeconfig`, as the operator's ServiceAccount.
pub async fn in_process(kubeconfig: &Path) -> &'static InProcessOperator {
    static OPERATOR: tokio::sync::OnceCell<Result<InProcessOperator, HarnessError>> =
        tokio::sync::OnceCell::const_new();
    let started = OPERATOR
        .get_or_init(|| async { InProcessOperator::start(kubeconfig).await })
        .await;
    match started {
        Ok(operator) => operator,
        Err(error) => panic!("cannot start the operator: {error}"),
    }
}
