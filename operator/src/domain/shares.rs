//! How a tenant's quota is split over its namespaces, so that the API server itself enforces it
//! tenant-wide.
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
//!
//! Redraws have hysteresis, so that a pod starting does not rewrite every namespace's quota:
//! the shares are redrawn when a quota is missing, when the hards no longer add up to what the
//! tenant's total gives (the total or the namespaces changed), or when a namespace is running
//! low: its free share is at most half of what an even split of the tenant's headroom would
//! give it. In between, pods come and go within the shares as drawn.

use std::collections::BTreeMap;

use crate::domain::resources::{Resource, Resources};
use crate::domain::tenancy::NamespaceQuota;
use crate::quantity::Amount;

/// The hards the namespaces should have: use plus an equal share of the headroom, the
/// remainder going to the namespaces in spec order.
pub fn fair_hards(total: Resources, namespaces: &[NamespaceQuota]) -> BTreeMap<String, Resources> {
    let mut result: BTreeMap<String, Resources> = namespaces
        .iter()
        .map(|ns| (ns.namespace.clone(), Resources::ZERO))
        .collect();
    let n = namespaces.len() as i128;
    if n == 0 {
        return result;
    }
    for r in Resource::ALL {
        let grain = r.grain();
        let used: Amount = namespaces.iter().map(|ns| ns.used.get(r)).sum();
        let headroom = total.get(r).saturating_sub(used).0 / grain;
        let (share, remainder) = (headroom / n, headroom % n);
        for (i, ns) in namespaces.iter().enumerate() {
            let extra = share + i128::from((i as i128) < remainder);
            let hard = ns.used.get(r) + Amount(extra * grain);
            if let Some(h) = result.get_mut(&ns.namespace) {
                h.set(r, hard);
            }
        }
    }
    result
}

/// Whether the shares must be redrawn (see the module docs): a quota is missing, the hards do
/// not add up to the tenant's total, or a namespace is running low. In a steady pool, and while
/// pods come and go within their shares, nothing is redrawn, so nothing is written.
pub fn needs_redraw(total: Resources, namespaces: &[NamespaceQuota]) -> bool {
    if namespaces.iter().any(|ns| ns.hard.is_none()) {
        return true;
    }
    let fair = fair_hards(total, namespaces);
    let n = namespaces.len() as i128;
    Resource::ALL.into_iter().any(|r| {
        let hards: Amount = namespaces.iter().map(|ns| hard(ns).get(r)).sum();
        let used: Amount = namespaces.iter().map(|ns| ns.used.get(r)).sum();
        let even = total.get(r).saturating_sub(used).0 / n.max(1);
        // A draw leaves less than one grain of the total undrawn (the headroom is cut in
        // whole grains); pods of any size starting within their shares do not change that.
        let undrawn = total.get(r).saturating_sub(hards);
        hards > total.get(r)
            || undrawn.0 >= r.grain()
            || namespaces.iter().any(|ns| {
                let free = hard(ns).get(r).saturating_sub(ns.used.get(r));
                let fair_free = fair
                    .get(&ns.namespace)
                    .map(|f| f.get(r))
                    .unwrap_or_default()
                    .saturating_sub(ns.used.get(r));
                // Running low, and a redraw would give it more.
                free.0 * 2 <= even && fair_free > free
            })
    })
}

fn hard(ns: &NamespaceQuota) -> Resources {
    ns.hard.unwrap_or_default()
}

/// Step one of a redraw: the hard of every namespace, lowered where the fair hard is lower and
/// kept where it is higher (those wait for step two). A missing quota counts as zero.
pub fn lowered_hards(
    current: &[NamespaceQuota],
    fair: &BTreeMap<String, Resources>,
) -> BTreeMap<String, Resources> {
    current
        .iter()
        .map(|ns| {
            let target = fair.get(&ns.namespace).copied().unwrap_or_default();
            (
                ns.namespace.clone(),
                ns.hard.unwrap_or_default().min(target),
            )
        })
        .collect()
}

