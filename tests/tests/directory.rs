//! The operator's public directory page (`--directory-addr`) on the simulated pool with the
//! Saarland example, in a real browser: Debian's Chromium driven by playwright-core, with
//! axe-core checking WCAG 2.1 A and AA (`tests/directory/check.mjs`). The page lists every
//! example service with a catalogue entry, a search for "Neunkirchen" typed into the field
//! narrows it to Neunkirchen's services, a search without a hit says so, Tab from the top
//! reaches the skip link and then the search field, and axe finds no violation.
//!
//! The npm packages are installed once per `package-lock.json` into
//! `~/.cache/verbund/npm/<hash>`, outside the work tree. A full-page screenshot of the list is
//! written to `VERBUND_DIRECTORY_SCREENSHOT` (e.g. `docs/directory.png`), else to a temporary
//! file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::api::Api;
use serde_json::json;
use tokio::process::Command;
use verbund_operator::api::{PortalService, Tenant};
use verbund_tests::control_plane::free_port;
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{cluster, crds, examples, operator_binary, tools, wait};

const TIMEOUT: Duration = Duration::from_secs(300);
/// Where Debian's `chromium` package puts the browser (`make deps` installs it).
const CHROMIUM: &str = "/usr/bin/chromium";
/// The search typed into the page, and the Kreis whose services it must find.
const QUERY: &str = "Neunkirchen";
const KREIS_NEUNKIRCHEN: &str = "10043";
/// A search that finds nothing.
const NOTHING: &str = "Mondlandung";

fn project() -> PathBuf {
    tools::workspace_root().join("tests/directory")
}

/// FNV-1a, 64 bits: a stable name for a lock file's contents.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `node_modules` folder of `tests/directory`, installed by `npm ci` into
/// `~/.cache/verbund/npm/<hash of package-lock.json>` when not there yet. The install goes to
/// a folder of its own first and is renamed when complete, so a broken install is never taken
/// for a finished one.
async fn node_modules() -> PathBuf {
    let lock = std::fs::read(project().join("package-lock.json"))
        .expect("tests/directory/package-lock.json");
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let root = home.join(".cache/verbund/npm");
    let cache = root.join(format!("{:016x}", fnv1a(&lock)));
    let modules = cache.join("node_modules");
    if modules.join("playwright-core").is_dir() && modules.join("axe-core").is_dir() {
        return modules;
    }
    std::fs::create_dir_all(&root).expect("the npm cache folder");
    let partial = root.join(format!(
        "{:016x}.partial-{}",
        fnv1a(&lock),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).expect("the npm install folder");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(project().join(file), partial.join(file))
            .unwrap_or_else(|e| panic!("cannot copy {file} to {}: {e}", partial.display()));
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&partial)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run npm (Debian's npm package, or Node.js): {e}"));
    assert!(
        out.status.success(),
        "npm ci in {}: {}",
        partial.display(),
        text(&out)
    );
    if std::fs::rename(&partial, &cache).is_err() {
        // Installed meanwhile by another run: keep that one.
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(
        modules.join("playwright-core").is_dir(),
        "npm ci left no playwright-core in {}",
        modules.display()
    );
    modules
}

/// Where the screenshot goes: `VERBUND_DIRECTORY_SCREENSHOT` (relative to the repository), or
/// a temporary file.
fn screenshot_path(temp: &Path) -> PathBuf {
    match std::env::var_os("VERBUND_DIRECTORY_SCREENSHOT") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if path.is_absolute() {
                path
            } else {
                tools::workspace_root().join(path)
            }
        }
        _ => temp.join("directory.png"),
    }
}

