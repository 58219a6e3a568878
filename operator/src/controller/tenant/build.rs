//! What the cluster should hold for a tenant (pure): per namespace, the Namespace with its
//! labels, the LimitRange, the admins' RoleBinding and the network policies. The quotas are
//! drawn separately (`quota`), from what the namespaces use.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;

use crate::api::tenant::{EgressRule, SubjectKind, Tenant, TransportProtocol};
use crate::baseline::pod_security;
use crate::controller::Settings;
use crate::domain::resources::{Resource, Resources};
use crate::domain::tenancy::{
    self, LIMIT_RANGE_NAME, POLICY_DEFAULT_DENY, POLICY_DNS, POLICY_EGRESS, POLICY_GATEWAY,
    POLICY_TENANT, QUOTA_NAME, ROLE_BINDING_NAME, TENANT_ADMIN_ROLE,
};
use crate::isolation;
use crate::meta::{self, BASELINE_LABEL, MissingOwner, TENANT_LABEL};
use crate::quantity::Amount;

/// The label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Every child of a tenant except the quotas, for one namespace.
#[derive(Debug, Clone)]
pub struct NamespaceChildren {
    pub namespace: Namespace,
    pub limit_range: LimitRange,
    pub role_binding: RoleBinding,
    pub network_policies: Vec<NetworkPolicy>,
}

/// The desired children of a tenant: the binding of the pool's isolation policy, and
/// namespace by namespace (in spec order) the rest.
#[derive(Debug, Clone)]
pub struct Desired {
    pub isolation: ValidatingAdmissionPolicyBinding,
    pub namespaces: Vec<NamespaceChildren>,
}

/// Metadata of a child in `namespace`: common labels and the tenant as controller owner.
struct ChildMeta {
    tenant: String,
    owner: OwnerReference,
}

