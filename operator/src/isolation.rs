//! Tenant isolation inside the API server (pure): one ValidatingAdmissionPolicy for the pool,
//! with the Tenant as its parameter, and one binding per tenant matching its namespaces. It
//! refuses what would let a tenant admin reach past their tenant with the rights Verbund gives
//! them: Services that open the tenant to the outside or hijack traffic, Ingresses and
//! PortalService exposures on hosts and paths the tenant does not hold (`status.routes`),
//! Ingress annotations that steer the shared gateway, and service account token Secrets that
//! never expire. It holds while the operator is down; each refusal names its rule and BSI
//! IT-Grundschutz requirement.
//!
//! The pod rules (images, users, tokens in pods) are the baselines' (`baseline::rules`).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ParamKind, ParamRef, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};

use crate::api::tenant::Tenant;
use crate::baseline::rules::cel_string;
use crate::domain::sites::ZONE_LABEL;
use crate::meta::{
    self, MANAGED_BY, MANAGED_BY_LABEL, MissingOwner, PART_OF, PART_OF_LABEL, TENANT_LABEL,
};

/// The pool-wide policy's name.
pub const POLICY_NAME: &str = "verbund-tenant-isolation";

/// Ingress annotations a tenant may set: TLS redirects, body size, timeouts and rate limits
/// of its own routes. Everything else (mirror targets, auth URLs, snippets, rewrites to other
/// hosts) could steer the shared gateway past another tenant's isolation.
pub const ALLOWED_INGRESS_ANNOTATIONS: [&str; 10] = [
    "nginx.ingress.kubernetes.io/ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/proxy-body-size",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
    "nginx.ingress.kubernetes.io/limit-rps",
    "nginx.ingress.kubernetes.io/limit-connections",
    "cert-manager.io/cluster-issuer",
    "cert-manager.io/issuer",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Verbund's own annotations (the desired-state hash on every child): no gateway reads them.
pub const VERBUND_ANNOTATIONS: &str = "verbund.saarland.de/";

/// One isolation rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The name refusals start with (camelCase).
    pub name: &'static str,
    /// BSI IT-Grundschutz requirements (edition 2023) it implements.
    pub bsi: &'static [&'static str],
    /// What is refused and what to do instead.
    pub violation: &'static str,
    /// The CEL expression that holds when the object keeps the rule.
    pub check: fn() -> String,
    /// A CEL string expression naming what is wrong in this object, said before the
    /// violation (None: the violation alone).
    pub detail: Option<fn() -> String>,
}

/// Every isolation rule, in the policy's order.
pub const CATALOGUE: [Rule; 9] = [
    Rule {
        name: "serviceTypeClusterIP",
        bsi: &["APP.4.4.A7", "APP.4.4.A18"],
        violation: "a tenant's Service must be of type ClusterIP: NodePort, LoadBalancer and ExternalName Services reach past the tenant's network isolation; publish through a PortalService exposure or an Ingress on the tenant's routes",
        check: service_type_cluster_ip,
        detail: None,
    },
    Rule {
        name: "noExternalIPs",
        bsi: &["APP.4.4.A7", "APP.4.4.A18"],
        violation: "a Service may not set spec.externalIPs: they capture traffic meant for other addresses (CVE-2020-8554)",
        check: no_external_ips,
        detail: None,
    },
    Rule {
        name: "ingressWithinRoutes",
        bsi: &["APP.4.4.A1", "APP.4.4.A7"],
        violation: "every Ingress rule needs a host and Prefix or Exact paths within the routes the Tenant holds (kubectl get tenant -o jsonpath='{.status.routes}'); TLS hosts too; no default backend",
        check: ingress_within_routes,
        detail: None,
    },
    Rule {
        name: "ingressAnnotationsAllowed",
        bsi: &["APP.4.4.A1", "APP.4.4.A7"],
        violation: "an Ingress annotation is not on the allow-list (TLS redirects, body size, timeouts, rate limits, cert-manager issuers): others could steer the shared gateway",
        check: ingress_annotations_allowed,
        detail: Some(annotations_not_allowed),
    },
    Rule {
        name: "exposureWithinRoutes",
        bsi: &["APP.4.4.A1", "APP.4.4.A7"],
        violation: "spec.exposure.host and spec.exposure.path must lie within the routes the Tenant holds (kubectl get tenant -o jsonpath='{.status.routes}')",
        check: exposure_within_routes,
        detail: None,
    },
    Rule {
        name: "noServiceAccountTokenSecrets",
        bsi: &["APP.4.4.A9"],
        violation: "a Secret of type kubernetes.io/service-account-token is a token that never expires: use short-lived projected tokens where the baseline allows them",
        check: no_token_secrets,
        detail: None,
    },
    Rule {
        name: "placementWithinSites",
        bsi: &["APP.4.4.A14", "APP.4.4.A15"],
        violation: "a pod in a tenant namespace must run only at sites the tenant may use that are certified for its protection level (label verbund.saarland.de/protection-level, else the tenant's maxProtectionLevel): require topology.kubernetes.io/zone In those sites' zones (kubectl get tenant -o jsonpath='{.status.sites}') by nodeSelector or in every required nodeAffinity term; spec.nodeName is not allowed",
        check: placement_within_sites,
        detail: Some(zones_for_level),
    },
    Rule {
        name: "affinityWithinTenant",
        bsi: &["APP.4.4.A15"],
        violation: "pod affinity and anti-affinity terms may name only the tenant's own namespaces, and no namespaceSelector: placing pods next to another tenant's reveals and risks them",
        check: affinity_within_tenant,
        detail: None,
    },
    Rule {
        name: "priorityClassAllowed",
        bsi: &["APP.4.4.A15", "SYS.1.6.A15"],
        violation: "spec.priorityClassName must be one the Tenant's spec.priorityClasses offers (set by the pool's administrators), or none: a higher priority would preempt other tenants' pods",
        check: priority_class_allowed,
        detail: None,
    },
];

