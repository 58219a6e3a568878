//! A restarted operator on a converged pool sends no write and changes nothing: every
//! reconcile after the restart finds the cluster as it wants it (DESIGN §7).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use verbund_operator::api::{Site, Tenant};
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{control_plane, crds, examples, operator_binary, wait};

/// Write requests the API server has served for the kinds Verbund writes, by resource and
/// verb (its own `apiserver_request_total` counter: independent of the operator's word).
async fn api_server_writes(client: &Client) -> BTreeMap<String, u64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client
        .request_text(request)
        .await
        .expect("API server metrics");
    let kinds = [
        "namespaces",
        "resourcequotas",
        "limitranges",
        "rolebindings",
        "networkpolicies",
        "clusterroles",
        "tenants",
        "sites",
        "securitybaselines",
        "portalservices",
    ];
    let mut writes = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            Some(&line[start..start + line[start..].find('"')?])
        };
        let (Some(verb), Some(resource), Some(subresource)) =
            (label("verb"), label("resource"), label("subresource"))
        else {
            continue;
        };
        // The controller-manager keeps quota usage current: that is not Verbund's write.
        let quota_status = resource == "resourcequotas" && subresource == "status";
        if kinds.contains(&resource)
            && ["POST", "PUT", "PATCH", "DELETE"].contains(&verb)
            && !quota_status
        {
            let count: u64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            *writes
                .entry(format!("{verb} {resource}/{subresource}"))
                .or_default() += count;
        }
    }
    writes
}

/// Resource versions of everything Verbund manages (quota: its spec, since the
/// controller-manager rewrites its status).
async fn managed_state(client: &Client) -> BTreeMap<String, String> {
    async fn versions<K>(api: Api<K>, params: &ListParams, out: &mut BTreeMap<String, String>)
    where
        K: Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + serde::Serialize,
    {
        for object in api.list(params).await.expect("list").items {
            let key = format!(
                "{} {}/{}",
                K::kind(&()),
                object.namespace().unwrap_or_default(),
                object.name_any()
            );
            out.insert(key, object.resource_version().unwrap_or_default());
        }
    }
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=verbund-operator");
    let all = ListParams::default();
    let mut state = BTreeMap::new();
    versions(Api::<Tenant>::all(client.clone()), &all, &mut state).await;
    versions(Api::<Site>::all(client.clone()), &all, &mut state).await;
    versions(Api::<Namespace>::all(client.clone()), &managed, &mut state).await;
    versions(Api::<LimitRange>::all(client.clone()), &managed, &mut state).await;
    versions(
        Api::<RoleBinding>::all(client.clone()),
        &managed,
        &mut state,
    )
    .await;
    versions(
        Api::<NetworkPolicy>::all(client.clone()),
        &managed,
        &mut state,
    )
    .await;
    versions(
        Api::<ClusterRole>::all(client.clone()),
        &managed,
        &mut state,
    )
    .await;
    for quota in Api::<ResourceQuota>::all(client.clone())
        .list(&managed)
        .await
        .expect("quotas")
        .items
    {
        let key = format!(
            "ResourceQuota {}/{}",
            quota.namespace().unwrap_or_default(),
            quota.name_any()
        );
        state.insert(key, format!("{:?}", quota.spec.and_then(|s| s.hard)));
    }
    state
}

/// The operator's count of a metric (sum over label sets matching `filter`).
fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_restart_on_a_converged_pool_makes_no_writes() {
    let cp = control_plane::shared().await;
    let client = cp.client().await;
    crds::ensure_installed(&client).await;
    let dir = examples::saarland_dir();
    for file in ["00-sites.yaml", "10-baselines.yaml", "20-tenants.yaml"] {
        cp.kubectl()
            .ok([
                "apply",
                "--server-side",
                "-f",
                &dir.join(file).to_string_lossy(),
            ])
            .await;
    }
    let tenant_names: Vec<String> = examples::saarland()
        .iter()
        .filter(|d| d.kind() == "Tenant")
        .map(|d| d.name().to_string())
        .collect();

    let mut first = OperatorProcess::start(operator_binary!(), cp.kubeconfig_path(), &[])
        .await
        .expect("start");
    first
        .await_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    let tenants: Api<Tenant> = Api::all(client.clone());
    for name in &tenant_names {
        wait::ready(&tenants, name, Duration::from_secs(60)).await;
    }
    first.signal("TERM").await.expect("stop");
    let (status, log) = first.wait(Duration::from_secs(30)).await.expect("exits");
    assert!(status.success(), "{log}");

    let writes_before = api_server_writes(&client).await;
    let state_before = managed_state(&client).await;
    assert!(
        writes_before.values().sum::<u64>() > 0,
        "the first run wrote the pool: {writes_before:?}"
    );

    let mut second = OperatorProcess::start(operator_binary!(), cp.kubeconfig_path(), &[])
        .await
        .expect("start");
    second
        .await_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    // Wait until the new operator has reconciled every tenant and site at least once.
    let metrics_url = format!("{}/metrics", second.admin_url());
    let metrics = wait::until(
        Duration::from_secs(60),
        "every tenant and site reconciled",
        || {
            let url = metrics_url.clone();
            let wanted = tenant_names.len() as f64;
            async move {
                let text = reqwest::get(&url)
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                let tenants = metric_sum(
                    &text,
                    "verbund_reconcile_duration_seconds_count",
                    "controller=\"tenant\"",
                );
                let sites = metric_sum(
                    &text,
                    "verbund_reconcile_duration_seconds_count",
                    "controller=\"site\"",
                );
                if tenants >= wanted && sites >= 3.0 {
                    Ok(text)
                } else {
                    Err(format!("tenants {tenants}, sites {sites}"))
                }
            }
        },
    )
    .await;
    // Let debounced follow-ups run, too.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let writes_after = api_server_writes(&client).await;
    let state_after = managed_state(&client).await;
    second.signal("TERM").await.expect("stop");
    let (_, log) = second.wait(Duration::from_secs(30)).await.expect("exits");

    assert_eq!(
        metric_sum(&metrics, "verbund_api_writes_total", ""),
        0.0,
        "the operator counted writes:\n{metrics}"
    );
    assert_eq!(
        writes_before, writes_after,
        "the API server served writes after the restart; operator log:\n{log}"
    );
    assert_eq!(
        state_before, state_after,
        "something changed after the restart"
    );
}
