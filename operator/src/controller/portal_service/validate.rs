//! What the schema cannot check about a PortalService (pure).

use kube::ResourceExt;

use crate::api::Tenant;
use crate::api::portal_service::PortalService;
use crate::controller::error::SpecError;

/// A service may not need more protection than its tenant may run.
pub fn validate(ps: &PortalService, tenant: &Tenant) -> Result<(), SpecError> {
    if ps.spec.protection_level > tenant.spec.max_protection_level {
        return Err(SpecError::ProtectionAboveTenant {
            level: ps.spec.protection_level,
            tenant: tenant.name_any(),
            max: tenant.spec.max_protection_level,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    #[test]
    fn a_service_above_its_tenants_level_is_refused_naming_both() {
        let tenant = testing::tenant("ego", &["ego"], json!({ "maxProtectionLevel": "Normal" }));
        let ps = testing::portal_service("wahl", "ego", json!({ "protectionLevel": "High" }));
        let error = validate(&ps, &tenant).expect_err("refused");
        assert_eq!(error.category(), "ProtectionAboveTenant");
        assert!(
            error.to_string().contains("spec.protectionLevel High"),
            "{error}"
        );
        let ps = testing::portal_service("wahl", "ego", json!({ "protectionLevel": "Normal" }));
        assert_eq!(validate(&ps, &tenant), Ok(()));
    }
}
