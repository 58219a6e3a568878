//! Writing a tenant's children: what changed, and the release of namespaces that left it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::build::{Desired, NamespaceChildren};
use crate::api::tenant::{DeletionPolicy, Tenant};
use crate::controller::Context;
use crate::controller::apply::apply_cached;
use crate::controller::error::ApiError;
use crate::domain::tenancy::{
    GUARD_RAIL_POLICIES, LIMIT_RANGE_NAME, QUOTA_NAME, ROLE_BINDING_NAME,
};

/// Applies every child whose desired state differs from what is stored (or that someone else
/// changed), and removes network policies that are no longer wanted.
pub async fn apply_children(
    tenant: &Tenant,
    desired: Desired,
    ctx: &Context,
) -> Result<(), ApiError> {
    let Desired { namespaces } = desired;
    let stores = &ctx.stores;
    for children in namespaces {
        let NamespaceChildren {
            namespace,
            limit_range,
            role_binding,
            network_policies,
        } = children;
        let ns = namespace.name_any();
        let client = &ctx.client;
        let stored = stores.namespaces.get(&ObjectRef::new(&ns));
        ctx.writer
            .apply_if_changed(
                &Api::<Namespace>::all(client.clone()),
                namespace,
                stored.as_ref().map(|m| &m.metadata),
            )
            .await?;
        apply_cached(&ctx.writer, &stores.limit_ranges, limit_range).await?;
        apply_cached(&ctx.writer, &stores.role_bindings, role_binding).await?;
        let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);

        let mut wanted = BTreeSet::new();
        for policy in network_policies {
            wanted.insert(policy.name_any());
            apply_cached(&ctx.writer, &stores.network_policies, policy).await?;
        }
        let uid = tenant.uid().unwrap_or_default();
        for stale in stores.network_policies.state() {
            let owned = stale.owner_references().iter().any(|o| o.uid == uid);
            if owned
                && stale.namespace().as_deref() == Some(&ns)
                && !wanted.contains(&stale.name_any())
            {
                ctx.writer.delete(&policies, &stale.name_any()).await?;
            }
        }
    }
    Ok(())
}

/// A namespace leaves the tenant: `Retain` removes Verbund's labels and guard rails and keeps
/// the namespace with everything in it; `Delete` deletes it.
pub async fn release_namespace(
    tenant: &Tenant,
    namespace: &str,
    ctx: &Context,
) -> Result<(), ApiError> {
    let writer = &ctx.writer;
    match tenant.spec.deletion_policy {
        DeletionPolicy::Delete => {
            info!(namespace, "deleting namespace (deletionPolicy Delete)");
            writer
                .delete(&Api::<Namespace>::all(ctx.client.clone()), namespace)
                .await?;
        }
        DeletionPolicy::Retain => {
            info!(namespace, "releasing namespace (deletionPolicy Retain)");
            let client = &ctx.client;
            writer
                .delete(
                    &Api::<ResourceQuota>::namespaced(client.clone(), namespace),
                    QUOTA_NAME,
                )
                .await?;
            writer
                .delete(
                    &Api::<LimitRange>::namespaced(client.clone(), namespace),
                    LIMIT_RANGE_NAME,
                )
                .await?;
            writer
                .delete(
                    &Api::<RoleBinding>::namespaced(client.clone(), namespace),
                    ROLE_BINDING_NAME,
                )
                .await?;
            let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
            for policy in GUARD_RAIL_POLICIES {
                writer.delete(&policies, policy).await?;
            }
            // Applying the namespace with no fields removes every label Verbund set on it.
            let bare = Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            writer
                .apply(&Api::<Namespace>::all(client.clone()), &bare)
                .await?;
        }
    }
    writer
        .event(
            tenant,
            EventType::Normal,
            "NamespaceReleased",
            format!(
                "namespace {namespace} left the tenant (deletionPolicy {:?})",
                tenant.spec.deletion_policy
            ),
        )
        .await;
    Ok(())
}