impl ChildMeta {
    fn of(&self, name: &str, namespace: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(meta::common_labels(&self.tenant)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

/// Builds the desired children. `pod_security` comes from the bound baseline.
pub fn build(
    tenant: &Tenant,
    pod_security: pod_security::Labels,
    settings: &Settings,
) -> Result<Desired, MissingOwner> {
    let child = ChildMeta {
        tenant: tenant.name_any(),
        owner: meta::owner_reference(tenant)?,
    };
    let baseline = tenancy::baseline_name(tenant);
    let limits = limit_range_spec(tenant);
    let namespaces = tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| NamespaceChildren {
            namespace: namespace(&child.tenant, ns, &baseline, pod_security),
            limit_range: LimitRange {
                metadata: child.of(LIMIT_RANGE_NAME, ns),
                spec: Some(limits.clone()),
            },
            role_binding: role_binding(tenant, child.of(ROLE_BINDING_NAME, ns)),
            network_policies: network_policies(tenant, ns, settings, &child),
        })
        .collect();
    Ok(Desired {
        isolation: isolation::binding(tenant)?,
        namespaces,
    })
}

/// A tenant namespace: common labels, the baseline label and Pod Security Admission labels
/// (`baseline::pod_security`: a backstop where Verbund's policy refuses first).
/// No owner reference: namespaces outlive a Retain tenant; the finalizer releases them.
fn namespace(
    tenant: &str,
    name: &str,
    baseline: &str,
    pod_security: pod_security::Labels,
) -> Namespace {
    let mut labels = meta::common_labels(tenant);
    labels.insert(BASELINE_LABEL.into(), baseline.into());
    for (mode, level) in [
        ("enforce", pod_security.enforce),
        ("warn", pod_security.warn),
        ("audit", pod_security.warn),
    ] {
        labels.insert(format!("pod-security.kubernetes.io/{mode}"), level.into());
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".into(),
        );
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Kinds whose objects a namespace's quota counts (`count/<resource>`): what a tenant admin
/// can create in numbers, so that no tenant floods etcd. Events are left out (the cluster's
/// own controllers write them), and so are PortalServices: the controller-manager counts a
/// custom resource only after its next discovery, and until then the quota would refuse
/// every new service ("status unknown"); each service's children are counted.
pub const COUNTED_OBJECTS: [&str; 11] = [
    "configmaps",
    "secrets",
    "services",
    "serviceaccounts",
    "deployments.apps",
    "statefulsets.apps",
    "jobs.batch",
    "cronjobs.batch",
    "ingresses.networking.k8s.io",
    "horizontalpodautoscalers.autoscaling",
    "poddisruptionbudgets.policy",
];

/// ReplicaSets per counted object: a Deployment keeps ten old ones as its history.
const REPLICA_SETS_PER_OBJECT: i64 = 11;

/// Ephemeral storage (container scratch and logs) the quota allows per pod slot, on average:
/// 2 GiB, in milli-units.
const EPHEMERAL_STORAGE_PER_POD: i128 = (2 << 30) * 1000;

/// Most a container may take beyond what it requests: CPU ten times, memory four times (the
/// quota counts requests; memory beyond them is what an OOM kill takes from the neighbours).
pub const MAX_LIMIT_REQUEST_RATIO: [(&str, &str); 2] = [("cpu", "10"), ("memory", "4")];

/// The quota of one namespace with the given hards (CPU, memory and pods, drawn from the
/// tenant's quota) and the fixed rest: ephemeral storage per pod slot, the namespace's even
/// share of persistent storage, object counts, and no node ports or load balancers.
pub fn quota(
    tenant: &Tenant,
    namespace: &str,
    hards: Resources,
) -> Result<ResourceQuota, MissingOwner> {
    let child = ChildMeta {
        tenant: tenant.name_any(),
        owner: meta::owner_reference(tenant)?,
    };
    let mut hard = hards.to_map(Resource::quota_key);
    let objects = i64::from(tenant.spec.quota.objects_per_namespace);
    let count = |n: i64| Amount::count(n).to_count();
    let pod_slots = hards.pods.0 / Amount::count(1).0;
    hard.insert(
        "limits.ephemeral-storage".into(),
        Amount(pod_slots * EPHEMERAL_STORAGE_PER_POD).to_memory(),
    );
    let storage = storage_share(tenant);
    hard.insert("requests.storage".into(), storage.to_memory());
    hard.insert(
        "persistentvolumeclaims".into(),
        count(if storage > Amount::ZERO { objects } else { 0 }),
    );
    hard.insert("services.nodeports".into(), count(0));
    hard.insert("services.loadbalancers".into(), count(0));
    for kind in COUNTED_OBJECTS {
        hard.insert(format!("count/{kind}"), count(objects));
    }
    hard.insert(
        "count/replicasets.apps".into(),
        count(objects * REPLICA_SETS_PER_OBJECT),
    );
    Ok(ResourceQuota {
        metadata: child.of(QUOTA_NAME, namespace),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        status: None,
    })
}

/// Each namespace's even share of the tenant's persistent storage, in whole MiB.
fn storage_share(tenant: &Tenant) -> Amount {
    let total = tenant
        .spec
        .quota
        .storage
        .as_ref()
        .and_then(|q| Amount::of(q).ok())
        .unwrap_or(Amount::ZERO);
    let namespaces = tenant.spec.namespaces.len().max(1) as i128;
    let mib = (1 << 20) * 1000;
    Amount(total.0 / namespaces / mib * mib)
}

/// Defaults for containers that declare no resources, so that the quota (which counts
/// requests) admits them with a sensible size; maxima (nothing larger than the tenant's whole
/// quota) and limit/request ratios, so that tiny requests cannot hide huge limits; claims no
/// larger than the namespace's share of storage.
fn limit_range_spec(tenant: &Tenant) -> LimitRangeSpec {
    let q = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    let quota = &tenant.spec.quota;
    let mut limits = vec![LimitRangeItem {
        type_: "Container".into(),
        default_request: Some(q(&[
            ("cpu", "100m"),
            ("memory", "128Mi"),
            ("ephemeral-storage", "64Mi"),
        ])),
        default: Some(q(&[
            ("cpu", "500m"),
            ("memory", "512Mi"),
            ("ephemeral-storage", "1Gi"),
        ])),
        max: Some(q(&[
            ("cpu", &quota.cpu.0),
            ("memory", &quota.memory.0),
            ("ephemeral-storage", "8Gi"),
        ])),
        max_limit_request_ratio: Some(q(&MAX_LIMIT_REQUEST_RATIO)),
        ..Default::default()
    }];
    let storage = storage_share(tenant);
    if storage > Amount::ZERO {
        limits.push(LimitRangeItem {
            type_: "PersistentVolumeClaim".into(),
            max: Some(q(&[("storage", &storage.to_memory().0)])),
            ..Default::default()
        });
    }
    LimitRangeSpec { limits }
}

fn role_binding(tenant: &Tenant, metadata: ObjectMeta) -> RoleBinding {
    let subjects = tenant
        .spec
        .admins
        .iter()
        .map(|admin| match admin.kind {
            SubjectKind::User | SubjectKind::Group => Subject {
                kind: format!("{:?}", admin.kind),
                name: admin.name.clone(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            },
            SubjectKind::ServiceAccount => Subject {
                kind: "ServiceAccount".into(),
                name: admin.name.clone(),
                api_group: Some(String::new()),
                namespace: admin.namespace.clone(),
            },
        })
        .collect();
    RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: TENANT_ADMIN_ROLE.into(),
        },
        subjects: Some(subjects),
    }
}

fn selector(labels: &[(&str, &str)]) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    })
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

