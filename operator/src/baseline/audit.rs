//! The audit: checks what runs in a baseline's namespaces against its rules (pure), and turns
//! the findings into the baseline's status and per-namespace PolicyReports.
//!
//! Every Pod and pod template is checked once, where it is declared: objects made by another
//! workload (a Deployment's ReplicaSets and their pods, a CronJob's Jobs) are reported through
//! their owner, so a violation counts once and names what someone has to fix.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::policy::exempt_namespaces;
use super::rules::{self, Scope, WorkloadFacts};
use super::workload::{derived, workload_of};
use crate::api::security_baseline::{Offender, RuleName, RuleViolations, SecurityBaseline};

/// How many offenders the status lists.
pub const TOP_OFFENDERS: usize = 10;

/// One Pod or workload someone declared, as the audit checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub uid: String,
    pub facts: WorkloadFacts,
}

impl Audited {
    /// A Pod or workload as the API server serves it; None when another workload made it (it
    /// is audited through its owner) or it has no readable pod spec.
    pub fn from_json(object: &Value) -> Option<Audited> {
        if derived(object) {
            return None;
        }
        let workload = workload_of(object)?;
        Some(Audited {
            kind: workload.kind.clone(),
            api_version: text(&object["apiVersion"]),
            name: text(&object["metadata"]["name"]),
            uid: text(&object["metadata"]["uid"]),
            facts: rules::facts(&workload.as_workload()),
        })
    }
}

/// What the audit knows of one bound namespace.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFacts {
    pub name: String,
    /// Pods and workloads declared there.
    pub objects: Vec<Audited>,
    /// Its NetworkPolicies deny all ingress and egress by default.
    pub default_deny: bool,
}

/// One checked object and the rules it violates (none: compliant).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub namespace: String,
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub uid: String,
    pub violations: Vec<RuleName>,
}

/// Whether `policy` denies all ingress and all egress of its namespace by default: it selects
/// every pod and allows nothing in that direction.
pub fn default_denies(policy: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = policy.spec.as_ref() else {
        return (false, false);
    };
    let selects_all = spec.pod_selector.as_ref().is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    });
    if !selects_all {
        return (false, false);
    }
    let denies =
        |kind: &str, empty: bool| empty && spec.policy_types.iter().flatten().any(|t| t == kind);
    (
        denies("Ingress", spec.ingress.as_ref().is_none_or(Vec::is_empty)),
        denies("Egress", spec.egress.as_ref().is_none_or(Vec::is_empty)),
    )
}

