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

use crate::api::security_baseline::PodSecurityLevel;
use crate::api::tenant::{EgressRule, SubjectKind, Tenant, TransportProtocol};
use crate::controller::Settings;
use crate::domain::resources::{Resource, Resources};
use crate::domain::tenancy::{
    self, LIMIT_RANGE_NAME, POLICY_DEFAULT_DENY, POLICY_DNS, POLICY_EGRESS, POLICY_GATEWAY,
    POLICY_TENANT, QUOTA_NAME, ROLE_BINDING_NAME, TENANT_ADMIN_ROLE,
};
use crate::isolation;
use crate::meta::{self, BASELINE_LABEL, MissingOwner, TENANT_LABEL};

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
    pod_security: PodSecurityLevel,
    settings: &Settings,
) -> Result<Desired, MissingOwner> {
    let child = ChildMeta {
        tenant: tenant.name_any(),
        owner: meta::owner_reference(tenant)?,
    };
    let baseline = tenancy::baseline_name(tenant);
    let namespaces = tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| NamespaceChildren {
            namespace: namespace(&child.tenant, ns, &baseline, pod_security),
            limit_range: LimitRange {
                metadata: child.of(LIMIT_RANGE_NAME, ns),
                spec: Some(limit_range_spec()),
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

/// A tenant namespace: common labels, the baseline label and Pod Security Admission labels.
/// No owner reference: namespaces outlive a Retain tenant; the finalizer releases them.
fn namespace(
    tenant: &str,
    name: &str,
    baseline: &str,
    pod_security: PodSecurityLevel,
) -> Namespace {
    let level = match pod_security {
        PodSecurityLevel::Restricted => "restricted",
        PodSecurityLevel::Baseline => "baseline",
    };
    let mut labels = meta::common_labels(tenant);
    labels.insert(BASELINE_LABEL.into(), baseline.into());
    for mode in ["enforce", "warn", "audit"] {
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

/// The quota of one namespace with the given hards.
pub fn quota(
    tenant: &Tenant,
    namespace: &str,
    hards: Resources,
) -> Result<ResourceQuota, MissingOwner> {
    let child = ChildMeta {
        tenant: tenant.name_any(),
        owner: meta::owner_reference(tenant)?,
    };
    Ok(ResourceQuota {
        metadata: child.of(QUOTA_NAME, namespace),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hards.to_map(Resource::quota_key)),
            ..Default::default()
        }),
        status: None,
    })
}

/// Defaults for containers that declare no resources, so that the quota (which counts
/// requests) admits them with a sensible size.
fn limit_range_spec() -> LimitRangeSpec {
    let q = |cpu: &str, memory: &str| -> BTreeMap<String, Quantity> {
        [
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ]
        .into()
    };
    LimitRangeSpec {
        limits: vec![LimitRangeItem {
            type_: "Container".into(),
            default_request: Some(q("100m", "128Mi")),
            default: Some(q("500m", "512Mi")),
            ..Default::default()
        }],
    }
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

/// The destinations the tenant declared.
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
        }
    }

    #[test]
    fn every_namespace_gets_labels_limits_admins_and_isolation() {
        let t = testing::tenant(
            "lhs",
            &["lhs-portal", "lhs-intern"],
            json!({ "admins": [{ "kind": "Group", "name": "lhs-admins" }], "maxProtectionLevel": "High" }),
        );
        let desired = build(&t, PodSecurityLevel::Restricted, &settings()).expect("owner");
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
    fn declared_egress_becomes_one_policy() {
        let t = testing::tenant(
            "lhs",
            &["lhs-portal"],
            json!({ "egress": [
                { "name": "xta", "cidr": "10.20.0.0/16", "ports": [{ "port": 443 }] },
                { "name": "shared", "namespace": "verbund-shared" },
            ] }),
        );
        let desired = build(&t, PodSecurityLevel::Baseline, &settings()).expect("owner");
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
    }
}