/// Every pod of the namespace.
fn all_pods() -> Option<LabelSelector> {
    Some(LabelSelector::default())
}

/// Isolation of one namespace (APP.4.4.A7, A18): deny everything, then allow DNS, traffic within
/// the tenant, ingress from the portal gateway and the tenant's declared egress.
fn network_policies(
    tenant: &Tenant,
    namespace: &str,
    settings: &Settings,
    child: &ChildMeta,
) -> Vec<NetworkPolicy> {
    let policy = |name: &str, spec: NetworkPolicySpec| NetworkPolicy {
        metadata: child.of(name, namespace),
        spec: Some(spec),
    };
    let mut policies = vec![
        policy(POLICY_DEFAULT_DENY, default_deny()),
        policy(POLICY_DNS, allow_dns()),
        policy(POLICY_TENANT, allow_tenant(&child.tenant)),
        policy(POLICY_GATEWAY, allow_gateway(&settings.gateway_namespace)),
    ];
    if !tenant.spec.egress.is_empty() {
        policies.push(policy(POLICY_EGRESS, allow_egress(&tenant.spec.egress)));
    }
    policies
}

/// The default-deny policy a released (Retain) namespace keeps: no owner, so it outlives the
/// Tenant, until an administrator removes it.
pub fn released_default_deny(tenant: &str, namespace: &str) -> NetworkPolicy {
    let mut labels = BTreeMap::from([
        (
            meta::MANAGED_BY_LABEL.to_string(),
            meta::MANAGED_BY.to_string(),
        ),
        (meta::RELEASED_LABEL.to_string(), tenant.to_string()),
    ]);
    labels.insert(meta::PART_OF_LABEL.to_string(), meta::PART_OF.to_string());
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(POLICY_DEFAULT_DENY.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(default_deny()),
    }
}

/// No traffic in or out unless another policy allows it.
fn default_deny() -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: all_pods(),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
        ..Default::default()
    }
}

/// Name lookups at the cluster DNS.
fn allow_dns() -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: all_pods(),
        policy_types: Some(vec!["Egress".into()]),
        egress: Some(vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: selector(&[(NAMESPACE_NAME_LABEL, "kube-system")]),
                pod_selector: selector(&[("k8s-app", "kube-dns")]),
                ..Default::default()
            }]),
            ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
        }]),
        ..Default::default()
    }
}

/// Traffic between the tenant's own namespaces, both ways.
fn allow_tenant(tenant: &str) -> NetworkPolicySpec {
    let same_tenant = NetworkPolicyPeer {
        namespace_selector: selector(&[(TENANT_LABEL, tenant)]),
        ..Default::default()
    };
    NetworkPolicySpec {
        pod_selector: all_pods(),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![same_tenant.clone()]),
            ports: None,
        }]),
        egress: Some(vec![NetworkPolicyEgressRule {
            to: Some(vec![same_tenant]),
            ports: None,
        }]),
    }
}

