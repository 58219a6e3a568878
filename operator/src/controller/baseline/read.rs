//! What the audit reads: every Pod and workload in the namespaces bound to a baseline.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;

use crate::baseline::audit::NamespaceFacts;
use crate::baseline::workload::KINDS;
use crate::controller::Context;
use crate::controller::error::ApiError;
use crate::meta::BASELINE_LABEL;

/// Lists what the audit checks in every namespace bound to `baseline`.
pub async fn read_namespaces(
    ctx: &Context,
    baseline: &str,
) -> Result<Vec<NamespaceFacts>, ApiError> {
    let client = &ctx.client;
    let bound = Api::<PartialObjectMeta<Namespace>>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&format!("{BASELINE_LABEL}={baseline}")))
        .await
        .map_err(ApiError::with("list bound namespaces"))?;
    let mut facts = Vec::new();
    for namespace in bound.items {
        let name = namespace.name_any();
        let mut objects = Vec::new();
        for (group, version, kind, plural) in KINDS {
            let resource = ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: if group.is_empty() {
                    version.into()
                } else {
                    format!("{group}/{version}")
                },
                kind: kind.into(),
                plural: plural.into(),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &resource);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(ApiError::with(format!("list {plural} in {name}")))?;
            for object in list.items {
                let mut value = serde_json::to_value(&object).unwrap_or_default();
                value["apiVersion"] = resource.api_version.clone().into();
                value["kind"] = kind.into();
                objects.push(value);
            }
        }
        let network_policies = Api::<NetworkPolicy>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .map_err(ApiError::with(format!("list networkpolicies in {name}")))?
            .items;
        facts.push(NamespaceFacts {
            name,
            objects,
            network_policies,
        });
    }
    facts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(facts)
}