/// The message of a refusal: rule, what is wrong, BSI requirements.
pub fn message(rule: &Rule) -> String {
    format!(
        "{}: {} (BSI IT-Grundschutz {})",
        rule.name,
        rule.violation,
        rule.bsi.join(", ")
    )
}

/// CEL: `host` and `path` (expressions) lie in one of the tenant's routes, outside the
/// prefixes other tenants hold inside them (`domain::routes::allows`).
fn within_routes(host: &str, path: &str) -> String {
    let under = |prefix: &str| {
        format!("({prefix} == '/' || {path} == {prefix} || {path}.startsWith({prefix} + '/'))")
    };
    format!(
        "variables.routes.exists(r, r.host == {host} && {} && !(has(r.except) && r.except.exists(e, {})))",
        under("r.pathPrefix"),
        under("e")
    )
}

/// CEL: the annotation key `k` may be set on a tenant's Ingress.
fn annotation_allowed() -> String {
    let allowed: Vec<String> = ALLOWED_INGRESS_ANNOTATIONS
        .iter()
        .map(|a| cel_string(a))
        .collect();
    format!(
        "(k in [{}] || k.startsWith({}))",
        allowed.join(", "),
        cel_string(VERBUND_ANNOTATIONS)
    )
}

/// CEL: the pod (template) runs only in `variables.zones`: a nodeSelector on the zone, or
/// every required node affinity term narrowed to those zones; no nodeName.
fn placed_within_zones() -> String {
    let zone = cel_string(ZONE_LABEL);
    let pod = "variables.podSpec";
    format!(
        "(!has({pod}.nodeName) || {pod}.nodeName == '') && ((has({pod}.nodeSelector) && {zone} in {pod}.nodeSelector && {pod}.nodeSelector[{zone}] in variables.zones) || (has({pod}.affinity) && has({pod}.affinity.nodeAffinity) && has({pod}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution) && {pod}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.all(t, has(t.matchExpressions) && t.matchExpressions.exists(e, e.key == {zone} && e.operator == 'In' && has(e.values) && e.values.all(v, v in variables.zones)))))"
    )
}

/// CEL: every pod affinity and anti-affinity term (required or preferred) stays in the
/// tenant's namespaces.
fn affinity_terms_within_tenant() -> String {
    let pod = "variables.podSpec";
    let within = "(!has(t.namespaceSelector) && (!has(t.namespaces) || t.namespaces.all(n, n in params.spec.namespaces)))";
    let terms = |kind: &str| {
        format!(
            "(!has({pod}.affinity.{kind}) || ((!has({pod}.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution) || {pod}.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution.all(t, {within})) && (!has({pod}.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution) || {pod}.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution.map(w, w.podAffinityTerm).all(t, {within}))))"
        )
    };
    format!(
        "!has({pod}.affinity) || ({} && {})",
        terms("podAffinity"),
        terms("podAntiAffinity")
    )
}

/// CEL: an expression about the pod spec holds for Pods and workloads, and for an update
/// that leaves the pod spec as it was (what already runs is not jammed).
fn for_pods(expression: String) -> String {
    format!("variables.podSpec == null || variables.podSpecUnchanged || ({expression})")
}

fn service_type_cluster_ip() -> String {
    "object.kind != 'Service' || !has(dyn(object).spec.type) || dyn(object).spec.type == 'ClusterIP'".to_string()
}

fn no_external_ips() -> String {
    "object.kind != 'Service' || !has(dyn(object).spec.externalIPs) || size(dyn(object).spec.externalIPs) == 0".to_string()
}

