//! A baseline's status (pure) and its metrics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::apply::Admission;
use crate::api::security_baseline::{SecurityBaseline, SecurityBaselineStatus};
use crate::baseline::{audit, policy, rules};
use crate::conditions::{Desired as Condition, kind, reason, set_condition};

/// The status of `baseline` after an audit of `namespaces` that found `summary`.
pub fn build(
    baseline: &SecurityBaseline,
    admission: &Admission,
    namespaces: Vec<String>,
    summary: audit::Summary,
    now: Timestamp,
) -> SecurityBaselineStatus {
    let generation = baseline.metadata.generation;
    let previous = baseline.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone();
    let rule_count = rules::enabled_rules(&baseline.spec.rules).count();
    let ready = match admission {
        Admission::Active => Condition::new(
            kind::READY,
            true,
            reason::POLICY_ACTIVE,
            format!(
                "the API server enforces {rule_count} rules ({:?}) on {} namespaces",
                baseline.spec.enforcement,
                namespaces.len()
            ),
        ),
        Admission::Pending => Condition::new(
            kind::READY,
            false,
            reason::POLICY_PENDING,
            "waiting for the API server to type-check the admission policy",
        ),
        Admission::Rejected(message) => Condition::new(
            kind::READY,
            false,
            reason::POLICY_REJECTED,
            format!("the API server refused the admission policy: {message}"),
        ),
        Admission::TypeCheckFailed(message) => Condition::new(
            kind::READY,
            false,
            reason::POLICY_TYPE_CHECK_FAILED,
            format!("the API server found problems in the admission policy: {message}"),
        ),
    };
    set_condition(&mut conditions, ready, generation, now);
    let offenders = summary.checked - summary.compliant;
    let compliant = if offenders == 0 {
        Condition::new(
            kind::COMPLIANT,
            true,
            reason::NO_VIOLATIONS,
            format!("all {} checked objects satisfy every rule", summary.checked),
        )
    } else {
        let rules: Vec<String> = summary
            .violations
            .iter()
            .map(|v| format!("{} {}", rules::rule_key(v.rule), v.count))
            .collect();
        Condition::new(
            kind::COMPLIANT,
            false,
            reason::VIOLATIONS_FOUND,
            format!(
                "{offenders} of {} checked objects violate rules: {}",
                summary.checked,
                rules.join(", ")
            ),
        )
    };
    set_condition(&mut conditions, compliant, generation, now);
    let results_changed = previous.checked != summary.checked
        || previous.compliant != summary.compliant
        || previous.violations != summary.violations
        || previous.top_offenders != summary.top_offenders;
    SecurityBaselineStatus {
        policy: Some(policy::policy_name(&baseline.name_any())),
        namespaces,
        checked: summary.checked,
        compliant: summary.compliant,
        violation_count: offenders,
        violations: summary.violations,
        top_offenders: summary.top_offenders,
        // Moves only when the results do: an unchanged audit writes nothing.
        last_audit: if results_changed || previous.last_audit.is_none() {
            Some(Time(now))
        } else {
            previous.last_audit
        },
        observed_generation: generation,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_baseline::RuleName;
    use crate::baseline::audit::Finding;
    use crate::conditions::{find, is_true};
    use crate::testing;
    use serde_json::json;

    fn finding(name: &str, violations: Vec<RuleName>) -> Finding {
        Finding {
            namespace: "uds-portal".into(),
            kind: "Deployment".into(),
            api_version: "apps/v1".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            violations,
        }
    }

    #[test]
    fn an_active_policy_with_violations_is_ready_but_not_compliant() {
        let b = testing::baseline(
            "grundschutz-hoch",
            json!({ "runAsNonRoot": true, "noHostPath": true }),
        );
        let summary = audit::summarise(&[
            finding("a", vec![]),
            finding("b", vec![RuleName::RunAsNonRoot]),
        ]);
        let status = build(
            &b,
            &Admission::Active,
            vec!["uds-portal".into()],
            summary,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            (status.checked, status.compliant, status.violation_count),
            (2, 1, 1)
        );
        let ready = find(&status.conditions, kind::READY).expect("Ready");
        assert_eq!(
            ready.message,
            "the API server enforces 2 rules (Enforce) on 1 namespaces"
        );
        let compliant = find(&status.conditions, kind::COMPLIANT).expect("Compliant");
        assert_eq!(compliant.reason, reason::VIOLATIONS_FOUND);
        assert!(
            compliant.message.contains("runAsNonRoot 1"),
            "{}",
            compliant.message
        );
        assert_eq!(status.policy.as_deref(), Some("verbund-grundschutz-hoch"));
    }

    #[test]
    fn a_refused_policy_says_why_and_an_unchanged_audit_keeps_its_time() {
        let mut b = testing::baseline("x", json!({}));
        let rejected = Admission::Rejected("spec.validations[0]: invalid".into());
        let first = build(
            &b,
            &rejected,
            vec![],
            audit::Summary::default(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            find(&first.conditions, kind::READY).map(|c| c.reason.as_str()),
            Some(reason::POLICY_REJECTED)
        );
        assert!(is_true(&first.conditions, kind::COMPLIANT));
        b.status = Some(first.clone());
        let later = Timestamp::from_second(60).expect("t");
        let again = build(&b, &rejected, vec![], audit::Summary::default(), later);
        assert_eq!(again, first, "nothing changed, nothing to write");
    }
}
