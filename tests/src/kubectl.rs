//! `kubectl` against a test control plane, for what users do by hand (apply, explain, dump).

use std::path::{Path, PathBuf};

/// The pinned kubectl with one kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

/// What one kubectl invocation printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(bin: PathBuf, kubeconfig: PathBuf) -> Self {
        Self { bin, kubeconfig }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs kubectl with `args` and returns what it printed, whether it succeeded or not.
    pub async fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let result = tokio::process::Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await;
        to_output(result)
    }

    /// Runs kubectl and panics with its stderr if it fails; returns stdout.
    pub async fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.run(&args).await;
        assert!(out.success, "kubectl {args:?} failed:\n{}", out.stderr);
        out.stdout
    }

    /// Blocking variant, for use in `Drop`.
    pub fn run_blocking(&self, args: &[&str]) -> Output {
        let result = std::process::Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output();
        to_output(result)
    }
}

fn to_output(result: std::io::Result<std::process::Output>) -> Output {
    match result {
        Ok(o) => Output {
            success: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Output {
            success: false,
            stdout: String::new(),
            stderr: format!("cannot run kubectl: {e}"),
        },
    }
}