/// True when the namespace's NetworkPolicies deny all ingress and egress by default: policies
/// selecting every pod, with no rules, together covering both directions.
pub fn has_default_deny(policies: &[NetworkPolicy]) -> bool {
    let denies: Vec<(bool, bool)> = policies.iter().map(default_denies).collect();
    denies.iter().any(|d| d.0) && denies.iter().any(|d| d.1)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// Checks every namespace's objects against `baseline` at `now` (exceptions in force are
/// honoured). Findings are sorted by namespace, kind and name.
pub fn audit(
    baseline: &SecurityBaseline,
    namespaces: &[NamespaceFacts],
    now: Timestamp,
) -> Vec<Finding> {
    let rules = &baseline.spec.rules;
    let exempt = |namespace: &str, rule: RuleName| {
        exempt_namespaces(baseline, rule, now)
            .iter()
            .any(|n| n == namespace)
    };
    let mut findings = Vec::new();
    for facts in namespaces {
        let namespace_rules: Vec<RuleName> = rules::enabled_rules(rules)
            .filter(|r| r.scope == Scope::Namespace)
            .map(|r| r.name)
            .collect();
        if !namespace_rules.is_empty() {
            let violations = namespace_rules
                .into_iter()
                .filter(|r| *r != RuleName::DefaultDenyNetwork || !facts.default_deny)
                .filter(|r| !exempt(&facts.name, *r))
                .collect();
            findings.push(Finding {
                namespace: facts.name.clone(),
                kind: "Namespace".into(),
                api_version: "v1".into(),
                name: facts.name.clone(),
                uid: String::new(),
                violations,
            });
        }
        for object in &facts.objects {
            let violations = rules::violations_of(rules, &object.facts)
                .into_iter()
                .filter(|r| !exempt(&facts.name, *r))
                .collect();
            findings.push(Finding {
                namespace: facts.name.clone(),
                kind: object.kind.clone(),
                api_version: object.api_version.clone(),
                name: object.name.clone(),
                uid: object.uid.clone(),
                violations,
            });
        }
    }
    findings.sort();
    findings
}

/// The figures the status shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub checked: i32,
    pub compliant: i32,
    pub violations: Vec<RuleViolations>,
    pub top_offenders: Vec<Offender>,
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub fn summarise(findings: &[Finding]) -> Summary {
    let mut per_rule: BTreeMap<RuleName, usize> = BTreeMap::new();
    for finding in findings {
        for rule in &finding.violations {
            *per_rule.entry(*rule).or_default() += 1;
        }
    }
    let violations = rules::CATALOGUE
        .iter()
        .filter_map(|r| {
            per_rule.get(&r.name).map(|n| RuleViolations {
                rule: r.name,
                bsi: r.bsi.iter().map(|s| s.to_string()).collect(),
                count: count(*n),
            })
        })
        .collect();
    let mut offenders: Vec<&Finding> = findings
        .iter()
        .filter(|f| !f.violations.is_empty())
        .collect();
    // Most violations first; then by place and name, so the list is stable.
    offenders.sort_by(|a, b| {
        b.violations
            .len()
            .cmp(&a.violations.len())
            .then_with(|| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)))
    });
    Summary {
        checked: count(findings.len()),
        compliant: count(findings.iter().filter(|f| f.violations.is_empty()).count()),
        violations,
        top_offenders: offenders
            .into_iter()
            .take(TOP_OFFENDERS)
            .map(|f| Offender {
                namespace: f.namespace.clone(),
                kind: f.kind.clone(),
                name: f.name.clone(),
                rules: f.violations.clone(),
            })
            .collect(),
    }
}

/// What a Warning event on an offending object says.
pub fn event_note(baseline: &str, violations: &[RuleName]) -> String {
    let rules: Vec<String> = violations
        .iter()
        .map(|r| {
            let rule = rules::rule(*r);
            format!("{} ({})", rules::rule_key(*r), rule.bsi.join(", "))
        })
        .collect();
    format!(
        "violates security baseline {baseline}: {}",
        rules.join(", ")
    )
}

/// The name of the PolicyReport Verbund keeps in each bound namespace.
pub const REPORT_NAME: &str = "verbund-security-baseline";

