//! Integration mode: etcd, kube-apiserver and kube-controller-manager on free loopback ports.
//!
//! The API server runs as a production cluster's does: TLS with a test CA, client-certificate
//! authentication, RBAC (and Node) authorization, the usual admission plugins including
//! PodSecurity, ResourceQuota, LimitRanger and ValidatingAdmissionPolicy, and service-account
//! token signing. The controller-manager is added because much of what Verbund relies on is its
//! work: service accounts per namespace, quota usage, garbage collection of owned objects and
//! namespace deletion. There is no scheduler: pods stay Pending (cluster mode schedules them).
//!
//! One control plane is started per test binary, on first use, and shared by its tests; the
//! [`Reaper`] stops it and removes its files when the binary exits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use std::ops::Deref;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use tokio::sync::OnceCell;

use crate::access::Access;
use crate::reaper::Reaper;
use crate::{HarnessError, pki, tools};

/// The admission plugins of a production cluster (beyond those on by default).
pub const ADMISSION_PLUGINS: &str = "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,\
    ResourceQuota,DefaultStorageClass,DefaultTolerationSeconds,StorageObjectInUseProtection,\
    PersistentVolumeClaimResize,RuntimeClass,Priority,NodeRestriction,TaintNodesByCondition,\
    CertificateApproval,CertificateSigning,CertificateSubjectRestriction,\
    MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,\
    DenyServiceExternalIPs";

/// A running etcd + kube-apiserver + kube-controller-manager.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    access: Access,
    process_ids: Vec<u32>,
    reaper: Reaper,
}

impl Deref for ControlPlane {
    type Target = Access;
    fn deref(&self) -> &Access {
        &self.access
    }
}

/// The control plane of this test binary, started on first use.
///
/// Panics with the reason when it cannot be started: a test that needs it must fail, not skip.
pub async fn shared() -> &'static ControlPlane {
    static CONTROL_PLANE: OnceCell<Result<ControlPlane, HarnessError>> = OnceCell::const_new();
    let started = CONTROL_PLANE
        .get_or_init(|| async {
            crate::init_logging();
            ControlPlane::start().await
        })
        .await;
    match started {
        Ok(cp) => cp,
        Err(error) => {
            panic!("cannot start the test control plane (etcd + kube-apiserver): {error}")
        }
    }
}

