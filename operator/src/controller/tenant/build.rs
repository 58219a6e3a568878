//! What the cluster should hold for a tenant: pure functions from the Tenant (and what the
//! caches say) to the desired child objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::quota::{Amounts, hard_quantities};
use crate::api::common::ProtectionLevel;
use crate::api::security_baseline::PodSecurityLevel;
use crate::api::tenant::{SubjectKind, Tenant, TransportProtocol};
use crate::meta::{self, BASELINE_LABEL, MissingOwner, TENANT_LABEL};

/// The ClusterRole tenant admins are bound to in each of their namespaces.
pub const TENANT_ADMIN_ROLE: &str = "verbund-tenant-admin";
pub const QUOTA_NAME: &str = "verbund-tenant-quota";
pub const LIMIT_RANGE_NAME: &str = "verbund-defaults";
pub const ROLE_BINDING_NAME: &str = "verbund-tenant-admins";
pub const POLICY_DEFAULT_DENY: &str = "verbund-default-deny";
pub const POLICY_DNS: &str = "verbund-allow-dns";
pub const POLICY_TENANT: &str = "verbund-allow-tenant";
pub const POLICY_GATEWAY: &str = "verbund-allow-gateway";
pub const POLICY_EGRESS: &str = "verbund-egress";

/// Namespaces no tenant may claim.
pub const RESERVED_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The baseline a tenant's namespaces are bound to: `spec.baseline`, or the one for its
/// protection level.
pub fn baseline_name(tenant: &Tenant) -> String {
    tenant.spec.baseline.clone().unwrap_or_else(|| {
        match tenant.spec.max_protection_level {
            ProtectionLevel::Normal => "grundschutz-normal",
            ProtectionLevel::High => "grundschutz-hoch",
            ProtectionLevel::VeryHigh => "grundschutz-sehr-hoch",
        }
        .to_string()
    })
}

/// Settings that are the pool's, not the tenant's.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Namespace of the portal gateway (ingress controller), allowed to reach tenant pods.
    pub gateway_namespace: String,
}

/// Every child of a tenant except the quotas (their hards come from a two-step redraw, see
/// `quota`), for one namespace.
#[derive(Debug, Clone)]
pub struct NamespaceChildren {
    pub namespace: Namespace,
    pub limit_range: LimitRange,
    pub role_binding: RoleBinding,
    pub network_policies: Vec<NetworkPolicy>,
}

/// The desired children of a tenant, namespace by namespace, in spec order.
#[derive(Debug, Clone)]
pub struct Desired {
    pub namespaces: Vec<NamespaceChildren>,
}

/// Builds the desired children. `pod_security` comes from the bound baseline.
pub fn build(
    tenant: &Tenant,
    pod_security: PodSecurityLevel,
    settings: &PoolSettings,
) -> Result<Desired, MissingOwner> {
    let owner = meta::owner_reference(tenant)?;
    let name = tenant.name_any();
    let baseline = baseline_name(tenant);
    let child_meta = |object_name: &str, namespace: &str| ObjectMeta {
        name: Some(object_name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(meta::common_labels(&name)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let namespaces = tenant
        .spec
        .namespaces
        .iter()
        .map(|ns| NamespaceChildren {
            namespace: namespace(&name, ns, &baseline, pod_security),
            limit_range: LimitRange {
                metadata: child_meta(LIMIT_RANGE_NAME, ns),
                spec: Some(limit_range_spec()),
            },
            role_binding: role_binding(tenant, child_meta(ROLE_BINDING_NAME, ns)),
            network_policies: network_policies(tenant, ns, settings, &child_meta),
        })
        .collect();
    Ok(Desired { namespaces })
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
    hards: &Amounts,
) -> Result<ResourceQuota, MissingOwner> {
    Ok(ResourceQuota {
        metadata: ObjectMeta {
            name: Some(QUOTA_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(meta::common_labels(&tenant.name_any())),
            owner_references: Some(vec![meta::owner_reference(tenant)?]),
            ..Default::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard_quantities(hards)),
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

fn namespace_selector(labels: &[(&str, &str)]) -> Option<LabelSelector> {
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

/// Isolation of one namespace (APP.4.4.A7, A18): deny everything, then allow DNS, traffic within
/// the tenant, ingress from the portal gateway and the tenant's declared egress.
fn network_policies(
    tenant: &Tenant,
    namespace: &str,
    settings: &PoolSettings,
    child_meta: &dyn Fn(&str, &str) -> ObjectMeta,
) -> Vec<NetworkPolicy> {
    let name = tenant.name_any();
    let all_pods = LabelSelector::default();
    let policy = |policy_name: &str, spec: NetworkPolicySpec| NetworkPolicy {
        metadata: child_meta(policy_name, namespace),
        spec: Some(spec),
    };
    let port = |number: i32, protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        end_port: None,
    };
    let same_tenant = NetworkPolicyPeer {
        namespace_selector: namespace_selector(&[(TENANT_LABEL, &name)]),
        ..Default::default()
    };
    let mut policies = vec![
        policy(
            POLICY_DEFAULT_DENY,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..Default::default()
            },
        ),
        policy(
            POLICY_DNS,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: namespace_selector(&[(
                            "kubernetes.io/metadata.name",
                            "kube-system",
                        )]),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(
                                [("k8s-app".to_string(), "kube-dns".to_string())].into(),
                            ),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
                }]),
                ..Default::default()
            },
        ),
        policy(
            POLICY_TENANT,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![same_tenant.clone()]),
                    ports: None,
                }]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![same_tenant]),
                    ports: None,
                }]),
            },
        ),
        policy(
            POLICY_GATEWAY,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: namespace_selector(&[(
                            "kubernetes.io/metadata.name",
                            &settings.gateway_namespace,
                        )]),
                        ..Default::default()
                    }]),
                    ports: None,
                }]),
                ..Default::default()
            },
        ),
    ];
    if !tenant.spec.egress.is_empty() {
        let rules = tenant
            .spec
            .egress
            .iter()
            .map(|rule| {
                let peer = match (&rule.cidr, &rule.namespace) {
                    (Some(cidr), _) => NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: cidr.clone(),
                            except: None,
                        }),
                        ..Default::default()
                    },
                    (None, ns) => NetworkPolicyPeer {
                        namespace_selector: namespace_selector(&[(
                            "kubernetes.io/metadata.name",
                            ns.as_deref().unwrap_or_default(),
                        )]),
                        ..Default::default()
                    },
                };
                let ports = (!rule.ports.is_empty()).then(|| {
                    rule.ports
                        .iter()
                        .map(|p| {
                            let protocol = match p.protocol {
                                TransportProtocol::TCP => "TCP",
                                TransportProtocol::UDP => "UDP",
                            };
                            port(p.port, protocol)
                        })
                        .collect()
                });
                NetworkPolicyEgressRule {
                    to: Some(vec![peer]),
                    ports,
                }
            })
            .collect();
        policies.push(policy(
            POLICY_EGRESS,
            NetworkPolicySpec {
                pod_selector: Some(all_pods),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(rules),
                ..Default::default()
            },
        ));
    }
    policies
}

/// The names of the network policies Verbund manages in a tenant namespace.
pub fn policy_names(tenant: &Tenant) -> Vec<&'static str> {
    let mut names = vec![
        POLICY_DEFAULT_DENY,
        POLICY_DNS,
        POLICY_TENANT,
        POLICY_GATEWAY,
    ];
    if !tenant.spec.egress.is_empty() {
        names.push(POLICY_EGRESS);
    }
    names
}
