//! Why a reconcile failed, one error type per stage, and what the controller does next.
//!
//! Every variant has a stable PascalCase category: the `reason` label of
//! `verbund_reconcile_errors_total`, the reason of the Warning Event and of the `Ready=False`
//! condition the failure leaves on the object. Its class decides what happens next:
//! - an invalid spec waits for someone to change the object (the condition says what);
//! - a transient failure (API errors, conflicts, throttling, the API server down) is retried
//!   with per-object exponential backoff with jitter, never sooner than `Retry-After`;
//! - an internal error is a bug: logged as such and retried with the same backoff, so an object
//!   is never parked for good by a fault of Verbund's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::api::ProtectionLevel;
use crate::meta::MissingOwner;
use crate::quantity::ParseError;

/// Every category an error can have: the reasons a failed reconcile leaves on its object.
pub const CATEGORIES: [&str; 23] = [
    "NoTenant",
    "ProtectionAboveTenant",
    "ReservedNamespace",
    "NamespaceOwnedByOtherTenant",
    "InvalidQuota",
    "RouteHeldByOtherTenant",
    "MissingOwner",
    "EncodingFailed",
    "AdmissionRefused",
    "QuotaRefused",
    "Forbidden",
    "NotFound",
    "Conflict",
    "NameConflict",
    "Throttled",
    "Refused",
    "ApiServerError",
    "ApiError",
    "DecodeFailed",
    "ApiUnreachable",
    "StatusEncodingFailed",
    "FinalizerFailed",
    "Undecodable",
];

/// How a controller reacts to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The spec cannot work as it is: wait for a change.
    InvalidSpec,
    /// An admission policy refused a child. Usually only a change helps, but a policy's
    /// parameters (the Tenant's sites, a baseline) reach the API server's admission a moment
    /// after Verbund sees them, and no event follows: retry with backoff up to the cap.
    PolicyRefused,
    /// Retry with backoff; the world may change by itself.
    Transient,
    /// A bug in Verbund: log it loudly, retry with backoff.
    Internal,
}

/// validate: what the spec asks for cannot work, given the rest of the pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("namespace {namespace} belongs to no Tenant: list it in a Tenant's spec.namespaces")]
    NoTenant { namespace: String },
    #[error(
        "spec.protectionLevel {level} exceeds what tenant {tenant} may run ({max}); lower it or raise the tenant's maxProtectionLevel"
    )]
    ProtectionAboveTenant {
        level: ProtectionLevel,
        tenant: String,
        max: ProtectionLevel,
    },
    #[error(
        "namespace {namespace} is reserved for the cluster and cannot belong to a tenant; remove it from spec.namespaces"
    )]
    ReservedNamespace { namespace: String },
    #[error(
        "namespace {namespace} belongs to tenant {owner}; choose another name in spec.namespaces"
    )]
    NamespaceOwnedByOtherTenant { namespace: String, owner: String },
    #[error("spec.quota: {0}")]
    InvalidQuota(ParseError),
    #[error(
        "spec.routes: host {host} with pathPrefix {path_prefix} belongs to tenant {owner}; choose another host or a longer prefix"
    )]
    RouteHeldByOtherTenant {
        host: String,
        path_prefix: String,
        owner: String,
    },
}

impl SpecError {
    pub fn category(&self) -> &'static str {
        match self {
            SpecError::NoTenant { .. } => "NoTenant",
            SpecError::ProtectionAboveTenant { .. } => "ProtectionAboveTenant",
            SpecError::ReservedNamespace { .. } => "ReservedNamespace",
            SpecError::NamespaceOwnedByOtherTenant { .. } => "NamespaceOwnedByOtherTenant",
            SpecError::InvalidQuota(_) => "InvalidQuota",
            SpecError::RouteHeldByOtherTenant { .. } => "RouteHeldByOtherTenant",
        }
    }
}

/// build: rendering the desired objects. Pure, so a failure here is a bug.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    MissingOwner(#[from] MissingOwner),
    #[error("cannot encode {what}: {message}")]
    Encoding { what: String, message: String },
}

impl BuildError {
    pub fn category(&self) -> &'static str {
        match self {
            BuildError::MissingOwner(_) => "MissingOwner",
            BuildError::Encoding { .. } => "EncodingFailed",
        }
    }
}

/// apply (and the reads that go to the API server): a request the API server refused or
/// failed. `action` says what was being done, e.g. "apply Deployment ns/name".
#[derive(Debug, thiserror::Error)]
#[error("{action}: {message}")]
pub struct ApiError {
    pub action: String,
    /// The API server's message (or the transport error).
    pub message: String,
    pub source: kube::Error,
}

impl ApiError {
    pub fn new(action: impl Into<String>, source: kube::Error) -> Self {
        let message = match &source {
            kube::Error::Api(status) => status.message.clone(),
            other => other.to_string(),
        };
        Self {
            action: action.into(),
            message,
            source,
        }
    }

