//! `SecurityBaseline`: a named set of rules derived from BSI IT-Grundschutz, enforced by the
//! API server at admission and checked by continuous audit.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, Conditions, ProtectionLevel};

/// A set of security rules for every workload in the namespaces bound to it (namespaces
/// labelled `verbund.saarland.de/baseline=<name>`). Each rule is traceable to BSI
/// IT-Grundschutz requirements (modules APP.4.4 and SYS.1.6).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "verbund.saarland.de",
    version = "v1alpha1",
    kind = "SecurityBaseline",
    doc = "A set of security rules derived from BSI IT-Grundschutz (APP.4.4, SYS.1.6) for every workload in the namespaces bound to it. Verbund compiles it into a ValidatingAdmissionPolicy that the API server enforces at admission, and audits what runs against it.",
    plural = "securitybaselines",
    shortname = "sbl",
    category = "verbund",
    status = "SecurityBaselineStatus",
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement","description":"What admission does with a violation"}"#,
    printcolumn = r#"{"name":"Protection","type":"string","jsonPath":".spec.protectionLevel","description":"Protection need the baseline is made for"}"#,
    printcolumn = r#"{"name":"Checked","type":"integer","jsonPath":".status.checked","priority":1}"#,
    printcolumn = r#"{"name":"Violations","type":"integer","jsonPath":".status.violationCount","description":"Workloads violating at least one rule"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityBaselineSpec {
    /// What the baseline is for, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    pub description: String,

    /// The protection need (Schutzbedarf) the baseline is made for.
    pub protection_level: ProtectionLevel,

    /// What admission does with a violating object: `Enforce` refuses it, `Warn` admits it
    /// with a warning, `Audit` admits it and records it in the audit log. Audit reports
    /// violations in every mode.
    #[serde(default)]
    pub enforcement: Enforcement,

    /// Pod Security Admission level enforced on bound namespaces.
    #[serde(default)]
    pub pod_security: PodSecurityLevel,

    /// The rules; a rule that is off or absent is not checked.
    #[serde(default)]
    pub rules: BaselineRules,

    /// Time-bounded exceptions: a namespace exempt from some rules, for a stated reason,
    /// until `expires`. After that the rules apply again without anyone acting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exceptions: Vec<BaselineException>,
}

/// What admission does with a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Enforcement {
    /// Refuse the object (validationActions Deny).
    #[default]
    Enforce,
    /// Admit it with a warning to the client (validationActions Warn).
    Warn,
    /// Admit it and annotate the audit event (validationActions Audit).
    Audit,
}

/// Pod Security Admission level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodSecurityLevel {
    /// The `restricted` profile: current pod hardening best practice.
    #[default]
    Restricted,
    /// The `baseline` profile: prevents known privilege escalations.
    Baseline,
}

