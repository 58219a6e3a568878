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
    Run(RunArgs),
}

/// Parses the command line, runs the subcommand and maps its outcome to the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => tokio_main(run(args)),
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
