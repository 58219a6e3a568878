//! Cluster mode: a kwok-simulated cluster with scheduler and controller-manager, whose fake
//! nodes are grouped into sites by `topology.kubernetes.io/zone`.
//!
//! kwokctl runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the kwok
//! controller as local processes from the pinned binaries (binary runtime: nothing is pulled).
//! The kwok controller plays kubelet for every node annotated `kwok.x-k8s.io/node=fake`: it keeps
//! the nodes Ready and moves scheduled pods to Running.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::OnceCell;

use crate::access::Access;
use crate::control_plane::log_tail;
use crate::reaper::{Reaper, shell_quote};
use crate::{HarnessError, tools};

/// The node label that places a node in a site.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The size of one fake node: a typical two-socket rack server.
#[derive(Debug, Clone)]
pub struct NodeShape {
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

impl Default for NodeShape {
    fn default() -> Self {
        Self {
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: "110".into(),
        }
    }
}

/// What to simulate: sites (zones) with a number of nodes each.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub sites: Vec<(String, usize)>,
    pub node: NodeShape,
    /// The API server's Service IP range; kube's default (a /24, ~250 Services) when None.
    pub service_ip_range: Option<String>,
    /// Record every request in an audit log (`audit_log()`), by the policy `AUDIT_POLICY`.
    pub audit: bool,
}

/// The audit policy of a cluster started with `audit`: who did what to which resource, without
/// request or response bodies.
pub const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

impl ClusterSpec {
    /// The pool's three data centres: the Land's, the university's and the municipal one.
    pub fn three_sites(nodes_per_site: usize) -> Self {
        Self {
            sites: ["rz-land", "rz-uds", "rz-ego"]
                .into_iter()
                .map(|zone| (zone.to_string(), nodes_per_site))
                .collect(),
            node: NodeShape::default(),
            service_ip_range: None,
            audit: false,
        }
    }
}

/// A running kwok-simulated cluster.
#[derive(Debug)]
pub struct SimulatedCluster {
    name: String,
    workdir: PathBuf,
    spec: ClusterSpec,
    access: Access,
    _reaper: Reaper,
}

impl Deref for SimulatedCluster {
    type Target = Access;
    fn deref(&self) -> &Access {
        &self.access
    }
}

/// The simulated cluster of this test binary (three sites, two nodes each), started on first
/// use. Panics with the reason when it cannot be started: a test that needs it must fail.
pub async fn shared() -> &'static SimulatedCluster {
    static CLUSTER: OnceCell<Result<SimulatedCluster, HarnessError>> = OnceCell::const_new();
    let started = CLUSTER
        .get_or_init(|| async {
            crate::init_logging();
            SimulatedCluster::start(ClusterSpec::three_sites(2)).await
        })
        .await;
    match started {
        Ok(cluster) => cluster,
        Err(error) => panic!("cannot start the simulated cluster (kwokctl): {error}"),
    }
}

