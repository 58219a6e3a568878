//! Writing a tenant's children: what changed, and the release of namespaces that left it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::build::{self, Desired, NamespaceChildren};
use crate::api::tenant::{DeletionPolicy, Tenant};
use crate::controller::Context;
use crate::controller::apply::{apply_cached, apply_cached_cluster};
use crate::controller::error::ApiError;
use crate::domain::tenancy::{
    GUARD_RAIL_POLICIES, LIMIT_RANGE_NAME, POLICY_DEFAULT_DENY, QUOTA_NAME, ROLE_BINDING_NAME,
};
use crate::meta::{BASELINE_LABEL, RELEASED_LABEL};

/// Applies every guard rail whose desired state differs from what is stored (or that someone
/// else changed), and removes network policies that are no longer wanted. Returns the admins'
/// RoleBindings, which [`bind_admins`] applies once the quotas are drawn too: nobody is bound
/// to a namespace before its guard rails hold.
pub async fn apply_children(
    tenant: &Tenant,
    desired: Desired,
    ctx: &Context,
) -> Result<Vec<RoleBinding>, ApiError> {
    let Desired {
        isolation,
        namespaces,
    } = desired;
    let stores = &ctx.stores;
    // The isolation policy's binding first: it holds in a namespace as soon as the namespace
    // carries the tenant's label.
    apply_cached_cluster(&ctx.writer, &stores.policy_bindings, isolation).await?;
    let mut bindings = Vec::new();
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
        bindings.push(role_binding);
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
    Ok(bindings)
}

/// Binds the tenant's admins in each namespace: the last step, after namespace labels,
/// limits, network policies and quota.
pub async fn bind_admins(bindings: Vec<RoleBinding>, ctx: &Context) -> Result<(), ApiError> {
    for binding in bindings {
        apply_cached(&ctx.writer, &ctx.stores.role_bindings, binding).await?;
    }
    Ok(())
}

/// A namespace leaves the tenant: `Retain` keeps the namespace with everything in it, removes
/// Verbund's labels, quota, limits, admin binding and the policies that open it, and keeps its
/// default-deny and a label naming the tenant it was released from; `Delete` deletes it.
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
            // The admins go first: nobody acts in it while its guard rails come down.
            writer
                .delete(
                    &Api::<RoleBinding>::namespaced(client.clone(), namespace),
                    ROLE_BINDING_NAME,
                )
                .await?;
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
            let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
            for policy in GUARD_RAIL_POLICIES {
                if policy != POLICY_DEFAULT_DENY {
                    writer.delete(&policies, policy).await?;
                }
            }
            // The workloads stay, so their isolation stays: default-deny without an owner,
            // until an administrator removes it.
            writer
                .apply(
                    &policies,
                    &build::released_default_deny(&tenant.name_any(), namespace),
                )
                .await?;
            // The tenant's labels go; the baseline's and Pod Security's stay, so admission
            // still guards what runs; a label names the tenant it belonged to, so nobody
            // else claims it silently.
            let mut labels: BTreeMap<String, String> = ctx
                .stores
                .namespaces
                .get(&ObjectRef::new(namespace))
                .and_then(|ns| ns.metadata.labels.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| {
                    k == BASELINE_LABEL || k.starts_with("pod-security.kubernetes.io/")
                })
                .collect();
            labels.insert(RELEASED_LABEL.to_string(), tenant.name_any());
            let bare = Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.into()),
                    labels: Some(labels),
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