/// The rules of a baseline. Switches are off unless set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineRules {
    /// Containers must run as a non-root user (SYS.1.6.A17).
    #[serde(default)]
    pub run_as_non_root: bool,
    /// Containers must set `allowPrivilegeEscalation: false` (SYS.1.6.A17).
    #[serde(default)]
    pub no_privilege_escalation: bool,
    /// Containers must drop all Linux capabilities (SYS.1.6.A17).
    #[serde(default)]
    pub drop_all_capabilities: bool,
    /// Containers must have a read-only root file system (SYS.1.6.A23).
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// Pods or containers must use the `RuntimeDefault` seccomp profile (SYS.1.6.A21).
    #[serde(default)]
    pub seccomp_runtime_default: bool,
    /// Containers must declare CPU and memory requests and limits (SYS.1.6.A15).
    #[serde(default)]
    pub resource_limits_required: bool,
    /// Images must come from one of these registries (prefixes, e.g.
    /// "registry.saarland.de/portal"). Empty: any registry (SYS.1.6.A6, A12).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub allowed_registries: Vec<String>,
    /// Images must be pinned by digest (`@sha256:...`) (SYS.1.6.A6, A12).
    #[serde(default)]
    pub image_digest_required: bool,
    /// Images must not use the `latest` tag, nor omit the tag (SYS.1.6.A6, A12).
    #[serde(default)]
    pub latest_tag_forbidden: bool,
    /// Containers must have readiness and liveness probes (APP.4.4.A11, SYS.1.6.A3).
    #[serde(default)]
    pub probes_required: bool,
    /// Pods must not run as the namespace's `default` service account (APP.4.4.A9).
    #[serde(default)]
    pub no_default_service_account: bool,
    /// Pods must set `automountServiceAccountToken: false` (APP.4.4.A9).
    #[serde(default)]
    pub no_service_account_token_automount: bool,
    /// Pods must not share the node's network, PID or IPC namespace (APP.4.4.A4).
    #[serde(default)]
    pub no_host_namespaces: bool,
    /// Pods must not mount node directories (hostPath) (SYS.1.6.A19).
    #[serde(default)]
    pub no_host_path: bool,
    /// Containers must not bind node ports (hostPort) (APP.4.4.A4).
    #[serde(default)]
    pub no_host_ports: bool,
    /// Pods must stay confined by the kernel: no unconfined AppArmor profile, only the
    /// container SELinux types and no SELinux user or role, the default /proc mount, only
    /// namespaced sysctls known to be safe, no Windows host process (SYS.1.6.A17, A21).
    #[serde(default)]
    pub kernel_isolation: bool,
    /// Pods may use only these volume types: configMap, csi, downwardAPI, emptyDir, ephemeral,
    /// image, persistentVolumeClaim, projected, secret (SYS.1.6.A19).
    #[serde(default)]
    pub allowed_volume_types: bool,
    /// Probes and lifecycle hooks must not name a host: the kubelet would connect to it from
    /// the node, past the namespace's network policies (APP.4.4.A7).
    #[serde(default)]
    pub no_host_probes: bool,
    /// Every emptyDir must set a sizeLimit, so a pod cannot fill the node's disk (SYS.1.6.A15).
    #[serde(default)]
    pub empty_dir_size_limit: bool,
    /// Bound namespaces must have a default-deny NetworkPolicy (APP.4.4.A7, A18).
    #[serde(default)]
    pub default_deny_network: bool,
    /// Deployments and StatefulSets must run at least this many replicas (APP.4.4.A19,
    /// SYS.1.6.A25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub min_replicas: Option<i32>,
    /// Deployments and StatefulSets must spread their pods over sites with a topology spread
    /// constraint on `topology.kubernetes.io/zone` (APP.4.4.A19, SYS.1.6.A25).
    #[serde(default)]
    pub spread_across_sites: bool,
}

