//! Standard conditions: set one without losing when it last changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a controller wants it; `set_condition` turns it into a `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
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
        reason: desired.reason,
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
