//! Compiles a `SecurityBaseline` into a ValidatingAdmissionPolicy and its binding (pure).
//!
//! The API server evaluates the policy in-process: the pool stays protected while the operator
//! is down. One validation per enabled rule; exceptions become a namespace test in front of
//! the rule's expression, and disappear from the policy when they expire (the controller
//! requeues itself for that moment).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::rules::{self, Scope};
use super::workload::KINDS;
use crate::api::security_baseline::{BaselineException, Enforcement, RuleName, SecurityBaseline};
use crate::meta::{self, BASELINE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MissingOwner};

/// The variables every rule expression may use. `dyn()` keeps the per-kind paths from being
/// type-checked against kinds they do not belong to.
pub const VARIABLES: [(&str, &str); 8] = [
    (
        "podSpec",
        "object.kind == 'Pod' ? dyn(object).spec : (object.kind == 'CronJob' ? dyn(object).spec.jobTemplate.spec.template.spec : dyn(object).spec.template.spec)",
    ),
    (
        "containers",
        "variables.podSpec.containers + (has(variables.podSpec.initContainers) ? variables.podSpec.initContainers : [])",
    ),
    (
        "secured",
        "variables.containers + (has(variables.podSpec.ephemeralContainers) ? variables.podSpec.ephemeralContainers : [])",
    ),
    // Every image the kubelet pulls for the pod: containers' and image volumes'.
    (
        "images",
        "variables.secured.map(c, c.image) + (has(variables.podSpec.volumes) ? variables.podSpec.volumes.filter(v, has(v.image)).map(v, has(v.image.reference) ? v.image.reference : '') : [])",
    ),
    (
        "oldPodSpec",
        "request.operation != 'UPDATE' ? null : (object.kind == 'Pod' ? dyn(oldObject).spec : (object.kind == 'CronJob' ? dyn(oldObject).spec.jobTemplate.spec.template.spec : dyn(oldObject).spec.template.spec))",
    ),
    // An update that leaves the pod spec as it is (labels, finalizers, a ReplicaSet scaled
    // by its Deployment) is not judged again: tightening a baseline must not jam what runs.
    (
        "podSpecUnchanged",
        "request.operation == 'UPDATE' && variables.oldPodSpec == variables.podSpec",
    ),
    // A scale request or an autoscaler: only the replica floor is about it.
    (
        "scaling",
        "(has(request.subResource) && request.subResource == 'scale') || object.kind == 'HorizontalPodAutoscaler'",
    ),
    (
        "specUnchanged",
        "request.operation == 'UPDATE' && dyn(oldObject).spec == dyn(object).spec",
    ),
];

/// The name of the policy and of its binding.
pub fn policy_name(baseline: &str) -> String {
    format!("verbund-{baseline}")
}

/// The admission policy and its binding for one baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub policy: ValidatingAdmissionPolicy,
    pub binding: ValidatingAdmissionPolicyBinding,
}

/// Exceptions in force at `now`.
pub fn active_exceptions(baseline: &SecurityBaseline, now: Timestamp) -> Vec<&BaselineException> {
    baseline
        .spec
        .exceptions
        .iter()
        .filter(|e| e.expires.0 > now)
        .collect()
}

/// The earliest moment an exception in force at `now` ends: the policy must change then.
pub fn next_expiry(baseline: &SecurityBaseline, now: Timestamp) -> Option<Timestamp> {
    active_exceptions(baseline, now)
        .iter()
        .map(|e| e.expires.0)
        .min()
}

/// Namespaces exempt from `rule` at `now`, sorted.
pub fn exempt_namespaces(
    baseline: &SecurityBaseline,
    rule: RuleName,
    now: Timestamp,
) -> Vec<String> {
    let mut namespaces: Vec<String> = active_exceptions(baseline, now)
        .into_iter()
        .filter(|e| e.rules.contains(&rule))
        .map(|e| e.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

fn metadata(baseline: &SecurityBaseline) -> Result<ObjectMeta, MissingOwner> {
    let name = baseline.name_any();
    Ok(ObjectMeta {
        name: Some(policy_name(&name)),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (BASELINE_LABEL.to_string(), name),
        ])),
        owner_references: Some(vec![meta::owner_reference(baseline)?]),
        ..Default::default()
    })
}

/// The validation of one rule: unchanged specs and exempt namespaces pass, the rest must
/// satisfy the rule's expression.
fn validation(rule: &rules::Rule, expression: String, exempt: &[String]) -> Validation {
    let unchanged = match rule.scope {
        Scope::Replicated => "variables.specUnchanged",
        _ => "variables.podSpecUnchanged",
    };
    let expression = if rule.name == RuleName::MinReplicas {
        format!("{unchanged} || ({expression})")
    } else {
        format!("variables.scaling || {unchanged} || ({expression})")
    };
    let expression = if exempt.is_empty() {
        expression
    } else {
        let list: Vec<String> = exempt.iter().map(|n| rules::cel_string(n)).collect();
        format!(
            "request.namespace in [{}] || ({expression})",
            list.join(", ")
        )
    };
    Validation {
        expression,
        message: Some(rules::message(rule)),
        reason: Some("Forbidden".into()),
        message_expression: None,
    }
}