fn ingress_within_routes() -> String {
    format!(
        "object.kind != 'Ingress' || (!has(dyn(object).spec.defaultBackend) && has(dyn(object).spec.rules) && dyn(object).spec.rules.all(rule, has(rule.host) && has(rule.http) && rule.http.paths.all(p, has(p.path) && p.pathType in ['Prefix', 'Exact'] && {})) && (!has(dyn(object).spec.tls) || dyn(object).spec.tls.all(t, !has(t.hosts) || t.hosts.all(h, variables.routes.exists(r, r.host == h)))))",
        within_routes("rule.host", "p.path")
    )
}

fn ingress_annotations_allowed() -> String {
    format!(
        "object.kind != 'Ingress' || !has(object.metadata.annotations) || object.metadata.annotations.all(k, {})",
        annotation_allowed()
    )
}

/// Which annotations are off the allow-list.
fn annotations_not_allowed() -> String {
    format!(
        "'metadata.annotations ' + object.metadata.annotations.filter(k, !{}).join(', ') + ' not allowed'",
        annotation_allowed()
    )
}

fn exposure_within_routes() -> String {
    format!(
        "object.kind != 'PortalService' || !has(dyn(object).spec.exposure) || {}",
        within_routes(
            "dyn(object).spec.exposure.host",
            "(has(dyn(object).spec.exposure.path) ? dyn(object).spec.exposure.path : '/')"
        )
    )
}

fn no_token_secrets() -> String {
    "object.kind != 'Secret' || !has(dyn(object).type) || dyn(object).type != 'kubernetes.io/service-account-token'".to_string()
}

fn placement_within_sites() -> String {
    for_pods(placed_within_zones())
}

/// Which zones would do, for the pod's protection level.
fn zones_for_level() -> String {
    "'protection level ' + variables.level + ' may run in the zones [' + variables.zones.join(', ') + ']'".to_string()
}

fn affinity_within_tenant() -> String {
    for_pods(affinity_terms_within_tenant())
}

fn priority_class_allowed() -> String {
    for_pods("!has(variables.podSpec.priorityClassName) || variables.podSpec.priorityClassName == '' || (has(params.spec.priorityClasses) && variables.podSpec.priorityClassName in params.spec.priorityClasses)".to_string())
}

/// Kinds with a pod template at `spec.template` (CronJobs nest theirs in the job template).
const TEMPLATED: &str = "['Deployment', 'StatefulSet', 'ReplicaSet', 'DaemonSet', 'Job']";

/// The policy's variables: the routes the tenant holds; the pod spec of a Pod or workload
/// (null for other kinds) and its labels; whether an update leaves it unchanged; the zones
/// of the sites the tenant may use that are certified for the pod's protection level.
fn variables() -> Vec<Variable> {
    let spec_of = |object: &str| {
        format!(
            "{object}.kind == 'Pod' ? dyn({object}).spec : ({object}.kind == 'CronJob' ? dyn({object}).spec.jobTemplate.spec.template.spec : ({object}.kind in {TEMPLATED} ? dyn({object}).spec.template.spec : null))"
        )
    };
    let level = cel_string(meta::PROTECTION_LEVEL_LABEL);
    [
        (
            "routes",
            "has(params.status) && has(params.status.routes) ? params.status.routes : []".to_string(),
        ),
        ("podSpec", spec_of("object")),
        (
            "podLabels",
            format!(
                "object.kind == 'Pod' ? (has(object.metadata.labels) ? object.metadata.labels : {{}}) : (object.kind == 'CronJob' ? (has(dyn(object).spec.jobTemplate.spec.template.metadata) && has(dyn(object).spec.jobTemplate.spec.template.metadata.labels) ? dyn(object).spec.jobTemplate.spec.template.metadata.labels : {{}}) : (object.kind in {TEMPLATED} && has(dyn(object).spec.template.metadata) && has(dyn(object).spec.template.metadata.labels) ? dyn(object).spec.template.metadata.labels : {{}}))"
            ),
        ),
        (
            "podSpecUnchanged",
            format!(
                "request.operation == 'UPDATE' && variables.podSpec != null && ({}) == variables.podSpec",
                spec_of("oldObject")
            ),
        ),
        (
            "rank",
            "{'Normal': 0, 'High': 1, 'VeryHigh': 2}".to_string(),
        ),
        (
            "level",
            format!(
                "{level} in variables.podLabels && variables.podLabels[{level}] in variables.rank ? variables.podLabels[{level}] : (has(params.spec.maxProtectionLevel) ? params.spec.maxProtectionLevel : 'Normal')"
            ),
        ),
        (
            "zones",
            "has(params.status) && has(params.status.sites) ? params.status.sites.filter(s, variables.rank[s.maxProtectionLevel] >= variables.rank[variables.level]).map(s, s.zone) : []".to_string(),
        ),
    ]
    .into_iter()
    .map(|(name, expression)| Variable {
        name: name.into(),
        expression,
    })
    .collect()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (PART_OF_LABEL.to_string(), PART_OF.to_string()),
    ])
}