/// Step two of a redraw, from a fresh read: raises hards towards the fair ones, within the
/// budget `total - Σ max(hard, used)`, in namespace order.
pub fn raised_hards(
    total: Resources,
    fresh: &[NamespaceQuota],
    fair: &BTreeMap<String, Resources>,
) -> BTreeMap<String, Resources> {
    let mut result: BTreeMap<String, Resources> = fresh
        .iter()
        .map(|ns| (ns.namespace.clone(), ns.hard.unwrap_or_default()))
        .collect();
    for r in Resource::ALL {
        let committed: Amount = fresh
            .iter()
            .map(|ns| ns.hard.unwrap_or_default().get(r).max(ns.used.get(r)))
            .sum();
        let mut budget = total.get(r).saturating_sub(committed);
        for ns in fresh {
            let hard = ns.hard.unwrap_or_default().get(r);
            let target = fair
                .get(&ns.namespace)
                .map(|f| f.get(r))
                .unwrap_or_default();
            let granted = target.saturating_sub(hard).min(budget);
            budget = budget.saturating_sub(granted);
            if let Some(h) = result.get_mut(&ns.namespace) {
                h.set(r, hard + granted);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(cpu_millis: i128, pods: i64) -> Resources {
        Resources {
            cpu: Amount(cpu_millis),
            memory: Amount::ZERO,
            pods: Amount::count(pods),
        }
    }

    fn ns(name: &str, hard: Option<Resources>, used: Resources) -> NamespaceQuota {
        NamespaceQuota {
            namespace: name.into(),
            hard,
            used,
        }
    }

    fn total(cpu_millis: i128, pods: i64) -> Resources {
        amounts(cpu_millis, pods)
    }

    #[test]
    fn shares_are_cut_in_whole_default_containers() {
        // 250m of headroom over two namespaces: 100m each, in whole steps of a default
        // container; the odd 50m, which no container could use, stays undrawn.
        let t = total(1050, 10);
        let namespaces = [ns("a", None, amounts(800, 4)), ns("b", None, amounts(0, 0))];
        let fair = fair_hards(t, &namespaces);
        assert_eq!(fair["a"].cpu, Amount(900));
        assert_eq!(fair["b"].cpu, Amount(100));
        let narrow = [ns("a", None, amounts(900, 4)), ns("b", None, amounts(0, 0))];
        let fair = fair_hards(total(1000, 10), &narrow);
        assert_eq!(
            (fair["a"].cpu, fair["b"].cpu),
            (Amount(1000), Amount(0)),
            "the last 100m goes whole to one namespace"
        );
    }

    #[test]
    fn fair_hards_add_up_to_the_total() {
        let t = total(4000, 11);
        let namespaces = [
            ns("a", None, amounts(1000, 2)),
            ns("b", None, amounts(0, 0)),
        ];
        let fair = fair_hards(t, &namespaces);
        assert_eq!(fair["a"].cpu, Amount(2500));
        assert_eq!(fair["b"].cpu, Amount(1500));
        let pods: Amount = fair.values().map(|h| h.pods).sum();
        assert_eq!(pods, Amount::count(11), "whole pods, remainder included");
        assert_eq!(fair["a"].pods, Amount::count(7));
        assert_eq!(fair["b"].pods, Amount::count(4));
    }

    #[test]
    fn a_fresh_tenant_gets_its_quota_split_evenly() {
        let t = total(8000, 40);
        let fresh = [
            ns("a", None, Resources::ZERO),
            ns("b", None, Resources::ZERO),
        ];
        assert!(needs_redraw(t, &fresh));
        let fair = fair_hards(t, &fresh);
        let raised = raised_hards(t, &fresh, &fair);
        assert_eq!(raised["a"].cpu, Amount(4000));
        assert_eq!(raised["b"].pods, Amount::count(20));
    }

    #[test]
    fn pods_coming_and_going_within_the_shares_redraw_nothing() {
        let t = total(8000, 40);
        let current = [
            ns("a", Some(amounts(4500, 22)), amounts(1000, 5)),
            ns("b", Some(amounts(3500, 18)), amounts(0, 1)),
        ];
        assert!(!needs_redraw(t, &current));
        let one_more_pod = [
            ns("a", Some(amounts(4500, 22)), amounts(1500, 6)),
            ns("b", Some(amounts(3500, 18)), amounts(0, 1)),
        ];
        assert!(
            !needs_redraw(t, &one_more_pod),
            "a pod starting within a's share"
        );
        let shrunk = total(6000, 40);
        assert!(needs_redraw(shrunk, &current), "the total changed");
        let missing = [ns("a", None, Resources::ZERO), current[1].clone()];
        assert!(needs_redraw(t, &missing), "a quota is missing");
    }

    #[test]
    fn pods_of_sizes_off_the_grain_redraw_nothing() {
        let t = total(8000, 40);
        let fresh = [
            ns("a", None, Resources::ZERO),
            ns("b", None, Resources::ZERO),
        ];
        let fair = fair_hards(t, &fresh);
        // Ten-millicore pods: the headroom's remainder below a grain changes with each.
        let running = [
            ns("a", Some(fair["a"]), amounts(10, 1)),
            ns("b", Some(fair["b"]), amounts(30, 3)),
        ];
        assert!(!needs_redraw(t, &running));
    }

    #[test]
    fn a_namespace_below_half_its_even_share_gets_a_redraw_and_then_rests() {
        let t = total(8000, 40);
        // b has 200m free of 4000m; an even split of the 4800m headroom would give it 2400m.
        let low = [
            ns("a", Some(amounts(4000, 20)), amounts(1000, 2)),
            ns("b", Some(amounts(4000, 20)), amounts(3800, 10)),
        ];
        assert!(needs_redraw(t, &low));
        let fair = fair_hards(t, &low);
        let redrawn = [
            ns("a", Some(fair["a"]), amounts(1000, 2)),
            ns("b", Some(fair["b"]), amounts(3800, 10)),
        ];
        assert!(!needs_redraw(t, &redrawn), "fair again: nothing to do");
    }

    #[test]
    fn a_namespace_running_low_triggers_a_redraw_that_never_exceeds_the_total() {
        let t = total(8000, 40);
        // a has used 3.6 of its 4 cores; b uses nothing.
        let current = [
            ns("a", Some(amounts(4000, 20)), amounts(3600, 7)),
            ns("b", Some(amounts(4000, 20)), amounts(0, 0)),
        ];
        assert!(needs_redraw(t, &current));
        let fair = fair_hards(t, &current);
        assert_eq!(fair["a"].cpu, Amount(3600 + 2200));
        assert_eq!(fair["b"].cpu, Amount(2200));

        let lowered = lowered_hards(&current, &fair);
        assert_eq!(lowered["b"].cpu, Amount(2200));
        assert_eq!(lowered["a"].cpu, Amount(4000), "a waits for step two");

        // Between the steps, a pod of 1 core is admitted in b (within its lowered hard).
        let fresh = [
            ns("a", Some(lowered["a"]), amounts(3600, 7)),
            ns("b", Some(lowered["b"]), amounts(1000, 1)),
        ];
        let raised = raised_hards(t, &fresh, &fair);
        let sum: Amount = raised.values().map(|h| h.cpu).sum();
        assert!(
            sum <= Amount(8000),
            "hards add up to at most the total: {sum:?}"
        );
        assert_eq!(raised["a"].cpu, Amount(5800));
    }

    #[test]
    fn step_two_grants_nothing_beyond_what_is_really_free() {
        let t = total(4000, 10);
        // b was lowered to 1000 but already uses 2000 (admitted before the lowering).
        let fresh = [
            ns("a", Some(amounts(1000, 5)), amounts(1000, 1)),
            ns("b", Some(amounts(1000, 5)), amounts(2000, 1)),
        ];
        let fair: BTreeMap<String, Resources> = [
            ("a".to_string(), amounts(3000, 5)),
            ("b".to_string(), amounts(1000, 5)),
        ]
        .into();
        let raised = raised_hards(t, &fresh, &fair);
        // committed = max(1000,1000) + max(1000,2000) = 3000: only 1000 left for a.
        assert_eq!(raised["a"].cpu, Amount(2000));
        let committed = raised["a"].cpu.max(Amount(1000)) + raised["b"].cpu.max(Amount(2000));
        assert!(committed <= Amount(4000));
    }

    #[test]
    fn a_shrunk_total_lowers_the_hards() {
        let t = total(2000, 10);
        let current = [
            ns("a", Some(amounts(4000, 5)), Resources::ZERO),
            ns("b", Some(amounts(4000, 5)), Resources::ZERO),
        ];
        assert!(needs_redraw(t, &current));
        let lowered = lowered_hards(&current, &fair_hards(t, &current));
        assert_eq!(lowered["a"].cpu, Amount(1000));
        assert_eq!(lowered["b"].cpu, Amount(1000));
    }
}
