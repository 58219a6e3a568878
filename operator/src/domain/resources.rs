//! The resources the pool accounts for: CPU, memory and pod slots, as one exact triple.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{Amount, ParseError};

/// One resource of the triple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Cpu,
    Memory,
    Pods,
}

impl Resource {
    /// Every resource, in the order statuses and metrics list them.
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Pods];

    /// The name in statuses, node capacity and metrics: `cpu`, `memory`, `pods`.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Pods => "pods",
        }
    }

    /// The key of a ResourceQuota's `hard` and `used` that counts it.
    pub fn quota_key(self) -> &'static str {
        match self {
            Resource::Cpu => "requests.cpu",
            Resource::Memory => "requests.memory",
            Resource::Pods => "pods",
        }
    }

    /// The unit of the metric value (kube-state-metrics' names): cores, bytes, pods.
    pub fn unit(self) -> &'static str {
        match self {
            Resource::Cpu => "core",
            Resource::Memory => "byte",
            Resource::Pods => "integer",
        }
    }

    /// The granularity quota shares are cut at, in milli-units: the default request of one
    /// container (100m CPU, 128Mi memory, see the tenant's LimitRange) and one pod. Finer shares
    /// would leave every namespace a sliver too small for any pod.
    pub fn grain(self) -> i128 {
        match self {
            Resource::Cpu => 100,
            Resource::Memory => 128 * (1 << 20) * 1000,
            Resource::Pods => 1000,
        }
    }

    /// `amount` in the notation people expect for this resource ("1500m", "16Gi", "12").
    pub fn format(self, amount: Amount) -> Quantity {
        match self {
            Resource::Cpu => amount.to_cpu(),
            Resource::Memory => amount.to_memory(),
            Resource::Pods => amount.to_count(),
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An amount of each resource. Missing values count as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu: Amount,
    pub memory: Amount,
    pub pods: Amount,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu: Amount::ZERO,
        memory: Amount::ZERO,
        pods: Amount::ZERO,
    };

    pub fn get(&self, resource: Resource) -> Amount {
        match resource {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
            Resource::Pods => self.pods,
        }
    }

    pub fn set(&mut self, resource: Resource, amount: Amount) {
        match resource {
            Resource::Cpu => self.cpu = amount,
            Resource::Memory => self.memory = amount,
            Resource::Pods => self.pods = amount,
        }
    }

    /// Applies `f` to each resource.
    pub fn map(self, f: impl Fn(Resource, Amount) -> Amount) -> Resources {
        let mut out = Resources::ZERO;
        for r in Resource::ALL {
            out.set(r, f(r, self.get(r)));
        }
        out
    }

    /// `n` times these resources (one pod's requests times a replica count).
    pub fn times(self, n: i64) -> Resources {
        self.map(|_, a| Amount(a.0 * i128::from(n)))
    }

    /// Per resource, `self - other`, never below zero.
    pub fn saturating_sub(self, other: Resources) -> Resources {
        self.map(|r, a| a.saturating_sub(other.get(r)))
    }

    /// Per resource, the larger of the two.
    pub fn max(self, other: Resources) -> Resources {
        self.map(|r, a| a.max(other.get(r)))
    }

    /// Per resource, the smaller of the two.
    pub fn min(self, other: Resources) -> Resources {
        self.map(|r, a| a.min(other.get(r)))
    }

    /// Reads the resources from a map keyed by `key(resource)` (a node's capacity by name, a
    /// quota's hard by quota key). Missing keys count as zero; a value that is not a quantity
    /// is an error.
    pub fn from_map(
        map: &BTreeMap<String, Quantity>,
        key: impl Fn(Resource) -> &'static str,
    ) -> Result<Resources, ParseError> {
        let mut out = Resources::ZERO;
        for r in Resource::ALL {
            if let Some(q) = map.get(key(r)) {
                out.set(r, Amount::of(q)?);
            }
        }
        Ok(out)
    }

    /// Like [`Resources::from_map`], with unparsable values counted as zero: for maps the API
    /// server wrote (status), which are quantities by construction.
    pub fn from_map_lenient(
        map: &BTreeMap<String, Quantity>,
        key: impl Fn(Resource) -> &'static str,
    ) -> Resources {
        let mut out = Resources::ZERO;
        for r in Resource::ALL {
            if let Some(amount) = map.get(key(r)).and_then(|q| Amount::of(q).ok()) {
                out.set(r, amount);
            }
        }
        out
    }

    /// The resources as a map keyed by `key(resource)`, each in its usual notation.
    pub fn to_map(self, key: impl Fn(Resource) -> &'static str) -> BTreeMap<String, Quantity> {
        Resource::ALL
            .into_iter()
            .map(|r| (key(r).to_string(), r.format(self.get(r))))
            .collect()
    }

    /// Keyed by name (`cpu`, `memory`, `pods`), as statuses show them.
    pub fn by_name(self) -> BTreeMap<String, Quantity> {
        self.to_map(Resource::name)
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        self.map(|r, a| a + other.get(r))
    }
}

impl std::ops::AddAssign for Resources {
    fn add_assign(&mut self, other: Resources) {
        *self = *self + other;
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_maps_by_name_and_by_quota_key() {
        let map: BTreeMap<String, Quantity> = [
            ("requests.cpu".to_string(), Quantity("1500m".into())),
            ("requests.memory".to_string(), Quantity("2Gi".into())),
        ]
        .into();
        let r = Resources::from_map(&map, Resource::quota_key).expect("quantities");
        assert_eq!(r.cpu, Amount(1500));
        assert_eq!(r.pods, Amount::ZERO, "missing counts as zero");
        assert_eq!(r.by_name()["memory"], Quantity("2Gi".into()));
        assert_eq!(r.to_map(Resource::quota_key)["pods"], Quantity("0".into()));
        let bad: BTreeMap<String, Quantity> = [("cpu".to_string(), Quantity("lots".into()))].into();
        assert!(Resources::from_map(&bad, Resource::name).is_err());
        assert_eq!(
            Resources::from_map_lenient(&bad, Resource::name),
            Resources::ZERO
        );
    }

    #[test]
    fn arithmetic_is_per_resource() {
        let pod = Resources {
            cpu: Amount(250),
            memory: Amount(1000),
            pods: Amount::count(1),
        };
        assert_eq!(pod.times(4).pods, Amount::count(4));
        assert_eq!((pod + pod).cpu, Amount(500));
        assert_eq!(pod.saturating_sub(pod.times(2)), Resources::ZERO);
        let sum: Resources = [pod, pod, pod].into_iter().sum();
        assert_eq!(sum.cpu, Amount(750));
    }
}