impl ControlPlane {
    /// Starts a new control plane from the pinned binaries. Prefer [`shared`], which starts one
    /// per test binary.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(tools::bin_dir()?).await
    }

    /// Starts a new control plane from the binaries in `bin_dir`.
    pub async fn start_with(bin_dir: &Path) -> Result<Self, HarnessError> {
        let etcd_bin = tools::binary_in(bin_dir, "etcd")?;
        let apiserver_bin = tools::binary_in(bin_dir, "kube-apiserver")?;
        let kcm_bin = tools::binary_in(bin_dir, "kube-controller-manager")?;

        let reaper = Reaper::start()?;
        let dir = tempfile::Builder::new()
            .prefix("verbund-control-plane-")
            .tempdir()
            .map_err(|e| HarnessError::Start(format!("cannot create a temporary folder: {e}")))?
            .keep();
        if std::env::var_os("VERBUND_KEEP_CONTROL_PLANE").is_none() {
            reaper.remove_dir(&dir)?;
        }
        let pki = pki::write(&dir)?;

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = spawn(
            &reaper,
            &dir,
            "etcd",
            Command::new(&etcd_bin)
                .arg("--name=verbund-test")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!(
                    "--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"
                ))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"
                ))
                .arg(format!(
                    "--initial-cluster=verbund-test=http://127.0.0.1:{etcd_peer_port}"
                ))
                // Test data need not survive a power cut; fsync would dominate write latency.
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn"),
        )?;

        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let apiserver = spawn(
            &reaper,
            &dir,
            "kube-apiserver",
            Command::new(&apiserver_bin)
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                // The `kubernetes` Service's endpoints would be this loopback address, which
                // the endpoint reconciler refuses; nothing in the tests dials that Service.
                .arg("--endpoint-reconciler-type=none")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
                .arg(format!(
                    "--tls-private-key-file={}",
                    pki.serving_key.display()
                ))
                .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
                .arg("--authorization-mode=Node,RBAC")
                .arg(format!("--enable-admission-plugins={ADMISSION_PLUGINS}"))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!(
                    "--service-account-key-file={}",
                    pki.service_account_public_key.display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    pki.service_account_key.display()
                ))
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .arg("--allow-privileged=true")
                .arg("--profiling=false")
                .arg("--v=1"),
        )?;

        let kubeconfig_text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: verbund-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: verbund-test\n  context:\n    cluster: verbund-test\n    user: admin\ncurrent-context: verbund-test\n",
            ca = pki.ca_cert.display(),
            cert = pki.admin_cert.display(),
            key = pki.admin_key.display(),
        );
        let kubeconfig_path = dir.join("kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig_text)
            .map_err(|e| HarnessError::io(&kubeconfig_path, e))?;
        let cp = Self {
            access: Access::new(&kubeconfig_path, tools::binary_in(bin_dir, "kubectl")?)?,
            dir: dir.clone(),
            server,
            process_ids: vec![etcd.id(), apiserver.id()],
            reaper,
        };
        cp.await_api_server(&[etcd, apiserver]).await?;

        let kcm_port = free_port()?;
        let kcm = spawn(
            &cp.reaper,
            &dir,
            "kube-controller-manager",
            Command::new(&kcm_bin)
                .arg(format!("--kubeconfig={}", kubeconfig_path.display()))
                .arg(format!(
                    "--authentication-kubeconfig={}",
                    kubeconfig_path.display()
                ))
                .arg(format!(
                    "--authorization-kubeconfig={}",
                    kubeconfig_path.display()
                ))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={kcm_port}"))
                .arg("--leader-elect=false")
                .arg("--controllers=*")
                .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
                .arg(format!(
                    "--service-account-private-key-file={}",
                    pki.service_account_key.display()
                ))
                .arg(format!(
                    "--cluster-signing-cert-file={}",
                    pki.ca_cert.display()
                ))
                .arg(format!(
                    "--cluster-signing-key-file={}",
                    pki.ca_key.display()
                ))
                .arg("--use-service-account-credentials=false")
                // The defaults (20 QPS) would make the controller-manager the bottleneck.
                .arg("--kube-api-qps=500")
                .arg("--kube-api-burst=500")
                .arg("--v=1"),
        )?;
        let mut cp = cp;
        cp.process_ids.push(kcm.id());
        cp.await_controller_manager(kcm).await?;
        Ok(cp)
    }

    /// The folder holding the control plane's data, certificates and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process ids of etcd, kube-apiserver and kube-controller-manager.
    pub fn process_ids(&self) -> &[u32] {
        &self.process_ids
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Waits until `/readyz` answers 200, failing early if a process died.
    async fn await_api_server(&self, processes: &[Started]) -> Result<(), HarnessError> {
        let client = self.client().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            for p in processes {
                p.check_alive()?;
            }
            let request = http::Request::get("/readyz").body(Vec::new());
            let last = match request {
                Ok(request) => match client.request_text(request).await {
                    Ok(body) if body.trim() == "ok" => return Ok(()),
                    Ok(body) => body,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::Start(format!(
                    "kube-apiserver at {} not ready after 90s: {last}\n{}",
                    self.server,
                    log_tail(&self.dir.join("kube-apiserver.log"))
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the controller-manager works: it has created the `default` namespace's
    /// service account (without which the ServiceAccount admission plugin refuses every pod).
    async fn await_controller_manager(&self, kcm: Started) -> Result<(), HarnessError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await, "default");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            kcm.check_alive()?;
            if accounts.get_opt("default").await?.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::Start(format!(
                    "kube-controller-manager created no service account within 90s\n{}",
                    log_tail(&self.dir.join("kube-controller-manager.log"))
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A process started by the harness, with its log file.
#[derive(Debug)]
struct Started {
    name: &'static str,
    child: std::sync::Mutex<std::process::Child>,
    log: PathBuf,
}

impl Started {
    fn id(&self) -> u32 {
        self.child.lock().map(|c| c.id()).unwrap_or(0)
    }

    fn check_alive(&self) -> Result<(), HarnessError> {
        let status = self
            .child
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten());
        match status {
            None => Ok(()),
            Some(status) => Err(HarnessError::Start(format!(
                "{} exited ({status}) during start-up\n{}",
                self.name,
                log_tail(&self.log)
            ))),
        }
    }
}

/// Starts `command` in its own process group with output to `<dir>/<name>.log`, and tells the
/// reaper to stop that group when the test binary exits.
fn spawn(
    reaper: &Reaper,
    dir: &Path,
    name: &'static str,
    command: &mut Command,
) -> Result<Started, HarnessError> {
    use std::os::unix::process::CommandExt;
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|e| HarnessError::io(&log, e))?;
    let err = file.try_clone().map_err(|e| HarnessError::io(&log, e))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            HarnessError::Start(format!(
                "cannot start {name} ({:?}): {e}",
                command.get_program()
            ))
        })?;
    reaper.stop_group(child.id())?;
    Ok(Started {
        name,
        child: std::sync::Mutex::new(child),
        log,
    })
}

/// A loopback port that is free right now.
pub fn free_port() -> Result<u16, HarnessError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| HarnessError::Start(format!("no free loopback port: {e}")))
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The flag dump at start-up says nothing about why a process failed.
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("FLAG: --")).collect();
    let tail = lines[lines.len().saturating_sub(25)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", path.display())
}
