//! What the audit reads, all from the caches (no request per namespace): the namespaces bound
//! to a baseline, the Pods and workloads declared there, and whether their network policies
//! deny by default.

use std::collections::{BTreeMap, BTreeSet};

use kube::{Resource, ResourceExt};

use crate::baseline::audit::{Audited, NamespaceFacts};
use crate::baseline::rules::{self, Workload};
use crate::baseline::workload::CachedWorkload;
use crate::cache::Stores;
use crate::meta::BASELINE_LABEL;

/// The namespaces bound to `baseline`, sorted.
pub fn bound_namespaces(stores: &Stores, baseline: &str) -> BTreeSet<String> {
    stores
        .namespaces
        .state()
        .iter()
        .filter(|ns| ns.labels().get(BASELINE_LABEL).map(String::as_str) == Some(baseline))
        .map(|ns| ns.name_any())
        .collect()
}

/// Declared workloads of one kind in `namespaces`, into their namespace's list.
fn collect<K: Resource<DynamicType = ()> + Clone + 'static>(
    store: &kube::runtime::reflector::Store<CachedWorkload<K>>,
    namespaces: &BTreeSet<String>,
    into: &mut BTreeMap<String, Vec<Audited>>,
) {
    for workload in store.state() {
        let (Some(facts), Some(ns)) = (workload.facts.as_ref(), workload.namespace()) else {
            continue;
        };
        if workload.derived || !namespaces.contains(&ns) {
            continue;
        }
        into.entry(ns).or_default().push(Audited {
            kind: K::kind(&()).into_owned(),
            api_version: K::api_version(&()).into_owned(),
            name: workload.name_any(),
            uid: workload.uid().unwrap_or_default(),
            facts: facts.clone(),
        });
    }
}

/// What the audit checks in every namespace bound to `baseline`.
pub fn read_namespaces(stores: &Stores, baseline: &str) -> Vec<NamespaceFacts> {
    let namespaces = bound_namespaces(stores, baseline);
    let mut objects: BTreeMap<String, Vec<Audited>> = BTreeMap::new();
    for pod in stores.pods.state() {
        let (Some(spec), Some(ns)) = (pod.standalone_spec.as_deref(), pod.namespace()) else {
            continue;
        };
        if !namespaces.contains(&ns) {
            continue;
        }
        let workload = Workload {
            kind: "Pod",
            replicas: None,
            pod: spec,
        };
        objects.entry(ns).or_default().push(Audited {
            kind: "Pod".into(),
            api_version: "v1".into(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            facts: rules::facts(&workload),
        });
    }
    collect(&stores.deployments, &namespaces, &mut objects);
    collect(&stores.statefulsets, &namespaces, &mut objects);
    collect(&stores.daemonsets, &namespaces, &mut objects);
    collect(&stores.replicasets, &namespaces, &mut objects);
    collect(&stores.jobs, &namespaces, &mut objects);
    collect(&stores.cronjobs, &namespaces, &mut objects);
    let mut denies: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for policy in stores.audited_policies.state() {
        let Some(ns) = policy.namespace().filter(|ns| namespaces.contains(ns)) else {
            continue;
        };
        let entry = denies.entry(ns).or_default();
        entry.0 |= policy.denies_ingress;
        entry.1 |= policy.denies_egress;
    }
    namespaces
        .into_iter()
        .map(|name| NamespaceFacts {
            objects: objects.remove(&name).unwrap_or_default(),
            default_deny: denies.get(&name).is_some_and(|d| d.0 && d.1),
            name,
        })
        .collect()
}
