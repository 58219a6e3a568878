//! Pod Security Admission as the backstop of a baseline (pure). The API server runs Pod
//! Security before any ValidatingAdmissionPolicy, so a level it enforces refuses a Pod with
//! its own message, which names no Verbund rule and no BSI requirement. Where a baseline
//! enforces rules that cover every check of its Pod Security level, Pod Security only warns
//! and audits at that level and Verbund's policy refuses, naming the rule; otherwise Pod
//! Security enforces the level as before.

use crate::api::security_baseline::{
    BaselineRules, Enforcement, PodSecurityLevel, RuleName, SecurityBaselineSpec,
};

use super::rules::enabled;

/// A check of the Pod Security Standards and the Verbund rules that refuse whatever it
/// refuses (each at least as strict).
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The check's name in the Pod Security Standards.
    pub name: &'static str,
    /// The level that introduces it.
    pub level: PodSecurityLevel,
    /// Verbund's rules that cover it together.
    pub covered_by: &'static [RuleName],
}

/// Every check of the Pod Security Standards (Kubernetes v1.37), `baseline` then `restricted`.
pub const CHECKS: [Check; 17] = [
    check(
        "HostProcess",
        PodSecurityLevel::Baseline,
        &[RuleName::KernelIsolation],
    ),
    check(
        "Host Namespaces",
        PodSecurityLevel::Baseline,
        &[RuleName::NoHostNamespaces],
    ),
    check(
        "Privileged Containers",
        PodSecurityLevel::Baseline,
        &[RuleName::NoPrivilegeEscalation],
    ),
    check(
        "Capabilities",
        PodSecurityLevel::Baseline,
        &[RuleName::DropAllCapabilities],
    ),
    check(
        "HostPath Volumes",
        PodSecurityLevel::Baseline,
        &[RuleName::NoHostPath],
    ),
    check(
        "Host Ports",
        PodSecurityLevel::Baseline,
        &[RuleName::NoHostPorts],
    ),
    check(
        "Host Probes / Lifecycle Hooks",
        PodSecurityLevel::Baseline,
        &[RuleName::NoHostProbes],
    ),
    check(
        "AppArmor",
        PodSecurityLevel::Baseline,
        &[RuleName::KernelIsolation],
    ),
    check(
        "SELinux",
        PodSecurityLevel::Baseline,
        &[RuleName::KernelIsolation],
    ),
    check(
        "/proc Mount Type",
        PodSecurityLevel::Baseline,
        &[RuleName::KernelIsolation],
    ),
    check(
        "Seccomp",
        PodSecurityLevel::Baseline,
        &[RuleName::SeccompRuntimeDefault],
    ),
    check(
        "Sysctls",
        PodSecurityLevel::Baseline,
        &[RuleName::KernelIsolation],
    ),
    check(
        "Volume Types",
        PodSecurityLevel::Restricted,
        &[RuleName::AllowedVolumeTypes, RuleName::NoHostPath],
    ),
    check(
        "Privilege Escalation",
        PodSecurityLevel::Restricted,
        &[RuleName::NoPrivilegeEscalation],
    ),
    check(
        "Running as Non-root",
        PodSecurityLevel::Restricted,
        &[RuleName::RunAsNonRoot],
    ),
    check(
        "Running as Non-root user",
        PodSecurityLevel::Restricted,
        &[RuleName::RunAsNonRoot],
    ),
    check(
        "Capabilities (drop ALL)",
        PodSecurityLevel::Restricted,
        &[RuleName::DropAllCapabilities],
    ),
];

const fn check(
    name: &'static str,
    level: PodSecurityLevel,
    covered_by: &'static [RuleName],
) -> Check {
    Check {
        name,
        level,
        covered_by,
    }
}

/// The checks of `level`: `restricted` includes `baseline`'s.
pub fn checks_of(level: PodSecurityLevel) -> impl Iterator<Item = &'static Check> {
    CHECKS
        .iter()
        .filter(move |c| level == PodSecurityLevel::Restricted || c.level == level)
}

/// Do `rules` refuse everything Pod Security's `level` refuses?
pub fn covers(level: PodSecurityLevel, rules: &BaselineRules) -> bool {
    checks_of(level).all(|c| c.covered_by.iter().all(|r| enabled(*r, rules)))
}

/// The Pod Security labels of a namespace bound to a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    /// `pod-security.kubernetes.io/enforce`.
    pub enforce: &'static str,
    /// `warn` and `audit`: always the baseline's level.
    pub warn: &'static str,
}

fn level_name(level: PodSecurityLevel) -> &'static str {
    match level {
        PodSecurityLevel::Restricted => "restricted",
        PodSecurityLevel::Baseline => "baseline",
    }
}

/// Pod Security for a namespace bound to `baseline`: the baseline's level is warned about and
/// audited always, and enforced unless the baseline's own enforced rules cover it.
pub fn labels(baseline: &SecurityBaselineSpec) -> Labels {
    let level = level_name(baseline.pod_security);
    let verbund_refuses = baseline.enforcement == Enforcement::Enforce
        && covers(baseline.pod_security, &baseline.rules);
    Labels {
        enforce: if verbund_refuses { "privileged" } else { level },
        warn: level,
    }
}

/// Pod Security when the bound baseline does not exist (yet): `restricted`, enforced.
pub const WITHOUT_BASELINE: Labels = Labels {
    enforce: "restricted",
    warn: "restricted",
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::fixtures;

    fn spec(enforcement: Enforcement, rules: BaselineRules) -> SecurityBaselineSpec {
        SecurityBaselineSpec {
            description: String::new(),
            protection_level: Default::default(),
            enforcement,
            pod_security: PodSecurityLevel::Restricted,
            rules,
            exceptions: Vec::new(),
        }
    }

    #[test]
    fn pod_security_backs_off_only_where_verbund_refuses_all_it_would() {
        let all = spec(Enforcement::Enforce, fixtures::all_rules());
        assert_eq!(
            labels(&all),
            Labels {
                enforce: "privileged",
                warn: "restricted"
            }
        );
        let audit_only = spec(Enforcement::Audit, fixtures::all_rules());
        assert_eq!(labels(&audit_only).enforce, "restricted");
        let mut rules = fixtures::all_rules();
        rules.kernel_isolation = false;
        assert_eq!(
            labels(&spec(Enforcement::Enforce, rules.clone())).enforce,
            "restricted",
            "AppArmor, SELinux, sysctls unchecked by Verbund"
        );
        rules.kernel_isolation = true;
        rules.allowed_volume_types = false;
        let mut baseline_level = spec(Enforcement::Enforce, rules);
        assert_eq!(labels(&baseline_level).enforce, "restricted");
        baseline_level.pod_security = PodSecurityLevel::Baseline;
        assert_eq!(
            labels(&baseline_level),
            Labels {
                enforce: "privileged",
                warn: "baseline"
            },
            "volume types are a restricted check"
        );
    }

    #[test]
    fn every_check_is_covered_by_some_rule() {
        assert!(CHECKS.iter().all(|c| !c.covered_by.is_empty()));
        assert_eq!(checks_of(PodSecurityLevel::Baseline).count(), 12);
    }
}