/// The `wgpolicyk8s.io/v1alpha2` PolicyReport of one namespace: a `fail` result per violated
/// rule and object; `summary.pass` counts the rule checks that passed.
pub fn policy_report(baseline: &SecurityBaseline, namespace: &str, findings: &[Finding]) -> Value {
    let name = kube::ResourceExt::name_any(baseline);
    let enabled: Vec<&rules::Rule> = rules::enabled_rules(&baseline.spec.rules).collect();
    let mut results = Vec::new();
    let mut pass = 0usize;
    for finding in findings.iter().filter(|f| f.namespace == namespace) {
        let applicable = enabled
            .iter()
            .filter(|r| (r.scope == Scope::Namespace) == (finding.kind == "Namespace"))
            .count();
        pass += applicable.saturating_sub(finding.violations.len());
        for rule in &finding.violations {
            let entry = rules::rule(*rule);
            let mut resource = json!({
                "apiVersion": finding.api_version,
                "kind": finding.kind,
                "name": finding.name,
            });
            if finding.kind != "Namespace" {
                resource["namespace"] = json!(finding.namespace);
                resource["uid"] = json!(finding.uid);
            }
            results.push(json!({
                "policy": name,
                "rule": rules::rule_key(*rule),
                "result": "fail",
                "severity": "high",
                "category": "BSI IT-Grundschutz",
                "source": "verbund",
                "scored": true,
                "message": rules::message(entry),
                "properties": {"bsi": entry.bsi.join(", ")},
                "resources": [resource],
            }));
        }
    }
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": REPORT_NAME, "namespace": namespace},
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": namespace},
        "summary": {"pass": pass, "fail": results.len(), "warn": 0, "error": 0, "skip": 0},
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_baseline::{BaselineException, SecurityBaselineSpec};
    use crate::baseline::fixtures;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn baseline(exceptions: Vec<BaselineException>) -> SecurityBaseline {
        SecurityBaseline::new(
            "grundschutz-hoch",
            SecurityBaselineSpec {
                description: String::new(),
                protection_level: crate::api::common::ProtectionLevel::High,
                enforcement: Default::default(),
                pod_security: Default::default(),
                rules: fixtures::all_rules(),
                exceptions,
            },
        )
    }

    fn deny_all() -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        }))
        .expect("policy")
    }

    fn facts(objects: Vec<Value>, deny: bool) -> NamespaceFacts {
        NamespaceFacts {
            name: "uds-portal".into(),
            objects: objects.iter().filter_map(Audited::from_json).collect(),
            default_deny: deny && has_default_deny(&[deny_all()]),
        }
    }

    #[test]
    fn counts_each_violation_once_at_the_object_that_declares_it() {
        let mut pod_of_deployment = fixtures::breaking(RuleName::RunAsNonRoot, "Pod").object;
        pod_of_deployment["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "u", "controller": true}]);
        let objects = vec![
            fixtures::breaking(RuleName::RunAsNonRoot, "Deployment").object,
            pod_of_deployment,
            fixtures::breaking(RuleName::NoHostPath, "Pod").object,
            fixtures::compliant()[0].object.clone(),
        ];
        let findings = audit(
            &baseline(vec![]),
            &[facts(objects, false)],
            Timestamp::UNIX_EPOCH,
        );
        let summary = summarise(&findings);
        // Namespace + 3 objects (the derived pod is reported through its owner).
        assert_eq!(summary.checked, 4);
        assert_eq!(summary.compliant, 1);
        let counts: Vec<(RuleName, i32)> = summary
            .violations
            .iter()
            .map(|v| (v.rule, v.count))
            .collect();
        assert_eq!(
            counts,
            vec![
                (RuleName::RunAsNonRoot, 1),
                (RuleName::NoHostPath, 1),
                (RuleName::AllowedVolumeTypes, 1),
                (RuleName::DefaultDenyNetwork, 1)
            ]
        );
        assert_eq!(summary.violations[0].bsi, vec!["SYS.1.6.A17".to_string()]);
    }

    #[test]
    fn an_exception_hides_its_rule_in_its_namespace_until_it_expires() {
        let exception = BaselineException {
            namespace: "uds-portal".into(),
            rules: vec![RuleName::NoHostPath, RuleName::AllowedVolumeTypes],
            reason: "node log shipper, replaced in Q1".into(),
            expires: Time(Timestamp::from_second(100).expect("time")),
        };
        let objects = vec![fixtures::breaking(RuleName::NoHostPath, "Pod").object];
        let b = baseline(vec![exception]);
        let during = audit(
            &b,
            &[facts(objects.clone(), true)],
            Timestamp::from_second(99).expect("t"),
        );
        assert!(during.iter().all(|f| f.violations.is_empty()), "{during:?}");
        let after = audit(
            &b,
            &[facts(objects, true)],
            Timestamp::from_second(100).expect("t"),
        );
        assert_eq!(
            summarise(&after).violations.len(),
            2,
            "hostPath, a volume type"
        );
    }

    #[test]
    fn the_policy_report_lists_each_failed_rule_with_its_object() {
        let objects = vec![fixtures::breaking(RuleName::ProbesRequired, "Deployment").object];
        let b = baseline(vec![]);
        let findings = audit(&b, &[facts(objects, true)], Timestamp::UNIX_EPOCH);
        let report = policy_report(&b, "uds-portal", &findings);
        assert_eq!(report["summary"]["fail"], 1);
        // 21 workload rules less the failed one, plus the namespace rule that passed.
        assert_eq!(report["summary"]["pass"], 21);
        assert_eq!(report["results"][0]["rule"], "probesRequired");
        assert_eq!(report["results"][0]["resources"][0]["kind"], "Deployment");
        assert_eq!(
            report["results"][0]["properties"]["bsi"],
            "APP.4.4.A11, SYS.1.6.A3"
        );
    }
}
