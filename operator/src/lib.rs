//! Verbund: the control plane of the Saarland pooled data centre.
//!
//! The binary (`main.rs`) only parses the command line; everything it runs lives here so that
//! the integration tests can start the same operator in-process.

pub mod admin;
pub mod api;
pub mod baseline;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod domain;
pub mod isolation;
pub mod leader;
pub mod meta;
pub mod metrics;
pub mod placement;
pub mod pool_metrics;
pub mod quantity;
pub mod rbac;
pub mod runtime;
pub mod telemetry;
#[cfg(test)]
mod testing;
