//! A tenant's status (pure): its namespaces, quota and use, services, and conditions.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;

use super::read::Observed;
use crate::api::tenant::{QuotaStatus, Tenant, TenantStatus};
use crate::conditions::{Desired, kind, reason, set_condition};
use crate::controller::error::Failure;

use crate::domain::tenancy;

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The status of `tenant` given what the caches say, and the failure of this reconcile if any.
pub fn build(
    tenant: &Tenant,
    observed: &Observed,
    failure: Option<&Failure>,
    now: Timestamp,
) -> TenantStatus {
    let generation = tenant.metadata.generation;
    let spec = &tenant.spec;
    let used = tenancy::tenant_used(&observed.quotas);
    let mut conditions = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let ready = match failure {
        Some(failure) => Desired::new(kind::READY, false, failure.reason, failure.message.clone()),
        None if observed.pod_security.is_none() => Desired::new(
            kind::READY,
            false,
            reason::BASELINE_NOT_FOUND,
            format!(
                "SecurityBaseline {} does not exist: the namespaces are labelled for it but no admission policy protects them yet",
                tenancy::baseline_name(tenant)
            ),
        ),
        None => Desired::new(
            kind::READY,
            true,
            reason::RECONCILED,
            format!(
                "{} namespace(s) with quota, default limits, admin rights and network isolation in place",
                spec.namespaces.len()
            ),
        ),
    };
    set_condition(&mut conditions, ready, generation, now);
    let total = tenancy::tenant_total(&spec.quota).unwrap_or_default();
    let exhausted = tenancy::exhausted(total, used);
    let quota_condition = if exhausted.is_empty() {
        Desired::new(
            kind::QUOTA_EXCEEDED,
            false,
            reason::WITHIN_QUOTA,
            "the tenant uses less than its quota of every resource",
        )
    } else {
        Desired::new(
            kind::QUOTA_EXCEEDED,
            true,
            reason::QUOTA_EXHAUSTED,
            format!("fully used: {}", exhausted.join(", ")),
        )
    };
    set_condition(&mut conditions, quota_condition, generation, now);
    TenantStatus {
        routes: observed.routes.clone(),
        sites: observed.sites.clone(),
        namespaces: spec.namespaces.clone(),
        namespace_count: count(spec.namespaces.len()),
        quota: QuotaStatus {
            hard: [
                ("cpu".to_string(), spec.quota.cpu.clone()),
                ("memory".to_string(), spec.quota.memory.clone()),
                ("pods".to_string(), Quantity(spec.quota.pods.to_string())),
            ]
            .into(),
            used: used.by_name(),
        },
        services: count(observed.services),
        observed_generation: generation,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{find, is_true};
    use crate::domain::tenancy::namespace_quota;
    use crate::testing;
    use serde_json::json;

    fn observed(used_cpu: &str) -> Observed {
        let q = testing::quota(
            "a",
            json!({ "requests.cpu": "8", "requests.memory": "16Gi", "pods": "40" }),
            json!({ "requests.cpu": used_cpu, "requests.memory": "1Gi", "pods": "3" }),
        );
        Observed {
            pod_security: Some(crate::baseline::pod_security::WITHOUT_BASELINE),
            quotas: vec![namespace_quota("a", Some(&q)), namespace_quota("b", None)],
            services: 2,
            ..Observed::default()
        }
    }

    #[test]
    fn a_reconciled_tenant_shows_its_quota_use_and_services() {
        let t = testing::tenant("lhs", &["a", "b"], json!({}));
        let status = build(&t, &observed("2"), None, Timestamp::UNIX_EPOCH);
        assert_eq!(status.namespace_count, 2);
        assert_eq!(status.services, 2);
        assert_eq!(status.quota.used["cpu"], Quantity("2".into()));
        assert_eq!(status.quota.used["pods"], Quantity("3".into()));
        assert_eq!(status.quota.hard["memory"], Quantity("16Gi".into()));
        assert!(is_true(&status.conditions, kind::READY));
        assert!(!is_true(&status.conditions, kind::QUOTA_EXCEEDED));
    }

    #[test]
    fn exhaustion_a_missing_baseline_and_a_failure_each_say_so() {
        let t = testing::tenant("lhs", &["a", "b"], json!({}));
        let full = build(&t, &observed("8"), None, Timestamp::UNIX_EPOCH);
        let exceeded = find(&full.conditions, kind::QUOTA_EXCEEDED).expect("condition");
        assert_eq!(
            (exceeded.status.as_str(), exceeded.message.as_str()),
            ("True", "fully used: cpu 8 of 8")
        );
        let no_baseline = Observed {
            pod_security: None,
            ..observed("1")
        };
        let status = build(&t, &no_baseline, None, Timestamp::UNIX_EPOCH);
        assert_eq!(
            find(&status.conditions, kind::READY).map(|c| c.reason.as_str()),
            Some(reason::BASELINE_NOT_FOUND)
        );
        let failure = Failure {
            reason: "ApiServerError",
            message: "apply Namespace a: etcd unavailable".into(),
        };
        let status = build(&t, &observed("1"), Some(&failure), Timestamp::UNIX_EPOCH);
        let ready = find(&status.conditions, kind::READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ApiServerError")
        );
        assert!(ready.message.contains("etcd unavailable"));
    }
}
