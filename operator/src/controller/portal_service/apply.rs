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

pub async fn apply_children(
    ps: &PortalService,
    desired: Desired,
    floor: i32,
    ctx: &Context,
) -> Result<(), ApiError> {
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

    apply_cached(writer, &stores.service_accounts, service_account).await?;
    if let Some(deployment) = deployment {
        // The replica count belongs to the autoscaler: Verbund sends what is stored (raised to
        // the floor), so that a baseline's replica rule holds from the first apply on and the
        // autoscaler's choice is never undone.
        let stored = cached(&stores.deployments, &ns, &name);
        let current = stored.as_ref().and_then(|d| d.spec.replicas);
        writer
            .apply_if_changed_with(
                &Api::namespaced(client.clone(), &ns),
                deployment,
                stored.as_ref().map(|d| &d.metadata),
                |d: &mut Deployment| d.spec.replicas = Some(current.unwrap_or(floor).max(floor)),
            )
            .await?;
    }
    apply_cached(writer, &stores.services, service).await?;
    apply_cached(writer, &stores.autoscalers, autoscaler).await?;
    apply_cached(writer, &stores.disruption_budgets, disruption_budget).await?;
    apply_cached(writer, &stores.network_policies, network_policy).await?;
    let stored = cached(&stores.ingresses, &ns, &name);
    match ingress {
        Some(ingress) => {
            apply_cached(writer, &stores.ingresses, ingress).await?;
        }
        None if stored.is_some() => {
            writer
                .delete(&Api::<Ingress>::namespaced(client.clone(), &ns), &name)
                .await?;
        }
        None => {}
    }
    Ok(())
}
