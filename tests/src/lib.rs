//! The Verbund test bed: real Kubernetes control planes for integration and end-to-end tests.
//!
//! - [`control_plane`]: etcd, kube-apiserver and kube-controller-manager on loopback, with TLS,
//!   RBAC and the admission plugins of a production cluster. One per test binary.
//! - [`cluster`]: a kwok-simulated cluster (scheduler, controller-manager, fake nodes in sites).
//! - [`namespace`]: a temporary namespace per test, dumped and kept when the test fails.
//!
//! A test that needs a control plane and cannot start one panics with the reason: it never
//! skips.

pub mod access;
pub mod admission;
pub mod audit;
pub mod baselines;
pub mod cluster;
pub mod control_plane;
pub mod crds;
pub mod examples;
pub mod faults;
pub mod identity;
pub mod kubectl;
pub mod namespace;
pub mod operator;
pub mod pki;
pub mod reaper;
pub mod tenancy;
pub mod tools;
pub mod wait;

use std::path::Path;

/// Why the test bed could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HarnessError {
    #[error("control-plane binaries unavailable: {0}")]
    Tools(String),
    #[error("cannot create certificates: {0}")]
    Pki(String),
    #[error("{0}")]
    Start(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("kubernetes client: {0}")]
    Kube(String),
}

impl HarnessError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }
}

impl From<kube::Error> for HarnessError {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error.to_string())
    }
}

/// Installs a log subscriber for test output (once; later calls do nothing).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,verbund_operator=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A name unique within this test run: `prefix-<suffix>`, a valid DNS label.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let suffix = format!("{:x}{:x}", std::process::id() ^ nanos, n);
    let prefix: String = prefix.chars().take(40).collect();
    format!("{prefix}-{}", &suffix[suffix.len().saturating_sub(8)..])
}

/// The API server's own `/metrics` exposition (its request and flow-control counters:
/// independent of the operator's word).
pub async fn api_server_metrics(client: &kube::Client) -> String {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    client
        .request_text(request)
        .await
        .expect("API server metrics")
}

/// Applies `body` server-side as the tests' field manager (`verbund-tests`) and returns the
/// object as stored; panics with the API server's answer if it is refused.
pub async fn apply<K>(api: &kube::Api<K>, body: &serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = body["metadata"]["name"].as_str().expect("a name");
    api.patch(
        name,
        &kube::api::PatchParams::apply("verbund-tests"),
        &kube::api::Patch::Apply(body),
    )
    .await
    .unwrap_or_else(|e| panic!("{name} refused: {e}"))
}
