//! A restarted operator on a converged pool sends no write and changes nothing: every
//! reconcile after the restart finds the cluster as it wants it (DESIGN §7).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use verbund_operator::api::{PortalService, SecurityBaseline, Site, Tenant};
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{control_plane, crds, examples, operator_binary, wait};

/// Verbund's own kinds: all their writes, status included, come from Verbund or the test.
const VERBUND_KINDS: [&str; 4] = ["tenants", "sites", "securitybaselines", "portalservices"];

/// The kinds Verbund renders. The controller-manager writes some of their subresources
/// (quota usage, Deployment status and scale, autoscaler and budget status): those are not
/// Verbund's writes, so only writes to the objects themselves count.
const CHILD_KINDS: [&str; 14] = [
    "namespaces",
    "resourcequotas",
    "limitranges",
    "rolebindings",
    "networkpolicies",
    "clusterroles",
    "deployments",
    "services",
    "serviceaccounts",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "ingresses",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
];

/// Write requests the API server has served for the kinds Verbund writes, by resource and
/// verb (its own `apiserver_request_total` counter: independent of the operator's word).
async fn api_server_writes(client: &Client) -> BTreeMap<String, u64> {
    let text = verbund_tests::api_server_metrics(client).await;
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
        let counted = VERBUND_KINDS.contains(&resource)
            || (CHILD_KINDS.contains(&resource) && subresource.is_empty());
        if counted && ["POST", "PUT", "PATCH", "DELETE"].contains(&verb) {
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

/// What Verbund last changed on everything it manages: the resource version of its own kinds
/// (only Verbund and the test write them), and for rendered objects the time of Verbund's
/// entry in `managedFields` (other controllers write their status and scale; the time moves
/// only when Verbund's apply changes something).
async fn managed_state(client: &Client) -> BTreeMap<String, String> {
    async fn versions<K>(api: Api<K>, out: &mut BTreeMap<String, String>)
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for object in api.list(&ListParams::default()).await.expect("list").items {
            out.insert(key(&object), object.resource_version().unwrap_or_default());
        }
    }
    async fn applied<K>(api: Api<K>, out: &mut BTreeMap<String, String>)
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=verbund-operator");
        for object in api.list(&managed).await.expect("list").items {
            let times: Vec<String> = object
                .managed_fields()
                .iter()
                .filter(|f| f.manager.as_deref() == Some("verbund-operator"))
                .map(|f| format!("{:?} {:?}", f.subresource, f.time))
                .collect();
            out.insert(key(&object), times.join(", "));
        }
    }
    fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
        format!(
            "{} {}/{}",
            K::kind(&()),
            object.meta().namespace.clone().unwrap_or_default(),
            object.meta().name.clone().unwrap_or_default()
        )
    }
    let mut state = BTreeMap::new();
    versions(Api::<Tenant>::all(client.clone()), &mut state).await;
    versions(Api::<Site>::all(client.clone()), &mut state).await;
    versions(Api::<PortalService>::all(client.clone()), &mut state).await;
    versions(Api::<SecurityBaseline>::all(client.clone()), &mut state).await;
    applied(Api::<Namespace>::all(client.clone()), &mut state).await;
    applied(Api::<ResourceQuota>::all(client.clone()), &mut state).await;
    applied(Api::<LimitRange>::all(client.clone()), &mut state).await;
    applied(Api::<RoleBinding>::all(client.clone()), &mut state).await;
    applied(Api::<NetworkPolicy>::all(client.clone()), &mut state).await;
    applied(Api::<ClusterRole>::all(client.clone()), &mut state).await;
    applied(Api::<Deployment>::all(client.clone()), &mut state).await;
    applied(Api::<Service>::all(client.clone()), &mut state).await;
    applied(Api::<ServiceAccount>::all(client.clone()), &mut state).await;
    applied(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        &mut state,
    )
    .await;
    applied(Api::<PodDisruptionBudget>::all(client.clone()), &mut state).await;
    applied(Api::<Ingress>::all(client.clone()), &mut state).await;
    applied(
        Api::<ValidatingAdmissionPolicy>::all(client.clone()),
        &mut state,
    )
    .await;
    applied(
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()),
        &mut state,
    )
    .await;
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
    let apply = |files: &'static [&'static str]| {
        let dir = dir.clone();
        async move {
            for file in files {
                cp.kubectl()
                    .ok([
                        "apply",
                        "--server-side",
                        "-f",
                        &dir.join(file).to_string_lossy(),
                    ])
                    .await;
            }
        }
    };
    apply(&["00-sites.yaml", "10-baselines.yaml", "20-tenants.yaml"]).await;
    let names = |kind: &str| -> Vec<(Option<String>, String)> {
        examples::saarland()
            .iter()
            .filter(|d| d.kind() == kind)
            .map(|d| (d.namespace().map(str::to_string), d.name().to_string()))
            .collect()
    };
    let tenant_names = names("Tenant");

    let mut first =
        OperatorProcess::start_as_operator(operator_binary!(), cp.kubeconfig_path(), &[])
            .await
            .expect("start");
    first
        .await_ready(Duration::from_secs(60))
        .await
        .expect("ready");
    // Converged: every tenant Ready, every site and service reconciled for its generation
    // (in this mode there are no nodes, so sites and services cannot be Ready).
    let tenants: Api<Tenant> = Api::all(client.clone());
    for (_, name) in &tenant_names {
        wait::ready(&tenants, name, Duration::from_secs(60)).await;
    }
    // The services go into the tenants' namespaces, which exist now.
    apply(&[
        "30-services-land.yaml",
        "31-services-hochschulen.yaml",
        "32-services-saarbruecken.yaml",
        "33-services-kommunen.yaml",
    ])
    .await;
    let service_names = names("PortalService");
    let service_count = service_names.len();
    let baselines: Api<SecurityBaseline> = Api::all(client.clone());
    for (_, name) in names("SecurityBaseline") {
        wait::ready(&baselines, &name, Duration::from_secs(60)).await;
    }
    let sites: Api<Site> = Api::all(client.clone());
    for (_, name) in names("Site") {
        wait::observed(&sites, &name, Duration::from_secs(60)).await;
    }
    for (namespace, name) in service_names {
        let services: Api<PortalService> =
            Api::namespaced(client.clone(), namespace.as_deref().expect("namespaced"));
        wait::observed(&services, &name, Duration::from_secs(60)).await;
    }
    // Converged means no status figure is still waiting for its pacing interval either.
    verbund_tests::faults::quiet(
        &first,
        verbund_operator::controller::status::FIGURES_INTERVAL_MAX + Duration::from_secs(2),
    )
    .await;
    first.signal("TERM").await.expect("stop");
    let (status, log) = first.wait(Duration::from_secs(30)).await.expect("exits");
    assert!(status.success(), "{log}");

    let writes_before = api_server_writes(&client).await;
    let state_before = managed_state(&client).await;
    assert!(
        writes_before.values().sum::<u64>() > 0,
        "the first run wrote the pool: {writes_before:?}"
    );

    let mut second =
        OperatorProcess::start_as_operator(operator_binary!(), cp.kubeconfig_path(), &[])
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
        "every tenant, site and service reconciled",
        || {
            let url = metrics_url.clone();
            let wanted = tenant_names.len() as f64;
            let wanted_services = service_count as f64;
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
                let baselines = metric_sum(
                    &text,
                    "verbund_reconcile_duration_seconds_count",
                    "controller=\"baseline\"",
                );
                let services = metric_sum(
                    &text,
                    "verbund_reconcile_duration_seconds_count",
                    "controller=\"portalservice\"",
                );
                if tenants >= wanted && sites >= 3.0 && services >= wanted_services && baselines >= 3.0 {
                    Ok(text)
                } else {
                    Err(format!(
                        "tenants {tenants}, sites {sites}, services {services}, baselines {baselines}"
                    ))
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
