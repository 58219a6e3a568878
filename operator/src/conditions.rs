//! Standard conditions: the types and reasons Verbund sets, in one place, and a pure
//! `set_condition` that keeps `lastTransitionTime` unless the status flips.
//!
//! When a reconcile fails, the failed condition's reason is the error's category (see
//! `controller::error`); every other reason is one of [`reason`]. The README lists them all.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub mod kind {
    /// Every kind: the object is in the state its spec asks for.
    pub const READY: &str = "Ready";
    /// Site: some of its nodes are not Ready.
    pub const DEGRADED: &str = "Degraded";
    /// Site: at least one of its nodes is Ready; the transition time is when the last was lost
    /// or the first came back (the failover's clock).
    pub const AVAILABLE: &str = "Available";
    /// Site: cordoned by its operator (no new placements, services move away).
    pub const CORDONED: &str = "Cordoned";
    /// Tenant: the tenant uses all of a resource of its quota.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// PortalService: at least one site may run it.
    pub const PLACED: &str = "Placed";
    /// PortalService and SecurityBaseline: what runs satisfies the baseline.
    pub const COMPLIANT: &str = "Compliant";
    /// PortalService: the tenant's quota caps the autoscaler below `spec.replicas.max`.
    pub const SCALING_LIMITED: &str = "ScalingLimited";

    /// Every condition type, for documentation and tests.
    pub const ALL: [&str; 8] = [
        READY,
        DEGRADED,
        AVAILABLE,
        CORDONED,
        QUOTA_EXCEEDED,
        PLACED,
        COMPLIANT,
        SCALING_LIMITED,
    ];
}

/// Condition reasons of a reconcile that went through (failures use the error's category).
pub mod reason {
    // Site
    pub const NODES_READY: &str = "NodesReady";
    pub const NO_READY_NODES: &str = "NoReadyNodes";
    pub const ALL_NODES_READY: &str = "AllNodesReady";
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    /// Ready still True: no Ready node, within the failover grace.
    pub const NODES_LOST: &str = "NodesLost";
    /// No Ready node past the grace: excluded from placement.
    pub const SITE_FAILED: &str = "SiteFailed";
    /// Nodes Ready again after a failure, within the recovery hold.
    pub const RECOVERING: &str = "Recovering";
    pub const CORDONED: &str = "Cordoned";
    pub const NOT_CORDONED: &str = "NotCordoned";
    // Tenant
    pub const RECONCILED: &str = "Reconciled";
    pub const BASELINE_NOT_FOUND: &str = "BaselineNotFound";
    pub const WITHIN_QUOTA: &str = "WithinQuota";
    pub const QUOTA_EXHAUSTED: &str = "QuotaExhausted";
    // PortalService
    pub const AVAILABLE: &str = "Available";
    pub const PODS_NOT_READY: &str = "PodsNotReady";
    pub const PLACED: &str = "Placed";
    pub const NO_ELIGIBLE_SITE: &str = "NoEligibleSite";
    pub const TENANT_QUOTA: &str = "TenantQuota";
    pub const BASELINE_SATISFIED: &str = "BaselineSatisfied";
    pub const BASELINE_VIOLATED: &str = "BaselineViolated";
    // SecurityBaseline
    pub const POLICY_ACTIVE: &str = "PolicyActive";
    pub const POLICY_PENDING: &str = "PolicyPending";
    pub const POLICY_REJECTED: &str = "PolicyRejected";
    pub const POLICY_TYPE_CHECK_FAILED: &str = "PolicyTypeCheckFailed";
    pub const NO_VIOLATIONS: &str = "NoViolations";
    pub const VIOLATIONS_FOUND: &str = "ViolationsFound";

    /// Every reason, for documentation and tests.
    pub const ALL: [&str; 26] = [
        NODES_READY,
        NO_READY_NODES,
        ALL_NODES_READY,
        NODES_NOT_READY,
        NODES_LOST,
        SITE_FAILED,
        RECOVERING,
        CORDONED,
        NOT_CORDONED,
        RECONCILED,
        BASELINE_NOT_FOUND,
        WITHIN_QUOTA,
        QUOTA_EXHAUSTED,
        AVAILABLE,
        PODS_NOT_READY,
        PLACED,
        NO_ELIGIBLE_SITE,
        TENANT_QUOTA,
        BASELINE_SATISFIED,
        BASELINE_VIOLATED,
        POLICY_ACTIVE,
        POLICY_PENDING,
        POLICY_REJECTED,
        POLICY_TYPE_CHECK_FAILED,
        NO_VIOLATIONS,
        VIOLATIONS_FOUND,
    ];
}

/// A condition as a controller wants it; `set_condition` turns it into a `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Puts `desired` into `conditions`, keeping `lastTransitionTime` unless the status flips.
/// `now` is passed in so that the function stays pure and testable.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: Desired,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if desired.status { "True" } else { "False" }.to_string();
    let previous = conditions.iter().position(|c| c.type_ == desired.type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: desired.type_.to_string(),
        status,
        reason: desired.reason.to_string(),
        message: desired.message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// True when the condition of `type_` differs in status, reason or message between `old` and
/// `new`: the moment worth an Event.
pub fn changed(old: &[Condition], new: &[Condition], type_: &str) -> bool {
    let key =
        |c: Option<&Condition>| c.map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    key(find(old, type_)) != key(find(new, type_))
}

/// True when the condition of `type_` is present and False.
pub fn is_false(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "False")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn keeps_the_transition_time_while_the_status_holds() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            Desired::new("Ready", true, "Reconciled", "ok"),
            Some(1),
            at(100),
        );
        set_condition(
            &mut conditions,
            Desired::new("Ready", true, "Reconciled", "still ok"),
            Some(2),
            at(200),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Time(at(100)));
        assert_eq!(conditions[0].message, "still ok");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set_condition(
            &mut conditions,
            Desired::new("Ready", false, "NoNodes", "no ready node"),
            Some(2),
            at(300),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(300)));
        assert_eq!(conditions[0].status, "False");
    }

    #[test]
    fn each_type_appears_once() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            Desired::new("Ready", true, "A", ""),
            None,
            at(1),
        );
        set_condition(
            &mut conditions,
            Desired::new("Degraded", false, "B", ""),
            None,
            at(1),
        );
        set_condition(
            &mut conditions,
            Desired::new("Ready", false, "C", ""),
            None,
            at(2),
        );
        assert_eq!(conditions.len(), 2);
        assert!(!is_true(&conditions, "Ready"));
        assert_eq!(
            find(&conditions, "Degraded").map(|c| c.reason.as_str()),
            Some("B")
        );
    }
}