    /// Shorthand for `map_err`.
    pub fn with(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiError {
        let action = action.into();
        move |source| ApiError::new(action, source)
    }

    /// The HTTP status code, when the API server answered.
    pub fn code(&self) -> Option<u16> {
        match &self.source {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }

    /// True when the API server answered that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn category(&self) -> &'static str {
        match &self.source {
            kube::Error::Api(status) => match status.code {
                // A policy's `reason` decides the code: Forbidden (403) or Invalid (422).
                403 | 422 if status.message.contains("ValidatingAdmissionPolicy") => {
                    "AdmissionRefused"
                }
                403 if status.message.contains("exceeded quota") => "QuotaRefused",
                403 => "Forbidden",
                404 => "NotFound",
                409 if status.reason == super::apply::NAME_CONFLICT => "NameConflict",
                409 => "Conflict",
                429 => "Throttled",
                400 | 422 => "Refused",
                500..=599 => "ApiServerError",
                _ => "ApiError",
            },
            kube::Error::SerdeError(_) => "DecodeFailed",
            _ => "ApiUnreachable",
        }
    }

    pub fn class(&self) -> Class {
        match self.category() {
            // A baseline or the isolation policy refuses what Verbund would run.
            "AdmissionRefused" => Class::PolicyRefused,
            // The API server's answer did not fit the types: Verbund's bug.
            "DecodeFailed" => Class::Internal,
            _ => Class::Transient,
        }
    }

    /// The API server's `Retry-After` (429 and some 5xx carry it in the Status details).
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.source {
            kube::Error::Api(status) => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            _ => None,
        }
    }
}

/// status: turning the status into JSON (a bug when it fails) or writing it.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot encode the status of {kind} {name}: {message}")]
    Encoding {
        kind: String,
        name: String,
        message: String,
    },
    #[error(transparent)]
    Write(#[from] ApiError),
}

impl StatusError {
    pub fn category(&self) -> &'static str {
        match self {
            StatusError::Encoding { .. } => "StatusEncodingFailed",
            StatusError::Write(e) => e.category(),
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Status(#[from] StatusError),
    /// Adding or removing a finalizer failed (kube's finalizer helper).
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl From<MissingOwner> for Error {
    fn from(e: MissingOwner) -> Self {
        Error::Build(BuildError::MissingOwner(e))
    }
}

impl Error {
    /// The stable PascalCase category: metric label, Event reason and condition reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Spec(e) => e.category(),
            Error::Build(e) => e.category(),
            Error::Api(e) => e.category(),
            Error::Status(e) => e.category(),
            Error::Finalizer(_) => "FinalizerFailed",
        }
    }

    pub fn class(&self) -> Class {
        match self {
            Error::Spec(_) => Class::InvalidSpec,
            Error::Build(_) => Class::Internal,
            Error::Api(e) | Error::Status(StatusError::Write(e)) => e.class(),
            Error::Status(StatusError::Encoding { .. }) => Class::Internal,
            Error::Finalizer(_) => Class::Transient,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api(e) | Error::Status(StatusError::Write(e)) => e.retry_after(),
            _ => None,
        }
    }

    /// The message for conditions and Events: what went wrong, in the API server's words
    /// where it answered.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// A failed reconcile as status shows it: the condition's reason (the error's category) and
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl From<&Error> for Failure {
    fn from(error: &Error) -> Self {
        Failure {
            reason: error.category(),
            message: error.message(),
        }
    }
}

/// First retry after a transient or internal error.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait between retries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The wait before retry number `attempt` (0 = first retry): exponential from `BACKOFF_BASE`,
/// capped at `BACKOFF_CAP`, scaled by `jitter` in [0, 1) into its upper half so that objects
/// failing together spread out; never shorter than `retry_after`.
pub fn backoff_delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exponential = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(BACKOFF_CAP);
    let jittered = exponential.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default())
}

/// What to do after an error of `class`: `None` waits for a change, `Some` retries then.
pub fn retry_after_error(
    class: Class,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    match class {
        Class::InvalidSpec => None,
        Class::PolicyRefused | Class::Transient | Class::Internal => {
            Some(backoff_delay(attempt, retry_after, jitter))
        }
    }
}

