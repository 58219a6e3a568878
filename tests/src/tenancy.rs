//! Tenants for the tests: applied as the tests' field manager and waited for until Ready.

use std::time::Duration;

use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use verbund_operator::api::Tenant;

use crate::{unique_name, wait};

/// How long a tenant may take to become Ready.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Applies the Tenant `body` and waits until it is Ready; returns it as stored then.
pub async fn apply_ready(client: &Client, body: &Value) -> Tenant {
    let api: Api<Tenant> = Api::all(client.clone());
    let name = crate::apply(&api, body).await.name_any();
    wait::ready(&api, &name, TIMEOUT).await
}

/// A Ready tenant of the Land owning one namespace of its name and the path `/<name>` on
/// service.saarland.de, at most at `level`, on `allowed_sites` (empty: every site), with
/// `cpu` cores; returns the namespace.
pub async fn tenant(
    client: &Client,
    prefix: &str,
    level: &str,
    allowed_sites: &[&str],
    cpu: &str,
) -> String {
    let name = unique_name(prefix);
    let body = json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "Tenant", "metadata": { "name": name },
        "spec": {
            "displayName": name, "organisation": { "kind": "State", "name": "Testbehörde" },
            "namespaces": [name], "quota": { "cpu": cpu, "memory": "64Gi", "pods": 100 },
            "maxProtectionLevel": level, "allowedSites": allowed_sites, "deletionPolicy": "Delete",
            "routes": [{ "host": "service.saarland.de", "pathPrefix": format!("/{name}") }]
        }
    });
    apply_ready(client, &body).await;
    name
}