/// The policy and binding for `baseline` at `now`.
pub fn compile(baseline: &SecurityBaseline, now: Timestamp) -> Result<Compiled, MissingOwner> {
    let name = baseline.name_any();
    let spec = &baseline.spec;
    let validations: Vec<Validation> = rules::enabled_rules(&spec.rules)
        .filter(|r| r.scope != Scope::Namespace)
        .filter_map(|r| {
            rules::cel(r.name, &spec.rules)
                .map(|e| validation(r, e, &exempt_namespaces(baseline, r.name, now)))
        })
        .collect();
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (group, _, _, plural) in KINDS {
        groups.entry(group).or_default().push(plural.to_string());
    }
    // Debug containers are added through their own subresource; they obey the rules too.
    groups
        .entry("")
        .or_default()
        .push("pods/ephemeralcontainers".to_string());
    // The replica floor holds through the scale subresource and the tenant's own autoscalers.
    groups.entry("apps").or_default().extend([
        "deployments/scale".to_string(),
        "statefulsets/scale".to_string(),
    ]);
    groups
        .entry("autoscaling")
        .or_default()
        .push("horizontalpodautoscalers".to_string());
    let resource_rules = groups
        .into_iter()
        .map(|(group, resources)| NamedRuleWithOperations {
            api_groups: Some(vec![group.to_string()]),
            api_versions: Some(vec!["*".into()]),
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            resources: Some(resources),
            scope: Some("Namespaced".into()),
            resource_names: None,
        })
        .collect();
    let policy = ValidatingAdmissionPolicy {
        metadata: metadata(baseline)?,
        spec: Some(ValidatingAdmissionPolicySpec {
            // A rule that cannot be evaluated refuses rather than lets through.
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(resource_rules),
                ..Default::default()
            }),
            variables: Some(
                VARIABLES
                    .iter()
                    .map(|(name, expression)| Variable {
                        name: name.to_string(),
                        expression: expression.to_string(),
                    })
                    .collect(),
            ),
            validations: Some(validations),
            ..Default::default()
        }),
        status: None,
    };
    let action = match spec.enforcement {
        Enforcement::Enforce => "Deny",
        Enforcement::Warn => "Warn",
        Enforcement::Audit => "Audit",
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: metadata(baseline)?,
        spec: ValidatingAdmissionPolicyBindingSpec {
            policy_name: policy_name(&name),
            validation_actions: vec![action.into()],
            match_resources: Some(MatchResources {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(BASELINE_LABEL.to_string(), name)])),
                    match_expressions: None,
                }),
                ..Default::default()
            }),
            param_ref: None,
        },
    };
    Ok(Compiled { policy, binding })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_baseline::SecurityBaselineSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn baseline(enforcement: Enforcement, exceptions: Vec<BaselineException>) -> SecurityBaseline {
        let mut b = SecurityBaseline::new(
            "grundschutz-test",
            SecurityBaselineSpec {
                description: String::new(),
                protection_level: crate::api::common::ProtectionLevel::High,
                enforcement,
                pod_security: Default::default(),
                rules: super::super::fixtures::all_rules(),
                exceptions,
            },
        );
        b.metadata.uid = Some("uid-1".into());
        b
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn one_validation_per_enabled_workload_rule_and_the_enforcement_as_action() {
        let compiled = compile(&baseline(Enforcement::Warn, vec![]), at(0)).expect("owner");
        let spec = compiled.policy.spec.expect("spec");
        let validations = spec.validations.expect("validations");
        // 22 rules, one of them (defaultDenyNetwork) about namespaces.
        assert_eq!(validations.len(), 21);
        assert!(validations.iter().all(|v| {
            let m = v.message.as_deref().unwrap_or_default();
            m.contains("BSI IT-Grundschutz")
                && !v.expression.contains("request.namespace")
                && v.expression.contains("Unchanged || (")
                && (v.expression.starts_with("variables.scaling || ")
                    || m.starts_with("minReplicas"))
        }));
        let binding = compiled.binding.spec;
        assert_eq!(binding.validation_actions, vec!["Warn".to_string()]);
        assert_eq!(binding.policy_name, "verbund-grundschutz-test");
    }

    #[test]
    fn an_exception_exempts_its_namespace_from_its_rules_until_it_expires() {
        let exception = BaselineException {
            namespace: "igb-buergerdienste".into(),
            rules: vec![RuleName::ProbesRequired],
            reason: "legacy service without health endpoint".into(),
            expires: Time(at(1000)),
        };
        let b = baseline(Enforcement::Enforce, vec![exception]);
        let before = compile(&b, at(999)).expect("owner");
        let probes = |c: &Compiled| {
            c.policy
                .spec
                .clone()
                .expect("spec")
                .validations
                .expect("v")
                .into_iter()
                .find(|v| {
                    v.message
                        .as_deref()
                        .unwrap_or_default()
                        .starts_with("probesRequired")
                })
                .expect("probes rule")
                .expression
        };
        assert!(probes(&before).starts_with(
            "request.namespace in ['igb-buergerdienste'] || (variables.scaling || variables.podSpecUnchanged || ("
        ));
        assert_eq!(next_expiry(&b, at(999)), Some(at(1000)));
        let after = compile(&b, at(1000)).expect("owner");
        assert!(!probes(&after).contains("request.namespace"));
        assert_eq!(next_expiry(&b, at(1000)), None);
    }
}