/// Failed attempts per object since its last successful reconcile.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts a failure of `key` and returns how many came before it.
    pub fn failed(&self, key: &str) -> u32 {
        let Ok(mut attempts) = self.attempts.lock() else {
            return 0;
        };
        let n = attempts.entry(key.to_string()).or_default();
        let before = *n;
        *n = n.saturating_add(1);
        before
    }

    /// Forgets the failures of `key`: it reconciled.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, message: &str, retry_after: Option<u32>) -> ApiError {
        let mut status = Status::failure(message, "");
        status.code = code;
        if let Some(seconds) = retry_after {
            status.details =
                serde_json::from_value(serde_json::json!({ "retryAfterSeconds": seconds })).ok();
        }
        ApiError::new("apply Service ns/s", kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn api_errors_are_categorised_by_what_the_api_server_said() {
        assert_eq!(api(409, "conflict", None).category(), "Conflict");
        assert_eq!(api(429, "too many", None).category(), "Throttled");
        assert_eq!(
            api(500, "failed to allocate a serviceIP: range is full", None).category(),
            "ApiServerError"
        );
        let refused = api(
            403,
            "ValidatingAdmissionPolicy 'verbund-x' with binding 'verbund-x' denied request",
            None,
        );
        assert_eq!(refused.category(), "AdmissionRefused");
        assert_eq!(refused.class(), Class::PolicyRefused);
        let invalid = api(
            422,
            "ValidatingAdmissionPolicy 'freeze' with binding 'freeze' denied request",
            None,
        );
        assert_eq!(invalid.category(), "AdmissionRefused");
        assert_eq!(api(409, "conflict", None).class(), Class::Transient);
        let error = Error::from(api(500, "range is full", None));
        assert!(
            error.message().contains("range is full"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn every_category_is_listed() {
        let errors = [
            Error::from(SpecError::NoTenant {
                namespace: "a".into(),
            }),
            Error::from(SpecError::ProtectionAboveTenant {
                level: ProtectionLevel::High,
                tenant: "t".into(),
                max: ProtectionLevel::Normal,
            }),
            Error::from(SpecError::ReservedNamespace {
                namespace: "a".into(),
            }),
            Error::from(SpecError::NamespaceOwnedByOtherTenant {
                namespace: "a".into(),
                owner: "b".into(),
            }),
            Error::from(SpecError::InvalidQuota(ParseError("x".into()))),
            Error::from(MissingOwner {
                kind: "Tenant".into(),
                name: "t".into(),
            }),
            Error::from(BuildError::Encoding {
                what: "x".into(),
                message: "y".into(),
            }),
            Error::from(StatusError::Encoding {
                kind: "Site".into(),
                name: "s".into(),
                message: "m".into(),
            }),
            Error::Finalizer("x".into()),
        ];
        let mut categories: Vec<&str> = errors.iter().map(Error::category).collect();
        for (code, message) in [
            (403, "ValidatingAdmissionPolicy"),
            (403, "exceeded quota"),
            (403, ""),
            (404, ""),
            (409, ""),
            (429, ""),
            (422, ""),
            (503, ""),
            (418, ""),
        ] {
            categories.push(api(code, message, None).category());
        }
        for category in categories {
            assert!(
                CATEGORIES.contains(&category),
                "{category} is not in CATEGORIES"
            );
        }
    }

    #[test]
    fn an_invalid_spec_waits_and_everything_else_backs_off() {
        assert_eq!(retry_after_error(Class::InvalidSpec, 3, None, 0.5), None);
        assert_eq!(
            retry_after_error(Class::PolicyRefused, 20, None, 1.0),
            Some(BACKOFF_CAP),
            "a refusal is retried, at most every BACKOFF_CAP: the policy's parameters may lag"
        );
        let internal = Error::from(BuildError::Encoding {
            what: "x".into(),
            message: "y".into(),
        });
        assert_eq!(internal.class(), Class::Internal);
        assert!(
            retry_after_error(internal.class(), 0, None, 0.0).is_some(),
            "a bug is retried, never parked"
        );
    }

    #[test]
    fn the_backoff_grows_exponentially_with_jitter_up_to_the_cap() {
        let first = backoff_delay(0, None, 0.0);
        assert_eq!(first, BACKOFF_BASE / 2);
        assert_eq!(backoff_delay(0, None, 0.999_999).as_millis(), 499);
        assert_eq!(backoff_delay(3, None, 0.0), BACKOFF_BASE * 4);
        assert_eq!(backoff_delay(30, None, 0.999_999).as_secs(), 299);
        assert!(backoff_delay(50, None, 1.0) <= BACKOFF_CAP);
        // Two objects failing together with different jitter retry apart.
        assert_ne!(backoff_delay(4, None, 0.1), backoff_delay(4, None, 0.9));
    }

    #[test]
    fn retry_after_is_honoured() {
        let throttled = api(429, "too many requests", Some(7));
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        let error = Error::from(throttled);
        assert_eq!(
            retry_after_error(error.class(), 0, error.retry_after(), 0.0),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn attempts_count_per_object_and_reset_on_success() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("ps/a"), 0);
        assert_eq!(backoff.failed("ps/a"), 1);
        assert_eq!(backoff.failed("ps/b"), 0);
        backoff.succeeded("ps/a");
        assert_eq!(backoff.failed("ps/a"), 0);
    }
}
