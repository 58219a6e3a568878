//! The `verbund-operator` command line. It lives in the library so that the test crate can
//! build the very same binary alongside its tests.

use std::process::ExitCode;

use crate::runtime::{self, RunArgs};
use crate::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Verbund: control plane of the Saarland pooled data centre.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Format of log lines (level from RUST_LOG).
    #[arg(
        long,
        env = "VERBUND_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers and the admin server against the current kubeconfig or in-cluster.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd {
        /// Write one file per CRD into this folder instead of printing them.
        #[arg(long)]
        output_dir: Option<std::path::PathBuf>,
    },
    /// Print the rules of a ClusterRole Verbund installs as YAML (the Helm chart includes them).
    Rbac {
        /// Which role: the operator's own, or the one tenant admins are bound to.
        #[arg(long, value_enum, default_value_t = crate::rbac::RoleName::Operator)]
        role: crate::rbac::RoleName,
        #[arg(long, value_enum, default_value_t)]
        format: crate::rbac::Format,
    },
}

/// Parses the command line, runs the subcommand and maps its outcome to the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => tokio_main(run(*args)),
        Command::Crd { output_dir } => print_crds(output_dir.as_deref()),
        Command::Rbac { role, format } => print_rules(role, format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot load a kubeconfig or in-cluster config: {e}"))?;
    let shutdown = CancellationToken::new();
    runtime::cancel_on_signal(shutdown.clone())?;
    runtime::run(client, args, shutdown).await
}

/// Runs `future` on a multi-threaded Tokio runtime.
fn tokio_main(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(future)
}

/// Prints every CRD as a YAML stream, or writes them to `output_dir`, one file each.
fn print_crds(output_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for crd in crate::api::crds() {
        let yaml = crate::api::crd_yaml(&crd)?;
        match output_dir {
            Some(dir) => {
                let path = dir.join(crate::api::crd_file_name(&crd));
                std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

/// Prints a role's rules for the chart (YAML) or the README (a table of the operator's rules).
fn print_rules(role: crate::rbac::RoleName, format: crate::rbac::Format) -> anyhow::Result<()> {
    use crate::rbac::{Format, RoleName};
    match (role, format) {
        (_, Format::Yaml) => print!("{}", crate::rbac::role_rules_yaml(role)?),
        (RoleName::Operator, Format::Markdown) => print!("{}", crate::rbac::markdown_table()),
        (RoleName::TenantAdmin, Format::Markdown) => {
            anyhow::bail!("--format markdown: only the operator's role has a table")
        }
    }
    Ok(())
}