/// Ingress from the portal gateway.
fn allow_gateway(gateway_namespace: &str) -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: all_pods(),
        policy_types: Some(vec!["Ingress".into()]),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: selector(&[(NAMESPACE_NAME_LABEL, gateway_namespace)]),
                ..Default::default()
            }]),
            ports: None,
        }]),
        ..Default::default()
    }
}

/// The cloud metadata endpoint: it hands out node credentials.
const METADATA_ENDPOINT: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// A declared network that contains the metadata endpoint without naming it alone (e.g.
/// 0.0.0.0/0) leaves it out: reaching it must be said explicitly.
fn metadata_carved_out(cidr: &str) -> Option<Vec<String>> {
    let (address, bits) = cidr.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if bits >= 32 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    (u32::from(address) & mask == u32::from(METADATA_ENDPOINT) & mask)
        .then(|| vec![format!("{METADATA_ENDPOINT}/32")])
}

/// The destinations the tenant declared.
fn allow_egress(rules: &[EgressRule]) -> NetworkPolicySpec {
    let rules = rules
        .iter()
        .map(|rule| {
            let peer = match (&rule.cidr, &rule.namespace) {
                (Some(cidr), _) => NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: cidr.clone(),
                        except: metadata_carved_out(cidr),
                    }),
                    ..Default::default()
                },
                (None, ns) => NetworkPolicyPeer {
                    namespace_selector: selector(&[(
                        NAMESPACE_NAME_LABEL,
                        ns.as_deref().unwrap_or_default(),
                    )]),
                    ..Default::default()
                },
            };
            let ports = (!rule.ports.is_empty()).then(|| {
                rule.ports
                    .iter()
                    .map(|p| match p.protocol {
                        TransportProtocol::TCP => port(p.port, "TCP"),
                        TransportProtocol::UDP => port(p.port, "UDP"),
                    })
                    .collect()
            });
            NetworkPolicyEgressRule {
                to: Some(vec![peer]),
                ports,
            }
        })
        .collect();
    NetworkPolicySpec {
        pod_selector: all_pods(),
        policy_types: Some(vec!["Egress".into()]),
        egress: Some(rules),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_egress_never_includes_the_metadata_endpoint_unless_named() {
        assert_eq!(
            metadata_carved_out("0.0.0.0/0"),
            Some(vec!["169.254.169.254/32".to_string()])
        );
        assert_eq!(
            metadata_carved_out("169.254.0.0/16"),
            Some(vec!["169.254.169.254/32".to_string()])
        );
        assert_eq!(metadata_carved_out("10.20.0.0/16"), None);
        assert_eq!(
            metadata_carved_out("169.254.169.254/32"),
            None,
            "named explicitly"
        );
        assert_eq!(metadata_carved_out("fd00::/8"), None);
    }
    use crate::baseline::audit::has_default_deny;
    use crate::testing;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            gateway_namespace: "verbund-gateway".into(),
            resync: std::time::Duration::from_secs(600),
            failover: Default::default(),
        }
    }

    #[test]
    fn every_namespace_gets_labels_limits_admins_and_isolation() {
        let t = testing::tenant(
            "lhs",
            &["lhs-portal", "lhs-intern"],
            json!({ "admins": [{ "kind": "Group", "name": "lhs-admins" }], "maxProtectionLevel": "High" }),
        );
        let desired = build(&t, pod_security::WITHOUT_BASELINE, &settings()).expect("owner");
        assert_eq!(desired.namespaces.len(), 2);
        let first = &desired.namespaces[0];
        let labels = first.namespace.labels();
        assert_eq!(labels[BASELINE_LABEL], "grundschutz-hoch");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(labels[TENANT_LABEL], "lhs");
        let subjects = first.role_binding.subjects.clone().unwrap_or_default();
        assert_eq!(subjects[0].name, "lhs-admins");
        assert_eq!(first.role_binding.role_ref.name, TENANT_ADMIN_ROLE);
        let names: Vec<String> = first
            .network_policies
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            names,
            [
                POLICY_DEFAULT_DENY,
                POLICY_DNS,
                POLICY_TENANT,
                POLICY_GATEWAY
            ],
            "no egress policy without declared egress"
        );
        assert!(has_default_deny(&first.network_policies[..1]));
        assert!(
            first
                .network_policies
                .iter()
                .all(|p| p.owner_references()[0].uid == "uid-lhs")
        );
    }

    #[test]
    fn the_quota_covers_storage_objects_and_exposure_and_the_limits_bound_ratios() {
        let t = testing::tenant(
            "uds",
            &["uds-a", "uds-b"],
            json!({ "quota": { "cpu": "8", "memory": "16Gi", "pods": 40, "storage": "101Gi" } }),
        );
        let hards = Resources {
            cpu: Amount(2000),
            memory: Amount::parse("4Gi").expect("q"),
            pods: Amount::count(10),
        };
        let q = quota(&t, "uds-a", hards).expect("owner");
        let hard = q.spec.and_then(|s| s.hard).expect("hard");
        let get = |k: &str| hard.get(k).map(|q| q.0.clone()).unwrap_or_default();
        assert_eq!(get("requests.cpu"), "2");
        assert_eq!(
            get("requests.storage"),
            "51712Mi",
            "half of 101Gi, whole MiB"
        );
        assert_eq!(get("persistentvolumeclaims"), "1000");
        assert_eq!(get("limits.ephemeral-storage"), "20Gi", "2Gi per pod slot");
        assert_eq!(get("services.nodeports"), "0");
        assert_eq!(get("services.loadbalancers"), "0");
        assert_eq!(get("count/secrets"), "1000");
        assert_eq!(get("count/replicasets.apps"), "11000");
        let limits = limit_range_spec(&t).limits;
        assert_eq!(
            limits[0]
                .max_limit_request_ratio
                .as_ref()
                .map(|r| r["memory"].0.clone()),
            Some("4".into())
        );
        assert_eq!(
            limits[0].max.as_ref().map(|m| m["cpu"].0.clone()),
            Some("8".into())
        );
        assert_eq!(limits[1].type_, "PersistentVolumeClaim");

        let no_storage = testing::tenant("lhs", &["lhs-a"], json!({}));
        let q = quota(&no_storage, "lhs-a", hards).expect("owner");
        let hard = q.spec.and_then(|s| s.hard).expect("hard");
        assert_eq!(
            hard["persistentvolumeclaims"].0, "0",
            "no storage, no claims"
        );
        assert_eq!(limit_range_spec(&no_storage).limits.len(), 1);
    }

    #[test]
    fn declared_egress_becomes_one_policy() {
        let t = testing::tenant(
            "lhs",
            &["lhs-portal"],
            json!({ "egress": [
                { "name": "xta", "cidr": "10.20.0.0/16", "ports": [{ "port": 443 }] },
                { "name": "shared", "namespace": "verbund-shared" },
            ] }),
        );
        let desired = build(
            &t,
            pod_security::Labels {
                enforce: "privileged",
                warn: "baseline",
            },
            &settings(),
        )
        .expect("owner");
        let egress = desired.namespaces[0]
            .network_policies
            .iter()
            .find(|p| p.name_any() == POLICY_EGRESS)
            .and_then(|p| p.spec.clone())
            .and_then(|s| s.egress)
            .expect("egress policy");
        assert_eq!(egress.len(), 2);
        assert_eq!(
            egress[0]
                .to
                .as_ref()
                .and_then(|t| t[0].ip_block.clone())
                .map(|b| b.cidr),
            Some("10.20.0.0/16".to_string())
        );
        assert_eq!(
            desired.namespaces[0].namespace.labels()["pod-security.kubernetes.io/warn"],
            "baseline"
        );
        assert_eq!(
            desired.namespaces[0].namespace.labels()["pod-security.kubernetes.io/enforce"],
            "privileged",
            "Verbund's policy refuses first"
        );
    }
}