/// The example's services with a catalogue entry: (title, regional keys).
fn catalogued() -> Vec<(String, Vec<String>)> {
    examples::saarland()
        .iter()
        .filter(|d| d.kind() == "PortalService")
        .filter_map(|d| {
            let catalog = &d.value["spec"]["catalog"];
            let title = catalog["title"].as_str()?.to_string();
            let keys = catalog["regionalKeys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Some((title, keys))
        })
        .collect()
}

async fn apply_example(pool: &cluster::SimulatedCluster) {
    let client = pool.client().await;
    let dir = examples::saarland_dir();
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
    for doc in examples::saarland().iter().filter(|d| d.kind() == "Tenant") {
        wait::ready(&tenants, doc.name(), TIMEOUT).await;
    }
    for file in [
        "30-services-land.yaml",
        "31-services-hochschulen.yaml",
        "32-services-saarbruecken.yaml",
        "33-services-kommunen.yaml",
    ] {
        apply(file).await;
    }
    for doc in examples::saarland()
        .iter()
        .filter(|d| d.kind() == "PortalService")
    {
        let api: Api<PortalService> =
            Api::namespaced(client.clone(), doc.namespace().expect("namespaced"));
        wait::ready(&api, doc.name(), TIMEOUT).await;
    }
}

#[tokio::test]
async fn the_directory_page_is_accessible_and_searchable_in_a_real_browser() {
    // What the check needs beyond the pool, first: a missing browser fails here, loudly.
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the directory page is checked in Debian's Chromium (`make deps` installs the chromium package)"
    );
    let modules = node_modules().await;

    let pool = cluster::shared().await;
    let client = pool.client().await;
    crds::ensure_installed(&client).await;
    let directory_port = free_port().expect("port");
    let catalog_port = free_port().expect("port");
    let directory_flag = format!("--directory-addr=127.0.0.1:{directory_port}");
    let catalog_flag = format!("--catalog-addr=127.0.0.1:{catalog_port}");
    let mut operator = OperatorProcess::start_as_operator(
        operator_binary!(),
        pool.kubeconfig_path(),
        &[&directory_flag, &catalog_flag],
    )
    .await
    .expect("the operator starts");
    operator.await_ready(TIMEOUT).await.expect("ready");
    let url = format!("http://127.0.0.1:{directory_port}/");

    apply_example(pool).await;

    let entries = catalogued();
    let all: Vec<&str> = entries.iter().map(|(t, _)| t.as_str()).collect();
    let in_neunkirchen: Vec<&str> = entries
        .iter()
        .filter(|(_, keys)| keys.iter().any(|k| k.starts_with(KREIS_NEUNKIRCHEN)))
        .map(|(t, _)| t.as_str())
        .collect();
    assert!(
        all.len() > in_neunkirchen.len() && !in_neunkirchen.is_empty(),
        "the example has services in and outside Neunkirchen"
    );

    // The page follows the catalogue, which follows the caches: wait until it lists every
    // service, each available, as the services themselves are Ready.
    let stated = format!("{} Dienste gefunden", all.len());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let last = match reqwest::get(&url).await {
            Ok(response) => {
                let status = response.status();
                let page = response.text().await.unwrap_or_default();
                if status.is_success()
                    && page.contains(&stated)
                    && !page.contains("derzeit gestört")
                {
                    break;
                }
                let shown = page
                    .lines()
                    .find(|l| l.contains("gefunden") || l.contains("<h2>"))
                    .unwrap_or_default()
                    .to_string();
                format!("{status}: {shown}")
            }
            Err(e) => e.to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page does not list every service as available after {TIMEOUT:?}; last seen: {last}\noperator log:\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let temp = tempfile::Builder::new()
        .prefix("verbund-directory-")
        .tempdir()
        .expect("temp dir");
    let screenshot = screenshot_path(temp.path());
    let expected = temp.path().join("expected.json");
    std::fs::write(
        &expected,
        json!({
            "all": all,
            "search": { "query": QUERY, "titles": in_neunkirchen },
            "nothing": NOTHING,
        })
        .to_string(),
    )
    .expect("expected.json");

    let check = Command::new("node")
        .arg(project().join("check.mjs"))
        .arg(&url)
        .arg(&screenshot)
        .arg(&expected)
        .env("VERBUND_NODE_MODULES", &modules)
        .env("NODE_PATH", &modules)
        .env("VERBUND_CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TIMEOUT, check)
        .await
        .expect("check.mjs finishes in time")
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20 or later): {e}"));
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim());
    assert!(
        out.status.success(),
        "check.mjs failed ({}):\n{}\noperator log:\n{}",
        out.status,
        text(&out),
        operator.log_text()
    );
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        screenshot.display()
    );
    println!("screenshot: {} ({} bytes)", screenshot.display(), png.len());

    // The page lets go on shutdown: the operator stops in time, the page without an error.
    operator.signal("TERM").await.expect("stop");
    let (_, log) = operator
        .wait(Duration::from_secs(60))
        .await
        .expect("the operator stops within a minute of SIGTERM");
    assert!(
        !log.contains("directory page failed") && !log.contains("directory page ended"),
        "the directory page did not stop cleanly:\n{log}"
    );
}
