//! Where the pinned control-plane binaries are: built (or found warm) by `hack/tools/build.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::HarnessError;

/// The repository's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The folder holding kube-apiserver, etcd, kubectl, kwokctl, ...
///
/// `VERBUND_TOOLS_BIN` names it directly (the Makefile sets it); otherwise the build script is
/// run, which builds nothing on a warm machine.
pub fn bin_dir() -> Result<&'static Path, HarnessError> {
    static DIR: OnceLock<Result<PathBuf, HarnessError>> = OnceLock::new();
    DIR.get_or_init(resolve_bin_dir)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

fn resolve_bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("VERBUND_TOOLS_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = workspace_root().join("hack/tools/build.sh");
    let output = Command::new(&script)
        .arg("--bin-dir")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| HarnessError::Tools(format!("cannot run {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(HarnessError::Tools(format!(
            "{} failed ({}); see its output above",
            script.display(),
            output.status
        )));
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Ok(PathBuf::from(dir))
}

/// The path of one pinned binary, checked to exist.
pub fn binary(name: &str) -> Result<PathBuf, HarnessError> {
    binary_in(bin_dir()?, name)
}

/// The path of binary `name` in `dir`, checked to exist.
pub fn binary_in(dir: &Path, name: &str) -> Result<PathBuf, HarnessError> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        _ => Err(HarnessError::Tools(format!(
            "{} does not exist: the tool cache is incomplete (run hack/tools/build.sh, or check VERBUND_TOOLS_BIN)",
            path.display()
        ))),
    }
}
