//! The tenant's quota split over its namespaces, kept by a two-step redraw (see
//! `domain::shares` for the arithmetic and why it never lets the sum exceed the total).
//!
//! Each namespace's ResourceQuota carries the hards Verbund intends in an annotation, so that
//! an edit of `spec.hard` by someone else is taken back to them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use super::build;
use crate::api::tenant::Tenant;
use crate::controller::Context;
use crate::controller::apply::cached;
use crate::controller::error::{ApiError, Error, SpecError};
use crate::domain::resources::{Resource as PoolResource, Resources};
use crate::domain::shares;
use crate::domain::tenancy::{self, NamespaceQuota, QUOTA_NAME};
use crate::meta::{self, MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL};
use crate::quantity::Amount;

/// Annotation on a tenant namespace's ResourceQuota: the hards Verbund intends.
pub const SHARE_ANNOTATION: &str = "verbund.saarland.de/tenant-share";

/// The share annotation's value: `requests.cpu=<milli>,requests.memory=<milli>,pods=<milli>`.
pub fn format_share(share: Resources) -> String {
    PoolResource::ALL
        .iter()
        .map(|r| format!("{}={}", r.quota_key(), share.get(*r).0))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a share annotation; None when it is missing a resource or malformed.
pub fn parse_share(text: &str) -> Option<Resources> {
    let mut share = Resources::ZERO;
    let mut seen = 0;
    for pair in text.split(',') {
        let (key, value) = pair.split_once('=')?;
        let resource = PoolResource::ALL
            .into_iter()
            .find(|r| r.quota_key() == key)?;
        share.set(resource, Amount(value.parse().ok()?));
        seen += 1;
    }
    (seen == PoolResource::ALL.len()).then_some(share)
}

/// A cached quota as the redraw sees it: its hards as Verbund intends them (from the share
/// annotation, in place of `spec.hard` where someone edited it).
fn intended(namespace: &str, stored: Option<&ResourceQuota>) -> NamespaceQuota {
    let actual = tenancy::namespace_quota(namespace, stored);
    let share = stored
        .and_then(|q| q.annotations().get(SHARE_ANNOTATION))
        .and_then(|text| parse_share(text));
    NamespaceQuota {
        hard: share.or(actual.hard),
        ..actual
    }
}

/// Keeps each namespace's ResourceQuota at its share of the tenant's quota.
pub async fn reconcile_quotas(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    let total = tenancy::tenant_total(&tenant.spec.quota).map_err(SpecError::InvalidQuota)?;
    let stored: Vec<Option<Arc<ResourceQuota>>> = tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| cached(&ctx.stores.quotas, ns, QUOTA_NAME))
        .collect();
    let targets = targets(tenant, total, &stored);
    let lowered = lower(tenant, &stored, &targets, ctx).await?;
    let wants_more = lowered.iter().any(|(ns, now)| {
        let target = targets[ns];
        PoolResource::ALL
            .iter()
            .any(|r| target.get(*r) > now.get(*r))
    });
    if wants_more || stored.iter().any(Option::is_none) {
        raise(tenant, total, &targets, ctx).await?;
    }
    Ok(())
}

/// The hards each namespace should end with: the fair ones when a redraw is due, else what
/// Verbund intended last time.
fn targets(
    tenant: &Tenant,
    total: Resources,
    stored: &[Option<Arc<ResourceQuota>>],
) -> BTreeMap<String, Resources> {
    let current: Vec<NamespaceQuota> = tenant
        .spec
        .namespaces
        .iter()
        .zip(stored)
        .map(|(ns, q)| intended(ns, q.as_deref()))
        .collect();
    if shares::needs_redraw(total, &current) {
        shares::fair_hards(total, &current)
    } else {
        current
            .iter()
            .map(|ns| (ns.namespace.clone(), ns.hard.unwrap_or_default()))
            .collect()
    }
}

