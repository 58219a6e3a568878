//! Builders for the unit tests: the objects of the Saarland pool, written once.

use k8s_openapi::api::core::v1::ResourceQuota;

use crate::domain::projections::CachedNode;
use serde_json::{Value, json};

use crate::api::{PortalService, SecurityBaseline, Site, Tenant};

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("test object: {e}"))
}

/// A Site of `level`, its zone its name.
pub fn site(name: &str, level: &str, cordoned: bool) -> Site {
    from(json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Site",
        "metadata": { "name": name, "generation": 1, "uid": format!("uid-{name}") },
        "spec": { "displayName": name, "operatedBy": { "kind": "State", "name": "IT-DLZ" },
                  "maxProtectionLevel": level, "cordoned": cordoned,
                  "cordonReason": if cordoned { Some("Wartung") } else { None } }
    }))
}

/// The pool's three sites: the Land's (VeryHigh), the university's (High), the municipal (Normal).
pub fn pool() -> Vec<Site> {
    vec![
        site("rz-land", "VeryHigh", false),
        site("rz-uds", "High", false),
        site("rz-ego", "Normal", false),
    ]
}

/// A tenant with `namespaces`, a quota of 8 cores, 16Gi and 40 pods, and `extra` merged into
/// its spec.
pub fn tenant(name: &str, namespaces: &[&str], extra: Value) -> Tenant {
    let mut spec = json!({
        "displayName": name, "organisation": { "kind": "State", "name": name },
        "namespaces": namespaces, "quota": { "cpu": "8", "memory": "16Gi", "pods": 40 },
        "maxProtectionLevel": "VeryHigh",
    });
    merge(&mut spec, extra);
    from(json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant",
        "metadata": { "name": name, "generation": 1, "uid": format!("uid-{name}") },
        "spec": spec,
    }))
}

/// A portal service in `namespace` with one HTTP port and `extra` merged into its spec.
pub fn portal_service(name: &str, namespace: &str, extra: Value) -> PortalService {
    let mut spec = json!({
        "image": "registry.saarland.de/portal/melderegister:2.3.1",
        "ports": [{ "name": "http", "port": 8080 }],
    });
    merge(&mut spec, extra);
    from(json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService",
        "metadata": { "name": name, "namespace": namespace, "generation": 1, "uid": format!("uid-{name}") },
        "spec": spec,
    }))
}

/// A baseline with `rules`.
pub fn baseline(name: &str, rules: Value) -> SecurityBaseline {
    from(json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "SecurityBaseline",
        "metadata": { "name": name, "generation": 1, "uid": format!("uid-{name}") },
        "spec": { "protectionLevel": "High", "rules": rules },
    }))
}

/// A Ready (or not) node of 32 cores in `zone`.
pub fn node(name: &str, zone: &str, ready: bool) -> CachedNode {
    from(json!({
        "metadata": { "name": name, "labels": { "topology.kubernetes.io/zone": zone } },
        "status": {
            "capacity": { "cpu": "32", "memory": "256Gi", "pods": "110" },
            "allocatable": { "cpu": "32", "memory": "256Gi", "pods": "110" },
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }]
        }
    }))
}

/// A namespace's ResourceQuota with `hard` and `used` (maps of quota keys).
pub fn quota(namespace: &str, hard: Value, used: Value) -> ResourceQuota {
    from(json!({
        "metadata": { "name": crate::domain::tenancy::QUOTA_NAME, "namespace": namespace },
        "spec": { "hard": hard },
        "status": { "used": used },
    }))
}

/// Merges `extra` into `base`, object by object.
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}
