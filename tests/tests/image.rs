//! The operator's OCI image as an installation runs it: built by `make image` (its script),
//! inspected with skopeo, run with podman (runc, host network, read-only root, the image's own
//! non-root user) as the operator's ServiceAccount against the simulated pool, where a
//! PortalService then converges. A machine that cannot run podman fails the test with the
//! reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::Api;
use verbund_operator::api::portal_service::PortalService;
use verbund_tests::control_plane::free_port;
use verbund_tests::{cluster, crds, examples, operator, tools, unique_name, wait};

const TIMEOUT: Duration = Duration::from_secs(180);

async fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `make image`'s script: builds (or finds current) the archive and prints its path.
async fn image_archive() -> PathBuf {
    let script = tools::workspace_root().join("hack/image.sh");
    let out = run(&script.to_string_lossy(), &[], &[]).await;
    assert!(out.status.success(), "hack/image.sh failed: {}", text(&out));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    PathBuf::from(path)
}

/// podman's settings on this kind of machine: runc (crun fails on hybrid cgroups), rlimits it
/// may set, cgroupfs, events in a file; state in a cache folder of its own.
fn podman_env(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("podman folder");
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .expect("containers.conf");
    conf
}

#[tokio::test]
async fn the_image_runs_the_operator_and_a_portal_service_converges() {
    let archive = image_archive().await;
    let reference = format!("oci-archive:{}", archive.display());

    // What skopeo says about it: entrypoint, non-root user, OCI labels.
    let inspect = run("skopeo", &["inspect", "--config", &reference], &[]).await;
    assert!(inspect.status.success(), "skopeo: {}", text(&inspect));
    let config: serde_json::Value =
        serde_json::from_slice(&inspect.stdout).expect("skopeo prints JSON");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/verbund-operator"])
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.title"], "verbund-operator");
    let layers = config["rootfs"]["diff_ids"].as_array().map(Vec::len);
    assert_eq!(layers, Some(1), "one layer: the binary, FROM scratch");

    // The simulated pool, the operator's identity, a self-contained kubeconfig it can read.
    let pool = cluster::shared().await;
    let client = pool.client().await;
    crds::ensure_installed(&client).await;
    let as_operator = operator::as_operator(pool.kubeconfig_path())
        .await
        .expect("the operator's ServiceAccount");
    let flat = pool
        .kubectl()
        .ok([
            "--kubeconfig",
            &as_operator.to_string_lossy(),
            "config",
            "view",
            "--raw",
            "--flatten",
            "--minify",
        ])
        .await;
    let mount = tempfile::Builder::new()
        .prefix("verbund-image-")
        .tempdir()
        .expect("temp dir");
    let kubeconfig = mount.path().join("kubeconfig");
    std::fs::write(&kubeconfig, flat).expect("kubeconfig");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(mount.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let podman = Podman::new(&dirs_cache().join("podman"));
    let port = free_port().expect("port");
    let name = unique_name("verbund-operator");
    let volume = format!("{}:/config/kubeconfig:ro", kubeconfig.display());
    let admin = format!("--admin-addr=127.0.0.1:{port}");
    let started = podman
        .run(&[
            "run",
            "--detach",
            "--name",
            &name,
            "--network=host",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--volume",
            &volume,
            "--env",
            "KUBECONFIG=/config/kubeconfig",
            &reference,
            "run",
            &admin,
        ])
        .await;
    assert!(
        started.status.success(),
        "podman cannot run the image on this machine: {}",
        text(&started)
    );
    let logs = || async { text(&podman.run(&["logs", &name]).await) };

    let ready = format!("http://127.0.0.1:{port}/readyz");
    let reached = tokio::spawn(async move {
        wait::until(
            Duration::from_secs(120),
            "the container's /readyz",
            || async {
                match reqwest::get(&ready).await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    other => Err(format!("{:?}", other.map(|r| r.status()))),
                }
            },
        )
        .await
    })
    .await;
    if reached.is_err() {
        panic!(
            "the container never became ready; its log:\n{}",
            logs().await
        );
    }

    // A PortalService of the example pool converges under the containerised operator.
    let converged = tokio::spawn(async move {
        for file in ["00-sites.yaml", "10-baselines.yaml", "20-tenants.yaml"] {
            let path = examples::saarland_dir().join(file);
            pool.kubectl()
                .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
                .await;
        }
        let tenants: Api<verbund_operator::api::Tenant> = Api::all(client.clone());
        wait::ready(&tenants, "land-mibs", TIMEOUT).await;
        let path = examples::saarland_dir().join("30-services-land.yaml");
        pool.kubectl()
            .ok(["apply", "--server-side", "-f", &path.to_string_lossy()])
            .await;
        let services: Api<PortalService> = Api::namespaced(client, "mibs-portal");
        wait::ready(&services, "portal-frontend", TIMEOUT).await;
    })
    .await;
    if converged.is_err() {
        panic!("no convergence; the container's log:\n{}", logs().await);
    }

    // SIGTERM from `podman stop`: a clean exit.
    let stopped = podman.run(&["stop", "--time", "30", &name]).await;
    assert!(stopped.status.success(), "{}", text(&stopped));
    let log = logs().await;
    let exit = podman
        .run(&["inspect", "--format", "{{.State.ExitCode}}", &name])
        .await;
    podman.run(&["rm", "--force", &name]).await;
    assert_eq!(
        String::from_utf8_lossy(&exit.stdout).trim(),
        "0",
        "the operator exits cleanly on SIGTERM: {log}"
    );
}

/// podman with this machine kind's settings (see [`podman_env`]) and its own storage.
struct Podman {
    conf: PathBuf,
    root: String,
    runroot: String,
}

impl Podman {
    fn new(dir: &Path) -> Self {
        Self {
            conf: podman_env(dir),
            root: dir.join("storage").display().to_string(),
            runroot: dir.join("run").display().to_string(),
        }
    }

    async fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec![
            "--root",
            &self.root,
            "--runroot",
            &self.runroot,
            "--storage-driver",
            "vfs",
        ];
        all.extend_from_slice(args);
        run("podman", &all, &[("CONTAINERS_CONF", &self.conf)]).await
    }
}

/// The machine's cache folder for Verbund (outside the work tree).
fn dirs_cache() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/verbund")
}
