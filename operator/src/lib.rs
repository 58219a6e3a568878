//! Verbund: the control plane of the Saarland pooled data centre.
//!
//! The binary (`main.rs`) only parses the command line; everything it runs lives here so that
//! the integration tests can start the same operator in-process.

pub mod admin;
pub mod api;
pub mod cli;
pub mod metrics;
pub mod runtime;
pub mod telemetry;
