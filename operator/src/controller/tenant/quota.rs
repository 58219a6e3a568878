//! Tenant-wide quota, enforced by the API server across all of a tenant's namespaces.
//!
//! Kubernetes enforces a ResourceQuota per namespace only. Verbund gives each of a tenant's
//! namespaces a ResourceQuota whose `hard` is what that namespace uses plus a share of the
//! tenant's remaining headroom:
//!
//! ```text
//! hard(ns) = used(ns) + (total - Σ used) / number of namespaces
//! ```
//!
//! so the hards of all namespaces add up to the tenant's total and the API server itself
//! refuses any pod beyond it, even while the operator is down. Whenever use changes, the
//! shares are redrawn from the current use (debounced, so a burst of pods costs one redraw).
//!
//! Redrawing must never let the sum exceed the total, even for a moment, while pods are being
//! admitted concurrently. So it happens in two steps: first every namespace whose hard goes
//! down is lowered; then, from a fresh read of the quotas, the namespaces whose hard goes up
//! are raised only within the budget `total - Σ max(hard, used)`. A namespace can use at most
//! its hard (the admission plugin checks, and updates `used`, atomically), so that budget is
//! never more than what is really free.
//!
//! The price of a strict, operator-independent limit: near the total, free capacity can sit
//! in one namespace's share while another namespace is refused, until the next redraw.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::tenant::TenantQuota;
use crate::quantity::{Amount, ParseError};

/// ResourceQuota keys Verbund manages, each with the granularity shares are cut at
/// (millicores for CPU, bytes for memory, whole pods).
pub const RESOURCES: [(&str, i128); 3] = [
    ("requests.cpu", 1),
    ("requests.memory", 1000),
    ("pods", 1000),
];

/// Per-resource amounts, keyed by ResourceQuota key.
pub type Amounts = BTreeMap<&'static str, Amount>;

/// What one namespace's quota says now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceQuota {
    pub namespace: String,
    /// The current `spec.hard`; missing resources (or a missing quota) count as zero.
    pub hard: Amounts,
    /// The current `status.used`.
    pub used: Amounts,
}

/// The tenant's total as amounts.
pub fn tenant_total(quota: &TenantQuota) -> Result<Amounts, ParseError> {
    Ok([
        ("requests.cpu", Amount::of(&quota.cpu)?),
        ("requests.memory", Amount::of(&quota.memory)?),
        ("pods", Amount::count(i64::from(quota.pods))),
    ]
    .into())
}

/// Reads hard and used of a stored ResourceQuota. Resources it does not list (or an absent
/// quota) are left out; unparsable values count as zero.
pub fn namespace_quota(namespace: &str, quota: Option<&ResourceQuota>) -> NamespaceQuota {
    let pick = |map: Option<&BTreeMap<String, Quantity>>| -> Amounts {
        RESOURCES
            .iter()
            .filter_map(|(key, _)| {
                let quantity = map?.get(*key)?;
                Some((*key, Amount::of(quantity).unwrap_or_default()))
            })
            .collect()
    };
    NamespaceQuota {
        namespace: namespace.to_string(),
        hard: pick(
            quota
                .and_then(|q| q.spec.as_ref())
                .and_then(|s| s.hard.as_ref()),
        ),
        used: pick(
            quota
                .and_then(|q| q.status.as_ref())
                .and_then(|s| s.used.as_ref()),
        ),
    }
}

/// The hards the namespaces should have: use plus an equal share of the headroom, the
/// remainder going to the namespaces in spec order.
pub fn fair_hards(total: &Amounts, namespaces: &[NamespaceQuota]) -> BTreeMap<String, Amounts> {
    let mut result: BTreeMap<String, Amounts> = BTreeMap::new();
    let n = namespaces.len() as i128;
    if n == 0 {
        return result;
    }
    for (key, unit) in RESOURCES {
        let total = total.get(key).copied().unwrap_or_default();
        let used: Amount = namespaces
            .iter()
            .map(|ns| ns.used.get(key).copied().unwrap_or_default())
            .sum();
        let headroom_units = total.saturating_sub(used).0 / unit;
        let (share, remainder) = (headroom_units / n, headroom_units % n);
        for (i, ns) in namespaces.iter().enumerate() {
            let extra = share + i128::from((i as i128) < remainder);
            let hard = ns.used.get(key).copied().unwrap_or_default() + Amount(extra * unit);
            result
                .entry(ns.namespace.clone())
                .or_default()
                .insert(key, hard);
        }
    }
    result
}

