//! The bench's smallest tier inside `make test`, so the harness cannot rot. It asserts what
//! must hold at any size (everything converged; a restart and a resync write nothing), never
//! a timing.

use std::path::Path;
use std::time::Duration;

use verbund_bench::{Options, Tier, run_tier};

#[tokio::test]
async fn the_smoke_tier_converges_and_a_restart_or_resync_writes_nothing() {
    verbund_tests::init_logging();
    let tier = Tier::named("smoke").expect("the smoke tier");
    let options = Options {
        operator: Path::new(env!("CARGO_BIN_EXE_verbund-bench")).to_path_buf(),
        label: "smoke".into(),
        resync: Duration::from_secs(10),
        timeout: Duration::from_secs(180),
    };
    let report = run_tier(&tier, &options).await.expect("the smoke tier ran");
    println!("{}", report.table());
    assert_eq!(report.services, 8);
    assert!(report.write_rate > 0.0, "W measured");
    assert!(
        report.writes_per_service > 0.0,
        "the audit log saw the operator create: {report:?}"
    );
    assert_eq!(
        (report.resync_writes, report.restart_writes),
        (0, 0),
        "no write without a change: resync {:?}, restart {:?}",
        report.resync_writes_by_kind,
        report.restart_writes_by_kind
    );
    assert_eq!(report.change_to_observed.samples, tier.changes);
}