/// The name of one rule, as in `spec.rules`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RuleName {
    /// `runAsNonRoot`: containers run as a non-root user (SYS.1.6.A17).
    RunAsNonRoot,
    /// `noPrivilegeEscalation`: no privilege escalation, not privileged (SYS.1.6.A17).
    NoPrivilegeEscalation,
    /// `dropAllCapabilities`: all Linux capabilities dropped (SYS.1.6.A17).
    DropAllCapabilities,
    /// `readOnlyRootFilesystem`: read-only root file system (SYS.1.6.A23).
    ReadOnlyRootFilesystem,
    /// `seccompRuntimeDefault`: the RuntimeDefault seccomp profile (SYS.1.6.A21).
    SeccompRuntimeDefault,
    /// `resourceLimitsRequired`: CPU and memory requests and limits (SYS.1.6.A15).
    ResourceLimitsRequired,
    /// `allowedRegistries`: images from the allowed registries only (SYS.1.6.A6, A12).
    AllowedRegistries,
    /// `imageDigestRequired`: images pinned by digest (SYS.1.6.A6, A12).
    ImageDigestRequired,
    /// `latestTagForbidden`: no `latest` tag, no untagged image (SYS.1.6.A6, A12).
    LatestTagForbidden,
    /// `probesRequired`: readiness and liveness probes (APP.4.4.A11, SYS.1.6.A3).
    ProbesRequired,
    /// `noDefaultServiceAccount`: not the namespace's default service account (APP.4.4.A9).
    NoDefaultServiceAccount,
    /// `noServiceAccountTokenAutomount`: no automounted service account token (APP.4.4.A9).
    NoServiceAccountTokenAutomount,
    /// `noHostNamespaces`: no host network, PID or IPC namespace (APP.4.4.A4).
    NoHostNamespaces,
    /// `noHostPath`: no hostPath volumes (SYS.1.6.A19).
    NoHostPath,
    /// `noHostPorts`: no host ports (APP.4.4.A4).
    NoHostPorts,
    /// `kernelIsolation`: AppArmor, SELinux, /proc mount, sysctls, no host process (SYS.1.6.A17, A21).
    KernelIsolation,
    /// `allowedVolumeTypes`: only the restricted volume types (SYS.1.6.A19).
    AllowedVolumeTypes,
    /// `noHostProbes`: probes and lifecycle hooks name no host (APP.4.4.A7).
    NoHostProbes,
    /// `emptyDirSizeLimit`: every emptyDir has a sizeLimit (SYS.1.6.A15).
    EmptyDirSizeLimit,
    /// `defaultDenyNetwork`: a default-deny NetworkPolicy in the namespace (APP.4.4.A7, A18).
    DefaultDenyNetwork,
    /// `minReplicas`: Deployments and StatefulSets run at least this many replicas (APP.4.4.A19, SYS.1.6.A25).
    MinReplicas,
    /// `spreadAcrossSites`: replicated workloads spread over sites (APP.4.4.A19, SYS.1.6.A25).
    SpreadAcrossSites,
}

/// A namespace exempt from some rules until a date.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaselineException {
    /// The exempt namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// The rules it is exempt from.
    #[schemars(length(min = 1, max = 22), extend("x-kubernetes-list-type" = "set"))]
    pub rules: Vec<RuleName>,
    /// Why, for the auditor: what risk is accepted and who decided.
    #[schemars(length(min = 10, max = 512))]
    pub reason: String,
    /// When the exception ends (RFC 3339, e.g. "2027-03-31T23:59:59Z"). Required: every
    /// exception is time-bounded.
    pub expires: Time,
}

/// Observed state of a baseline: admission policy health and audit results.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityBaselineStatus {
    /// Name of the ValidatingAdmissionPolicy compiled from this baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Namespaces bound to the baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Objects checked in the last audit: every Pod and pod template where it is declared
    /// (a Deployment, not its ReplicaSets and pods), and each bound namespace when a
    /// namespace rule is on.
    #[serde(default)]
    pub checked: i32,
    /// Checked objects that satisfied every rule.
    #[serde(default)]
    pub compliant: i32,
    /// Checked objects violating at least one rule.
    #[serde(default)]
    pub violation_count: i32,
    /// Violations per rule, with the BSI requirements the rule implements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<RuleViolations>,
    /// The workloads with the most violations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_offenders: Vec<Offender>,
    /// When an audit last found results different from the one before (an audit that finds
    /// nothing new writes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_audit: Option<Time>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the API server accepted the policy and its binding. `Compliant`: no workload
    /// violates a rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions_schema")]
    pub conditions: Conditions,
}

/// How many workloads violate one rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleViolations {
    /// The rule.
    pub rule: RuleName,
    /// BSI IT-Grundschutz requirement IDs the rule implements, e.g. "SYS.1.6.A17".
    pub bsi: Vec<String>,
    /// Number of violating workloads.
    pub count: i32,
}

/// A workload with violations.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offender {
    /// Namespace of the workload.
    pub namespace: String,
    /// Kind of the workload (Pod, Deployment, ...).
    pub kind: String,
    /// Name of the workload.
    pub name: String,
    /// The rules it violates.
    pub rules: Vec<RuleName>,
}