/// Whether the shares must be redrawn: some namespace's hard is not its fair hard (a quota is
/// missing, use changed, or the total changed). In a steady pool nothing is redrawn, so
/// nothing is written.
pub fn needs_redraw(total: &Amounts, namespaces: &[NamespaceQuota]) -> bool {
    let fair = fair_hards(total, namespaces);
    namespaces
        .iter()
        .any(|ns| fair.get(&ns.namespace) != Some(&ns.hard))
}

/// Step one of a redraw: the hard of every namespace, lowered where the fair hard is lower and
/// kept where it is higher (those wait for step two).
pub fn lowered_hards(
    current: &[NamespaceQuota],
    fair: &BTreeMap<String, Amounts>,
) -> BTreeMap<String, Amounts> {
    current
        .iter()
        .map(|ns| {
            let hards = RESOURCES
                .iter()
                .map(|(key, _)| {
                    let now = ns.hard.get(key).copied().unwrap_or_default();
                    let target = fair
                        .get(&ns.namespace)
                        .and_then(|f| f.get(key))
                        .copied()
                        .unwrap_or_default();
                    (*key, now.min(target))
                })
                .collect();
            (ns.namespace.clone(), hards)
        })
        .collect()
}

/// Step two of a redraw, from a fresh read: raises hards towards the fair ones, within the
/// budget `total - Σ max(hard, used)`, in namespace order.
pub fn raised_hards(
    total: &Amounts,
    fresh: &[NamespaceQuota],
    fair: &BTreeMap<String, Amounts>,
) -> BTreeMap<String, Amounts> {
    let mut result: BTreeMap<String, Amounts> = fresh
        .iter()
        .map(|ns| (ns.namespace.clone(), ns.hard.clone()))
        .collect();
    for (key, _) in RESOURCES {
        let committed: Amount = fresh
            .iter()
            .map(|ns| {
                let hard = ns.hard.get(key).copied().unwrap_or_default();
                hard.max(ns.used.get(key).copied().unwrap_or_default())
            })
            .sum();
        let mut budget = total
            .get(key)
            .copied()
            .unwrap_or_default()
            .saturating_sub(committed);
        for ns in fresh {
            let hard = ns.hard.get(key).copied().unwrap_or_default();
            let target = fair
                .get(&ns.namespace)
                .and_then(|f| f.get(key))
                .copied()
                .unwrap_or_default();
            let wanted = target.saturating_sub(hard);
            let granted = Amount(wanted.0.min(budget.0));
            budget = budget.saturating_sub(granted);
            result
                .entry(ns.namespace.clone())
                .or_default()
                .insert(key, hard + granted);
        }
    }
    result
}