/// Step one: lowers what goes down (only quotas that exist; new ones start in step two), and
/// takes back anyone else's edit. Returns every namespace's hard after it.
async fn lower(
    tenant: &Tenant,
    stored: &[Option<Arc<ResourceQuota>>],
    targets: &BTreeMap<String, Resources>,
    ctx: &Context,
) -> Result<BTreeMap<String, Resources>, Error> {
    let actual: Vec<NamespaceQuota> = tenant
        .spec
        .namespaces
        .iter()
        .zip(stored)
        .map(|(ns, q)| tenancy::namespace_quota(ns, q.as_deref()))
        .collect();
    let lowered = shares::lowered_hards(&actual, targets);
    for (now, quota) in actual.iter().zip(stored) {
        let Some(quota) = quota else { continue };
        let ns = &now.namespace;
        // Someone else's edit is taken back here: lowered to the share, or kept low until step
        // two. The quota is cached whole, so a different hard is seen, not guessed from times.
        if Some(lowered[ns]) != now.hard {
            write_quota(tenant, ns, lowered[ns], targets[ns], None, ctx).await?;
        } else {
            // The same CPU, memory and pods: written only when the rest of the quota changed
            // (storage, object counts, from the tenant's spec) or someone else wrote it.
            let stored = Some(quota.meta());
            write_quota(tenant, ns, lowered[ns], targets[ns], stored, ctx).await?;
        }
    }
    Ok(lowered)
}

/// Step two: raises what goes up, within what is really free, from a fresh read.
async fn raise(
    tenant: &Tenant,
    total: Resources,
    targets: &BTreeMap<String, Resources>,
    ctx: &Context,
) -> Result<(), Error> {
    let fresh_by_ns = fresh_quotas(tenant, ctx).await?;
    let fresh: Vec<NamespaceQuota> = tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| tenancy::namespace_quota(ns, fresh_by_ns.get(ns)))
        .collect();
    let raised = shares::raised_hards(total, &fresh, targets);
    for now in &fresh {
        let ns = &now.namespace;
        let stored = fresh_by_ns.get(ns);
        if stored.is_none() || Some(raised[ns]) != now.hard {
            write_quota(tenant, ns, raised[ns], targets[ns], None, ctx).await?;
        }
    }
    Ok(())
}

/// The tenant's quotas as the API server holds them now (not the cache: step two must see
/// what step one wrote and what was admitted since).
async fn fresh_quotas(
    tenant: &Tenant,
    ctx: &Context,
) -> Result<BTreeMap<String, ResourceQuota>, ApiError> {
    let api: Api<ResourceQuota> = Api::all(ctx.client.clone());
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={}",
        tenant.name_any()
    );
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(ApiError::with("list tenant quotas"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|q| q.name_any() == QUOTA_NAME)
        .filter_map(|q| Some((q.namespace()?, q)))
        .collect())
}

/// Applies one namespace's quota with `hards`, remembering `share` as what Verbund intends;
/// when `stored` is given, only if it differs from that (or someone else wrote it since).
async fn write_quota(
    tenant: &Tenant,
    namespace: &str,
    hards: Resources,
    share: Resources,
    stored: Option<&kube::api::ObjectMeta>,
    ctx: &Context,
) -> Result<(), Error> {
    let mut quota = build::quota(tenant, namespace, hards)?;
    quota
        .annotations_mut()
        .insert(SHARE_ANNOTATION.into(), format_share(share));
    let api = Api::<ResourceQuota>::namespaced(ctx.client.clone(), namespace);
    match stored {
        Some(stored) => {
            ctx.writer
                .apply_if_changed(&api, quota, Some(stored))
                .await?;
        }
        // No stored state to compare with: the caller knows the hards must change (or were
        // edited by someone else, perhaps within the same second as Verbund's last write).
        None => {
            meta::stamp(&mut quota);
            ctx.writer.apply(&api, &quota).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    #[test]
    fn the_share_annotation_round_trips_and_refuses_partial_values() {
        let share = Resources {
            cpu: Amount(4000),
            memory: Amount(1 << 40),
            pods: Amount::count(20),
        };
        assert_eq!(parse_share(&format_share(share)), Some(share));
        assert_eq!(parse_share("requests.cpu=1"), None);
        assert_eq!(parse_share("nonsense"), None);
    }

    #[test]
    fn an_edited_hard_counts_as_what_verbund_intended() {
        let mut q = testing::quota(
            "a",
            json!({ "requests.cpu": "100", "requests.memory": "1Gi", "pods": "5" }),
            json!({}),
        );
        let share = Resources {
            cpu: Amount(4000),
            memory: Amount::parse("1Gi").expect("q"),
            pods: Amount::count(5),
        };
        q.annotations_mut()
            .insert(SHARE_ANNOTATION.into(), format_share(share));
        assert_eq!(intended("a", Some(&q)).hard, Some(share));
        assert_eq!(intended("b", None).hard, None);
    }
}
