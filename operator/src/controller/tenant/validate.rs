//! What the schema cannot check about a Tenant (pure).

use super::read::Observed;
use crate::api::tenant::Tenant;
use crate::controller::error::SpecError;
use crate::domain::tenancy::{self, RESERVED_NAMESPACES};

/// Namespaces that are reserved or belong to another tenant, a route another tenant holds, and
/// a quota that does not parse.
pub fn validate(tenant: &Tenant, observed: &Observed) -> Result<(), SpecError> {
    if let Some(reserved) = tenant
        .spec
        .namespaces
        .iter()
        .find(|ns| RESERVED_NAMESPACES.contains(&ns.as_str()))
    {
        return Err(SpecError::ReservedNamespace {
            namespace: reserved.clone(),
        });
    }
    if let Some((namespace, owner)) = observed.claimed_by_others.first() {
        return Err(SpecError::NamespaceOwnedByOtherTenant {
            namespace: namespace.clone(),
            owner: owner.clone(),
        });
    }
    if let Some(taken) = &observed.route_taken {
        return Err(SpecError::RouteHeldByOtherTenant {
            host: taken.route.host.clone(),
            path_prefix: taken.route.path_prefix.clone(),
            owner: taken.owner.clone(),
        });
    }
    tenancy::tenant_total(&tenant.spec.quota).map_err(SpecError::InvalidQuota)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn reserved_and_foreign_namespaces_are_refused_naming_them() {
        let observed = Observed::default();
        let t = testing::tenant("mibs", &["kube-system"], serde_json::json!({}));
        assert_eq!(
            validate(&t, &observed).map_err(|e| e.category()),
            Err("ReservedNamespace")
        );
        let t = testing::tenant("mibs", &["mibs-portal"], serde_json::json!({}));
        assert_eq!(validate(&t, &observed), Ok(()));
        let claimed = Observed {
            claimed_by_others: vec![("mibs-portal".into(), "uds".into())],
            ..Observed::default()
        };
        let error = validate(&t, &claimed).expect_err("claimed");
        assert!(
            error.to_string().contains("belongs to tenant uds"),
            "{error}"
        );
    }
}
