//! `verbund-bench`: measures the operator on a simulated pool, tier by tier.
//!
//! ```sh
//! cargo run --release -p verbund-bench -- --tier 1k
//! cargo run --release -p verbund-bench -- --tier 1k --operator /path/to/other/verbund-operator --label baseline
//! cargo run --release -p verbund-bench -- --catalog 10000
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use verbund_bench::{Options, Tier, run_tier};

/// Measures the Verbund operator on a kwok-simulated pool.
#[derive(Debug, Parser)]
struct Args {
    /// Tiers to run, one after the other, each on a fresh pool: idle, smoke, 1k, 10k.
    #[arg(long = "tier", required_unless_present = "catalog")]
    tiers: Vec<String>,
    /// Instead of tiers: the gRPC catalogue with this many services (ListServices latency,
    /// 1,000 watchers and a burst of changes, the operator's memory).
    #[arg(long, conflicts_with = "tiers")]
    catalog: Option<usize>,
    /// The operator binary to measure; default: this checkout's, built into the bench.
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Name of the measured operator in the report.
    #[arg(long, default_value = "this checkout")]
    label: String,
    /// Seconds after which the operator reconciles unchanged objects again.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// Longest wait for a convergence, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    /// Where to write the reports as JSON.
    #[arg(long, default_value = "bench-report.json")]
    json: PathBuf,
}

fn main() -> std::process::ExitCode {
    // The bench is also the operator it measures (`verbund-bench run ...`), so that one
    // `cargo run` builds both from this checkout.
    if std::env::args().nth(1).as_deref() == Some("run") {
        return verbund_operator::cli::main();
    }
    match bench() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("verbund-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber_init();
    let operator = match args.operator {
        Some(path) => path,
        None => std::env::current_exe()?,
    };
    let options = Options {
        operator,
        label: args.label,
        resync: Duration::from_secs(args.resync_seconds),
        timeout: Duration::from_secs(args.timeout_seconds),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(services) = args.catalog {
        eprintln!("measuring the catalogue with {services} services ...");
        let report = runtime.block_on(verbund_bench::catalog_load::run(
            &options.operator,
            &options.label,
            services,
            options.timeout,
        ))?;
        println!("{}", report.table());
        std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
        eprintln!("report written to {}", args.json.display());
        return Ok(());
    }
    let mut reports = Vec::new();
    for name in &args.tiers {
        let tier = Tier::named(name)
            .ok_or_else(|| anyhow::anyhow!("--tier {name}: no such tier (idle, smoke, 1k, 10k)"))?;
        eprintln!("running tier {name} ...");
        let report = runtime.block_on(run_tier(&tier, &options))?;
        println!("{}", report.table());
        reports.push(report);
        std::fs::write(&args.json, serde_json::to_string_pretty(&reports)?)?;
    }
    eprintln!("reports written to {}", args.json.display());
    Ok(())
}

fn tracing_subscriber_init() {
    verbund_tests::init_logging();
}