/// The pool-wide policy. Applied by the operator at start-up; the bindings give it a tenant.
pub fn policy() -> ValidatingAdmissionPolicy {
    let rule = |group: &str, resources: &[&str]| NamedRuleWithOperations {
        api_groups: Some(vec![group.to_string()]),
        api_versions: Some(vec!["*".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        scope: Some("Namespaced".into()),
        resource_names: None,
    };
    let validations = CATALOGUE
        .iter()
        .map(|rule| Validation {
            expression: (rule.check)(),
            message: Some(message(rule)),
            reason: Some("Forbidden".into()),
            message_expression: rule.detail.map(|detail| {
                format!(
                    "{} + {} + {}",
                    cel_string(&format!("{}: ", rule.name)),
                    detail(),
                    cel_string(&format!(
                        ": {} (BSI IT-Grundschutz {})",
                        rule.violation,
                        rule.bsi.join(", ")
                    ))
                )
            }),
        })
        .collect();
    ValidatingAdmissionPolicy {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            param_kind: Some(ParamKind {
                api_version: Some(Tenant::api_version(&()).to_string()),
                kind: Some(Tenant::kind(&()).to_string()),
            }),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![
                    rule("", &["services", "secrets", "pods"]),
                    rule("networking.k8s.io", &["ingresses"]),
                    rule(Tenant::group(&()).as_ref(), &["portalservices"]),
                    rule(
                        "apps",
                        &["deployments", "statefulsets", "replicasets", "daemonsets"],
                    ),
                    rule("batch", &["jobs", "cronjobs"]),
                ]),
                ..Default::default()
            }),
            variables: Some(variables()),
            validations: Some(validations),
            ..Default::default()
        }),
        status: None,
    }
}

/// The binding name for `tenant`.
pub fn binding_name(tenant: &str) -> String {
    format!("verbund-isolation-{tenant}")
}

/// The binding giving the policy `tenant` as its parameter, in the tenant's namespaces. A
/// missing Tenant refuses (it is the parameter); the binding goes with the Tenant.
pub fn binding(tenant: &Tenant) -> Result<ValidatingAdmissionPolicyBinding, MissingOwner> {
    let name = tenant.name_any();
    Ok(ValidatingAdmissionPolicyBinding {
        metadata: ObjectMeta {
            name: Some(binding_name(&name)),
            labels: Some(meta::common_labels(&name)),
            owner_references: Some(vec![meta::owner_reference(tenant)?]),
            ..Default::default()
        },
        spec: ValidatingAdmissionPolicyBindingSpec {
            policy_name: POLICY_NAME.into(),
            param_ref: Some(ParamRef {
                name: Some(name.clone()),
                parameter_not_found_action: Some("Deny".into()),
                ..Default::default()
            }),
            validation_actions: vec!["Deny".into()],
            match_resources: Some(MatchResources {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(TENANT_LABEL.to_string(), name)])),
                    match_expressions: None,
                }),
                ..Default::default()
            }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn one_validation_per_rule_each_naming_it_and_its_bsi_requirement() {
        let policy = policy();
        let validations = policy.spec.and_then(|s| s.validations).unwrap_or_default();
        assert_eq!(validations.len(), CATALOGUE.len());
        for (v, rule) in validations.iter().zip(CATALOGUE) {
            let m = v.message.as_deref().unwrap_or_default();
            assert!(m.starts_with(&format!("{}: ", rule.name)), "{m}");
            assert!(m.contains("BSI IT-Grundschutz APP.4.4.A"), "{m}");
            assert!(
                v.expression.starts_with("variables.podSpec == null")
                    == (rule.name.starts_with("placement")
                        || rule.name.starts_with("affinity")
                        || rule.name.starts_with("priority")),
                "{}",
                rule.name
            );
        }
    }

    #[test]
    fn the_binding_takes_its_tenant_as_parameter_in_its_namespaces_only() {
        let t = testing::tenant("mibs", &["mibs-portal"], serde_json::json!({}));
        let b = binding(&t).expect("owner");
        assert_eq!(b.metadata.name.as_deref(), Some("verbund-isolation-mibs"));
        let param = b.spec.param_ref.expect("param");
        assert_eq!(param.name.as_deref(), Some("mibs"));
        assert_eq!(param.parameter_not_found_action.as_deref(), Some("Deny"));
        let selector = b.spec.match_resources.and_then(|m| m.namespace_selector);
        assert_eq!(
            selector.and_then(|s| s.match_labels),
            Some(BTreeMap::from([(
                TENANT_LABEL.to_string(),
                "mibs".to_string()
            )]))
        );
        assert_eq!(b.spec.validation_actions, vec!["Deny".to_string()]);
    }
}
