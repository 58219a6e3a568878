//! Security baselines: the rule catalogue (BSI IT-Grundschutz IDs, CEL for admission, Rust
//! for audit), the compiler that turns a `SecurityBaseline` into a ValidatingAdmissionPolicy,
//! and the audit of what runs.

pub mod audit;
pub mod fixtures;
pub mod pod_security;
pub mod policy;
pub mod rules;
pub mod workload;
