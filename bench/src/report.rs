//! What one tier measured, as a table and as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::Percentiles;

/// Memory and CPU of one process over a run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cost {
    pub rss_steady_mib: f64,
    pub rss_peak_mib: f64,
    pub cpu_seconds: f64,
}

/// The figures of one tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub tier: String,
    /// Which operator binary was measured.
    pub operator: String,
    pub tenants: usize,
    pub namespaces: usize,
    pub services: usize,
    pub pods_per_service: i32,
    /// W: the API server's writes per second for the operator's object mix and identity.
    pub write_rate: f64,
    /// The operator's writes per service created (audit log).
    pub writes_per_service: f64,
    pub writes_by_kind: BTreeMap<String, u64>,
    /// N × writes per service ÷ W, seconds.
    pub floor_seconds: f64,
    pub converge_seconds: f64,
    pub converge_ratio: f64,
    /// Writes and LISTs while every object is reconciled again with nothing to change.
    pub resync_writes: u64,
    pub resync_lists: u64,
    pub resync_writes_by_kind: BTreeMap<String, u64>,
    /// Writes and LISTs in the first minute after a restart.
    pub restart_writes: u64,
    pub restart_lists: u64,
    pub restart_writes_by_kind: BTreeMap<String, u64>,
    /// Requests the API server throttled (429) over the whole run.
    pub throttled: u64,
    pub change_to_observed: Percentiles,
    pub change_to_ready: Percentiles,
    pub pods_churned: u64,
    /// One audit cycle: the operator's requests (all, LISTs) and the baseline reconciles' time.
    pub audit_requests: u64,
    pub audit_lists: u64,
    /// The audit cycle's requests by verb and resource (watches left out).
    pub audit_requests_by_kind: BTreeMap<String, u64>,
    pub audit_seconds: f64,
    pub operator_cost: Cost,
    pub apiserver_cost: Cost,
    pub etcd_cost: Cost,
    /// What the machine did not allow, if anything.
    pub limits: Vec<String>,
    /// The operator's last warnings and errors, for a run that went wrong.
    pub operator_warnings: Vec<String>,
}

impl Report {
    /// The table the bench prints.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("tier".into(), format!("{} ({})", self.tier, self.operator)),
            (
                "pool".into(),
                format!(
                    "{} tenants, {} namespaces, {} services x {} pods",
                    self.tenants, self.namespaces, self.services, self.pods_per_service
                ),
            ),
            (
                "W (API server writes/s, operator's identity)".into(),
                format!("{:.1}", self.write_rate),
            ),
            (
                "writes per service created".into(),
                format!("{:.2}", self.writes_per_service),
            ),
            (
                "floor N x writes/service / W".into(),
                format!("{:.1} s", self.floor_seconds),
            ),
            (
                "convergence".into(),
                format!(
                    "{:.1} s = {:.2} x floor",
                    self.converge_seconds, self.converge_ratio
                ),
            ),
            (
                "forced resync: writes / LISTs".into(),
                format!("{} / {}", self.resync_writes, self.resync_lists),
            ),
            (
                "after restart: writes / LISTs".into(),
                format!("{} / {}", self.restart_writes, self.restart_lists),
            ),
            (
                "change -> observedGeneration p50/p95/p99".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} s ({} changes, {} pods churned)",
                    self.change_to_observed.p50,
                    self.change_to_observed.p95,
                    self.change_to_observed.p99,
                    self.change_to_observed.samples,
                    self.pods_churned
                ),
            ),
            (
                "change -> Ready p50/p95/p99".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} s",
                    self.change_to_ready.p50, self.change_to_ready.p95, self.change_to_ready.p99
                ),
            ),
            (
                "audit cycle: requests / LISTs / time".into(),
                format!(
                    "{} / {} / {:.2} s",
                    self.audit_requests, self.audit_lists, self.audit_seconds
                ),
            ),
        ];
        for (name, cost) in [
            ("operator", self.operator_cost),
            ("kube-apiserver", self.apiserver_cost),
            ("etcd", self.etcd_cost),
        ] {
            rows.push((
                format!("{name}: RSS steady / peak, CPU"),
                format!(
                    "{:.1} / {:.1} MiB, {:.1} s",
                    cost.rss_steady_mib, cost.rss_peak_mib, cost.cpu_seconds
                ),
            ));
        }
        rows.push(("throttled (429)".into(), self.throttled.to_string()));
        for limit in &self.limits {
            rows.push(("limited".into(), limit.clone()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:width$}  {v}\n"));
        }
        for warning in &self.operator_warnings {
            out.push_str(&format!("operator said: {warning}\n"));
        }
        out.push_str("requests in the audit cycle, by kind:\n");
        for (kind, n) in &self.audit_requests_by_kind {
            out.push_str(&format!("  {kind:50} {n:>8}\n"));
        }
        out.push_str("writes by kind:\n");
        for (kind, n) in &self.writes_by_kind {
            out.push_str(&format!(
                "  {kind:50} {n:>8}  ({:.2} per service)\n",
                *n as f64 / self.services.max(1) as f64
            ));
        }
        out
    }
}
