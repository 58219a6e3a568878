//! The scale benchmark: a kwok-simulated pool, the operator as its own process authenticated as
//! its ServiceAccount (real RBAC, API Priority and Fairness), and a tier of tenants and portal
//! services. Each run measures, side by side:
//!
//! - **W**, the API server's write rate for the operator's object mix with the operator's own
//!   identity, and from it the floor `N × writes per service ÷ W`;
//! - the time until every service is converged (observed and Ready), as a ratio to that floor;
//! - the operator's writes per service, by resource and verb, from the API server's audit log;
//! - writes during a forced resync and after a restart (both should be none);
//! - the operator's memory (steady, peak) and CPU seconds, beside the control plane's;
//! - change -> observedGeneration and change -> Ready latencies while pods churn elsewhere;
//! - one audit cycle's requests at the tier's namespaces.
//!
//! `verbund-bench --catalog N` measures the gRPC catalogue instead (`catalog_load`).
//!
//! `verbund-bench` (src/main.rs) runs tiers and prints a table; the `smoke` tier runs inside
//! `make test` (tests/smoke.rs) and asserts correctness only, never timings.

pub mod audit_log;
pub mod catalog_load;
pub mod load;
pub mod process;
pub mod report;
pub mod run;

pub use report::Report;
pub use run::{Options, Tier, run_tier};