impl SimulatedCluster {
    /// Creates the cluster and its nodes and waits until every node is Ready.
    pub async fn start(spec: ClusterSpec) -> Result<Self, HarnessError> {
        let kwokctl = tools::binary("kwokctl")?;
        let bin_dir = tools::bin_dir()?;
        let reaper = Reaper::start()?;
        let workdir = tempfile::Builder::new()
            .prefix("verbund-kwok-")
            .tempdir()
            .map_err(|e| HarnessError::Start(format!("cannot create a temporary folder: {e}")))?
            .keep();
        let name = crate::unique_name("verbund");
        let kubeconfig_path = workdir.join("kubeconfig");

        // Registered before creation, so a half-created cluster is removed too.
        let env = format!("KWOK_WORKDIR={}", shell_quote(&workdir.to_string_lossy()));
        if std::env::var_os("VERBUND_KEEP_CONTROL_PLANE").is_none() {
            reaper.remove_dir(&workdir)?;
        }
        reaper.at_exit(&format!(
            "{env} {} delete cluster --name {name} --kubeconfig {}",
            shell_quote(&kwokctl.to_string_lossy()),
            shell_quote(&kubeconfig_path.to_string_lossy())
        ))?;

        let config_path = workdir.join("kwokctl.yaml");
        std::fs::write(&config_path, kwokctl_config(&spec))
            .map_err(|e| HarnessError::io(&config_path, e))?;
        let audit_policy = workdir.join("audit-policy.yaml");
        if spec.audit {
            std::fs::write(&audit_policy, AUDIT_POLICY)
                .map_err(|e| HarnessError::io(&audit_policy, e))?;
        }
        let binary = |name: &str| format!("{}", bin_dir.join(name).display());
        let mut create = Command::new(&kwokctl);
        create
            .env("KWOK_WORKDIR", &workdir)
            .env("KWOK_KUBECTL_BINARY", binary("kubectl"))
            .args(["create", "cluster", "--name", &name, "--runtime", "binary"])
            .arg("--kubeconfig")
            .arg(&kubeconfig_path)
            .args(["--kube-apiserver-binary", &binary("kube-apiserver")])
            .args([
                "--kube-controller-manager-binary",
                &binary("kube-controller-manager"),
            ])
            .args(["--kube-scheduler-binary", &binary("kube-scheduler")])
            .args(["--kwok-controller-binary", &binary("kwok")])
            .args(["--etcd-binary", &binary("etcd")])
            .args(["--kube-authorization", "--kube-admission"])
            .args(
                spec.audit
                    .then(|| {
                        [
                            "--kube-audit-policy".to_string(),
                            audit_policy.display().to_string(),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .arg("--config")
            .arg(&config_path)
            .args(["--wait", "120s"]);
        let output = tokio::task::spawn_blocking(move || create.output())
            .await
            .map_err(|e| HarnessError::Start(format!("kwokctl task failed: {e}")))?
            .map_err(|e| HarnessError::Start(format!("cannot run kwokctl: {e}")))?;
        if !output.status.success() {
            let logs = workdir.join("clusters").join(&name).join("logs");
            return Err(HarnessError::Start(format!(
                "kwokctl create cluster failed ({}):\n{}{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                log_tail(&logs.join("kube-apiserver.log"))
            )));
        }

        let cluster = Self {
            access: Access::new(&kubeconfig_path, tools::binary("kubectl")?)?,
            name,
            workdir,
            spec,
            _reaper: reaper,
        };
        for (zone, count) in cluster.spec.sites.clone() {
            cluster.add_nodes(&zone, count).await?;
        }
        cluster.await_nodes_ready().await?;
        Ok(cluster)
    }

    /// The name kwokctl knows the cluster by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// kwokctl's folder for this cluster (component logs are under `clusters/<name>/logs`).
    pub fn workdir(&self) -> &std::path::Path {
        &self.workdir
    }

    /// The API server's audit log (a cluster started with `audit`): one JSON event per line.
    pub fn audit_log(&self) -> PathBuf {
        self.workdir
            .join("clusters")
            .join(&self.name)
            .join("logs")
            .join("audit.log")
    }

    /// The process id of a control-plane component (`kube-apiserver`, `etcd`, ...), from the
    /// pid file kwokctl keeps.
    pub fn component_pid(&self, component: &str) -> Option<u32> {
        let path = self
            .workdir
            .join("clusters")
            .join(&self.name)
            .join("pids")
            .join(format!("{component}.pid"));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Restarts control-plane `component` (`kube-apiserver`, `etcd`, ...) as a crash would:
    /// SIGKILL, `down` of silence, then the same command line again, its output appended to
    /// the component's log and its pid file updated (so the cluster's teardown stops it).
    pub async fn restart_component(
        &self,
        component: &str,
        down: Duration,
    ) -> Result<(), HarnessError> {
        let pid = self
            .component_pid(component)
            .ok_or_else(|| HarnessError::Start(format!("no pid file for {component}")))?;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let argv: Vec<String> = std::fs::read(proc.join("cmdline"))
            .map_err(|e| HarnessError::io(&proc.join("cmdline"), e))?
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let cwd = std::fs::read_link(proc.join("cwd")).map_err(|e| HarnessError::io(&proc, e))?;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| HarnessError::Start(format!("{component} has no command line")))?;
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .map_err(|e| HarnessError::Start(format!("cannot run kill: {e}")))?;
        if !killed.success() {
            return Err(HarnessError::Start(format!("kill -KILL {pid} failed")));
        }
        while proc.exists() && !is_zombie(&proc) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(down).await;
        let logs = self.workdir.join("clusters").join(&self.name).join("logs");
        let log_path = logs.join(format!("{component}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HarnessError::io(&log_path, e))?;
        let err = log
            .try_clone()
            .map_err(|e| HarnessError::io(&log_path, e))?;
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(program)
                .args(args)
                .current_dir(cwd)
                .stdin(std::process::Stdio::null())
                .stdout(log)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| HarnessError::Start(format!("cannot start {component} again: {e}")))?
        };
        let pid_path = self
            .workdir
            .join("clusters")
            .join(&self.name)
            .join("pids")
            .join(format!("{component}.pid"));
        std::fs::write(&pid_path, child.id().to_string())
            .map_err(|e| HarnessError::io(&pid_path, e))?;
        // Not waited for: it runs until the cluster is deleted, like the others.
        std::mem::forget(child);
        Ok(())
    }

    /// The sites and node counts this cluster was started with.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Names of the nodes of site `zone`, in order.
    pub fn node_names(&self, zone: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{zone}-node-{i}")).collect()
    }

    /// Adds `count` fake nodes to site `zone`.
    pub async fn add_nodes(&self, zone: &str, count: usize) -> Result<(), HarnessError> {
        let nodes: Api<Node> = Api::all(self.client().await);
        for name in self.node_names(zone, count) {
            nodes
                .create(
                    &PostParams::default(),
                    &fake_node(&name, zone, &self.spec.node),
                )
                .await?;
        }
        Ok(())
    }

    /// Waits until every node reports Ready (the kwok controller has taken it over).
    async fn await_nodes_ready(&self) -> Result<(), HarnessError> {
        let nodes: Api<Node> = Api::all(self.client().await);
        let expected: usize = self.spec.sites.iter().map(|(_, n)| n).sum();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = nodes
                .list(&Default::default())
                .await?
                .items
                .iter()
                .filter(|n| is_ready(n))
                .count();
            if ready >= expected {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::Start(format!(
                    "only {ready} of {expected} fake nodes became Ready within 60s (is the kwok controller running?)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Component settings for kwokctl: the production admission plugins, and client rate limits
/// raised so that the scheduler (default 50 QPS) and the controller-manager (20 QPS) are not
/// the bottleneck. The scheduler and the controller-manager run without leader election: each
/// is alone, and with it a control-plane outage longer than its renew deadline (10 s) makes it
/// exit, where a production node's kubelet would start it again and nothing here would.
fn kwokctl_config(spec: &ClusterSpec) -> String {
    let arg = |key: &str, value: &str| format!("  - key: {key}\n    value: \"{value}\"\n");
    let qps =
        arg("kube-api-qps", "500") + &arg("kube-api-burst", "500") + &arg("leader-elect", "false");
    let mut api_server = arg(
        "enable-admission-plugins",
        crate::control_plane::ADMISSION_PLUGINS,
    );
    if let Some(range) = &spec.service_ip_range {
        api_server += &arg("service-cluster-ip-range", range);
    }
    if spec.audit {
        // The log is read by offset: it must not rotate (the API server's default is at 100 MB).
        api_server += &arg("audit-log-maxsize", "100000");
    }
    format!(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokctlConfiguration\ncomponentsPatches:\n\
         - name: kube-apiserver\n  extraArgs:\n{api_server}\
         - name: kube-scheduler\n  extraArgs:\n{qps}\
         - name: kube-controller-manager\n  extraArgs:\n{qps}"
    )
}

/// True when the node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ephemeral storage of a fake node: the local disk of a typical rack server.
const NODE_DISK: &str = "1800Gi";

/// A node the kwok controller will manage, labelled into site `zone`.
fn fake_node(name: &str, zone: &str, shape: &NodeShape) -> Node {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(shape.cpu.clone())),
        ("memory".to_string(), Quantity(shape.memory.clone())),
        ("pods".to_string(), Quantity(shape.pods.clone())),
        // The local disk every real node reports: tenant pods request ephemeral storage (the
        // LimitRange's default), and the scheduler places them only where there is some.
        ("ephemeral-storage".to_string(), Quantity(NODE_DISK.into())),
    ]
    .into();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", name),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", "amd64"),
                    ("type", "kwok"),
                    (ZONE_LABEL, zone),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            annotations: Some([("kwok.x-k8s.io/node".to_string(), "fake".to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            ..Default::default()
        }),
    }
}

/// True when the process at `/proc/<pid>` has exited and waits to be reaped.
fn is_zombie(proc: &std::path::Path) -> bool {
    std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_none_or(|state| state == 'Z' || state == 'X')
}