/// The `spec.hard` map of a ResourceQuota for these amounts.
pub fn hard_quantities(amounts: &Amounts) -> BTreeMap<String, Quantity> {
    amounts
        .iter()
        .map(|(key, amount)| (key.to_string(), amount.to_quantity(key)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(cpu_millis: i128, pods: i64) -> Amounts {
        [
            ("requests.cpu", Amount(cpu_millis)),
            ("requests.memory", Amount::ZERO),
            ("pods", Amount::count(pods)),
        ]
        .into()
    }

    fn ns(name: &str, hard: Amounts, used: Amounts) -> NamespaceQuota {
        NamespaceQuota {
            namespace: name.into(),
            hard,
            used,
        }
    }

    fn total(cpu_millis: i128, pods: i64) -> Amounts {
        amounts(cpu_millis, pods)
    }

    #[test]
    fn fair_hards_add_up_to_the_total() {
        let t = total(4000, 11);
        let namespaces = [
            ns("a", Amounts::new(), amounts(1000, 2)),
            ns("b", Amounts::new(), amounts(0, 0)),
        ];
        let fair = fair_hards(&t, &namespaces);
        assert_eq!(fair["a"]["requests.cpu"], Amount(2500));
        assert_eq!(fair["b"]["requests.cpu"], Amount(1500));
        let pods: Amount = fair.values().map(|h| h["pods"]).sum();
        assert_eq!(pods, Amount::count(11), "whole pods, remainder included");
        assert_eq!(fair["a"]["pods"], Amount::count(7));
        assert_eq!(fair["b"]["pods"], Amount::count(4));
    }

    #[test]
    fn a_fresh_tenant_gets_its_quota_split_evenly() {
        let t = total(8000, 40);
        let fresh = [
            ns("a", Amounts::new(), Amounts::new()),
            ns("b", Amounts::new(), Amounts::new()),
        ];
        assert!(needs_redraw(&t, &fresh));
        let fair = fair_hards(&t, &fresh);
        let raised = raised_hards(&t, &fresh, &fair);
        assert_eq!(raised["a"]["requests.cpu"], Amount(4000));
        assert_eq!(raised["b"]["pods"], Amount::count(20));
    }

    #[test]
    fn no_redraw_while_the_shares_are_fair() {
        let t = total(8000, 40);
        let current = [
            ns("a", amounts(4500, 22), amounts(1000, 5)),
            ns("b", amounts(3500, 18), amounts(0, 1)),
        ];
        assert!(!needs_redraw(&t, &current));
        let changed = [
            ns("a", amounts(4500, 22), amounts(1500, 6)),
            ns("b", amounts(3500, 18), amounts(0, 1)),
        ];
        assert!(needs_redraw(&t, &changed), "use changed");
    }

    #[test]
    fn a_namespace_running_low_triggers_a_redraw_that_never_exceeds_the_total() {
        let t = total(8000, 40);
        // a has used 3.5 of its 4 cores; b uses nothing.
        let current = [
            ns("a", amounts(4000, 20), amounts(3500, 7)),
            ns("b", amounts(4000, 20), amounts(0, 0)),
        ];
        assert!(needs_redraw(&t, &current));
        let fair = fair_hards(&t, &current);
        assert_eq!(fair["a"]["requests.cpu"], Amount(3500 + 2250));
        assert_eq!(fair["b"]["requests.cpu"], Amount(2250));

        let lowered = lowered_hards(&current, &fair);
        assert_eq!(lowered["b"]["requests.cpu"], Amount(2250));
        assert_eq!(
            lowered["a"]["requests.cpu"],
            Amount(4000),
            "a waits for step two"
        );

        // Between the steps, a pod of 1 core is admitted in b (within its lowered hard).
        let fresh = [
            ns("a", lowered["a"].clone(), amounts(3500, 7)),
            ns("b", lowered["b"].clone(), amounts(1000, 1)),
        ];
        let raised = raised_hards(&t, &fresh, &fair);
        let sum: Amount = raised.values().map(|h| h["requests.cpu"]).sum();
        assert!(
            sum <= Amount(8000),
            "hards add up to at most the total: {sum:?}"
        );
        assert_eq!(raised["a"]["requests.cpu"], Amount(5750));
    }

    #[test]
    fn step_two_grants_nothing_beyond_what_is_really_free() {
        let t = total(4000, 10);
        // b was lowered to 1000 but already uses 2000 (admitted before the lowering).
        let fresh = [
            ns("a", amounts(1000, 5), amounts(1000, 1)),
            ns("b", amounts(1000, 5), amounts(2000, 1)),
        ];
        let fair: BTreeMap<String, Amounts> = [
            ("a".to_string(), amounts(3000, 5)),
            ("b".to_string(), amounts(1000, 5)),
        ]
        .into();
        let raised = raised_hards(&t, &fresh, &fair);
        // committed = max(1000,1000) + max(1000,2000) = 3000: only 1000 left for a.
        assert_eq!(raised["a"]["requests.cpu"], Amount(2000));
        let committed = raised["a"]["requests.cpu"].max(Amount(1000))
            + raised["b"]["requests.cpu"].max(Amount(2000));
        assert!(committed <= Amount(4000));
    }

    #[test]
    fn a_shrunk_total_lowers_the_hards() {
        let t = total(2000, 10);
        let current = [
            ns("a", amounts(4000, 5), amounts(0, 0)),
            ns("b", amounts(4000, 5), amounts(0, 0)),
        ];
        assert!(needs_redraw(&t, &current));
        let lowered = lowered_hards(&current, &fair_hards(&t, &current));
        assert_eq!(lowered["a"]["requests.cpu"], Amount(1000));
        assert_eq!(lowered["b"]["requests.cpu"], Amount(1000));
    }
}
