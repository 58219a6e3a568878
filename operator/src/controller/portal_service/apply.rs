//! Writing a portal service's children: each only when it changed.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use kube::api::Api;

use super::build::Desired;
use crate::api::portal_service::PortalService;
use crate::controller::Context;
use crate::controller::apply::{apply_cached, cached};
use crate::controller::error::ApiError;

/// Applies what changed; returns whether anything was written.
pub async fn apply_children(
    ps: &PortalService,
    desired: Desired,
    floor: i32,
    ctx: &Context,
) -> Result<bool, ApiError> {
    let Desired {
        service_account,
        deployment,
        service,
        autoscaler,
        disruption_budget,
        network_policy,
        ingress,
    } = desired;
    let (name, ns) = (ps.name_any(), ps.namespace().unwrap_or_default());
    let (stores, writer) = (&ctx.stores, &ctx.writer);
    let client = &ctx.client;

    // The ServiceAccount first: the Deployment's pods cannot be created without it. The rest
    // together: they do not depend on each other.
    let account = apply_cached(writer, &stores.service_accounts, service_account).await?;
    let deployment = async {
        let Some(deployment) = deployment else {
            return Ok(false);
        };
        // The replica count belongs to the autoscaler: Verbund sends what is stored (raised to
        // the floor), so that a baseline's replica rule holds from the first apply on and the
        // autoscaler's choice is never undone.
        let stored = cached(&stores.deployments, &ns, &name);
        let current = stored.as_ref().and_then(|d| d.replicas);
        let applied = writer
            .apply_if_changed_with(
                &Api::namespaced(client.clone(), &ns),
                deployment,
                stored.as_ref().map(|d| &d.metadata),
                |d: &mut Deployment| d.spec.replicas = Some(current.unwrap_or(floor).max(floor)),
            )
            .await?;
        Ok(applied.is_some())
    };
    let ingress = async {
        let stored = cached(&stores.ingresses, &ns, &name);
        match ingress {
            Some(ingress) => Ok(apply_cached(writer, &stores.ingresses, ingress)
                .await?
                .is_some()),
            None if stored.is_some() => {
                writer
                    .delete(&Api::<Ingress>::namespaced(client.clone(), &ns), &name)
                    .await?;
                Ok(true)
            }
            None => Ok(false),
        }
    };
    let (deployment, service, autoscaler, budget, policy, ingress) = futures::try_join!(
        deployment,
        apply_cached(writer, &stores.services, service),
        apply_cached(writer, &stores.autoscalers, autoscaler),
        apply_cached(writer, &stores.disruption_budgets, disruption_budget),
        apply_cached(writer, &stores.network_policies, network_policy),
        ingress,
    )?;
    Ok(account.is_some()
        || deployment
        || service.is_some()
        || autoscaler.is_some()
        || budget.is_some()
        || policy.is_some()
        || ingress)
}
