//! Applying a baseline's admission policy and binding, and reading what the API server made of
//! them.

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::baseline::policy::Compiled;
use crate::controller::Context;
use crate::controller::apply::apply_cached_cluster;
use crate::controller::error::ApiError;

/// What the API server made of the compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Policy and binding stored and type-checked without complaint.
    Active,
    /// Stored; the API server has not type-checked this generation yet.
    Pending,
    /// The API server refused the policy or binding: its message.
    Rejected(String),
    /// Stored, but type checking found problems: the API server's warnings.
    TypeCheckFailed(String),
}

/// Applies policy and binding when they differ from what is stored, and reports what the API
/// server made of them. A refusal is a result (the condition says why), not a retry.
pub async fn apply_policy(ctx: &Context, compiled: Compiled) -> Result<Admission, ApiError> {
    let Compiled { policy, binding } = compiled;
    let stores = &ctx.stores;
    let mut stored = stores
        .admission_policies
        .get(&ObjectRef::new(&policy.name_any()))
        .map(|p| (*p).clone());
    match apply_cached_cluster(&ctx.writer, &stores.admission_policies, policy).await {
        Ok(Some(applied)) => stored = Some(applied),
        Ok(None) => {}
        Err(error) => return refusal(error),
    }
    if let Err(error) = apply_cached_cluster(&ctx.writer, &stores.policy_bindings, binding).await {
        return refusal(error);
    }
    Ok(admission_of(stored))
}

/// The admission state of a stored policy (None: not stored yet).
fn admission_of(stored: Option<ValidatingAdmissionPolicy>) -> Admission {
    let Some(stored) = stored else {
        return Admission::Pending;
    };
    let status = stored.status.unwrap_or_default();
    if status.observed_generation < stored.metadata.generation {
        return Admission::Pending;
    }
    let warnings: Vec<String> = status
        .type_checking
        .and_then(|t| t.expression_warnings)
        .unwrap_or_default()
        .into_iter()
        .map(|w| format!("{}: {}", w.field_ref, w.warning))
        .collect();
    if warnings.is_empty() {
        Admission::Active
    } else {
        Admission::TypeCheckFailed(warnings.join("; "))
    }
}

/// A refused apply (invalid or forbidden object) becomes `Rejected`; anything else is retried.
fn refusal(error: ApiError) -> Result<Admission, ApiError> {
    match error.code() {
        Some(400 | 422) => Ok(Admission::Rejected(error.message)),
        _ => Err(error),
    }
}
