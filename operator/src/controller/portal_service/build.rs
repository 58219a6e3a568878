//! What the cluster should hold for a portal service (pure): a hardened Deployment placed on
//! the eligible sites, and what it needs around it: ServiceAccount, Service, autoscaler,
//! disruption budget, network policy and, when exposed, an Ingress.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, GRPCAction,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyIngressRule,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::portal_service::{
    AppProtocol, Exposure, PortalService, PortalServiceSpec, ServicePort as Port,
};
use crate::domain::pods::INSTANCE_LABEL;
use crate::meta::{self, MissingOwner};
use crate::placement::{self, EligibleSite};

/// The user every service runs as: any non-root id; the image needs no particular one.
pub const RUN_AS_USER: i64 = 10001;

/// Labels identifying a service's pods (the Deployment's selector; never changes).
pub fn selector_labels(service: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", service),
        (INSTANCE_LABEL, service),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Everything a portal service consists of. `deployment` is None when no site is eligible:
/// running pods are then left as they are.
#[derive(Debug, Clone)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub deployment: Option<Deployment>,
    pub service: Service,
    pub autoscaler: HorizontalPodAutoscaler,
    pub disruption_budget: PodDisruptionBudget,
    pub network_policy: NetworkPolicy,
    pub ingress: Option<Ingress>,
}

/// Inputs beyond the PortalService itself.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub tenant: &'a str,
    /// Eligible sites; empty means no site can take the service.
    pub eligible: &'a [EligibleSite],
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub gateway_namespace: &'a str,
}

pub fn build(ps: &PortalService, inputs: &Inputs<'_>) -> Result<Desired, MissingOwner> {
    let name = ps.name_any();
    let mut labels = meta::common_labels(inputs.tenant);
    labels.extend(selector_labels(&name));
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(ps.namespace().unwrap_or_default()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![meta::owner_reference(ps)?]),
        ..Default::default()
    };
    let selector = LabelSelector {
        match_labels: Some(selector_labels(&name)),
        ..Default::default()
    };
    let spec = &ps.spec;
    Ok(Desired {
        service_account: ServiceAccount {
            metadata: metadata.clone(),
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        deployment: (!inputs.eligible.is_empty())
            .then(|| deployment(ps, inputs.eligible, metadata.clone(), labels, &selector)),
        service: service(spec, metadata.clone(), &name),
        autoscaler: autoscaler(spec, metadata.clone(), &name, inputs),
        disruption_budget: disruption_budget(metadata.clone(), &selector),
        network_policy: network_policy(spec, metadata.clone(), &selector, inputs.gateway_namespace),
        ingress: spec
            .exposure
            .as_ref()
            .map(|exposure| ingress(spec, metadata, &name, exposure)),
    })
}

/// The pod labels plus the service's protection need, by which admission checks that its
/// pods run only at sites certified for it (`isolation`).
fn with_protection_level(
    mut labels: BTreeMap<String, String>,
    ps: &PortalService,
) -> BTreeMap<String, String> {
    labels.insert(
        meta::PROTECTION_LEVEL_LABEL.into(),
        ps.spec.protection_level.to_string(),
    );
    labels
}

/// The Deployment: rolling updates that never go below the ready count, the hardened pod.
/// No `replicas`: the autoscaler owns it.
fn deployment(
    ps: &PortalService,
    eligible: &[EligibleSite],
    metadata: ObjectMeta,
    labels: BTreeMap<String, String>,
    selector: &LabelSelector,
) -> Deployment {
    Deployment {
        metadata,
        spec: DeploymentSpec {
            selector: selector.clone(),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(with_protection_level(labels, ps)),
                    ..Default::default()
                }),
                spec: Some(pod_spec(ps, eligible, selector)),
            },
            ..Default::default()
        },
        status: None,
    }
}

fn app_protocol(protocol: AppProtocol) -> &'static str {
    match protocol {
        AppProtocol::Http => "http",
        AppProtocol::Grpc => "kubernetes.io/h2c",
    }
}

/// A ClusterIP Service with the declared ports.
fn service(spec: &PortalServiceSpec, metadata: ObjectMeta, name: &str) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(name)),
            ports: Some(
                spec.ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        port: p.port,
                        target_port: Some(IntOrString::String(p.name.clone())),
                        protocol: Some("TCP".into()),
                        app_protocol: Some(app_protocol(p.protocol).into()),
                        node_port: None,
                    })
                    .collect(),
            ),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The autoscaler between the floor (window or baseline) and the ceiling (tenant quota).
fn autoscaler(
    spec: &PortalServiceSpec,
    metadata: ObjectMeta,
    name: &str,
    inputs: &Inputs<'_>,
) -> HorizontalPodAutoscaler {
    let target_cpu = spec
        .scaling
        .as_ref()
        .map(|s| s.target_cpu_utilization)
        .unwrap_or(70);
    HorizontalPodAutoscaler {
        metadata,
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.to_string(),
            },
            min_replicas: Some(inputs.min_replicas.min(inputs.max_replicas)),
            max_replicas: inputs.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(target_cpu),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: None,
        },
        status: None,
    }
}

/// At most one pod down at a time for voluntary disruptions (node drains).
fn disruption_budget(metadata: ObjectMeta, selector: &LabelSelector) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

/// Ingress on the declared ports, from the portal gateway only.
fn network_policy(
    spec: &PortalServiceSpec,
    metadata: ObjectMeta,
    selector: &LabelSelector,
    gateway_namespace: &str,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(
                            [(
                                "kubernetes.io/metadata.name".to_string(),
                                gateway_namespace.to_string(),
                            )]
                            .into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ports: Some(
                    spec.ports
                        .iter()
                        .map(|p| NetworkPolicyPort {
                            port: Some(IntOrString::Int(p.port)),
                            protocol: Some("TCP".into()),
                            end_port: None,
                        })
                        .collect(),
                ),
            }]),
            ..Default::default()
        }),
    }
}

/// The Ingress publishing the service on the portal domain, on its first HTTP port.
fn ingress(
    spec: &PortalServiceSpec,
    metadata: ObjectMeta,
    name: &str,
    exposure: &Exposure,
) -> Ingress {
    let port = spec
        .ports
        .iter()
        .find(|p| p.protocol == AppProtocol::Http)
        .or(spec.ports.first())
        .map(|p| p.name.clone());
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            rules: Some(vec![IngressRule {
                host: Some(exposure.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(exposure.path.clone()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name.to_string(),
                                port: Some(ServiceBackendPort {
                                    name: port,
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls: exposure.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![exposure.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The pod: hardened by construction so that it satisfies every baseline and Pod Security
/// `restricted` (SYS.1.6.A17, A21, A23, A15; APP.4.4.A9, A11).
pub fn pod_spec(
    ps: &PortalService,
    eligible: &[EligibleSite],
    selector: &LabelSelector,
) -> PodSpec {
    PodSpec {
        service_account_name: Some(ps.name_any()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        containers: vec![container(&ps.spec)],
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        affinity: Some(placement::node_affinity(eligible)),
        topology_spread_constraints: Some(placement::spread_constraints(
            ps.spec.placement.spread,
            selector,
        )),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The service's one container, writable only at `/tmp`.
fn container(spec: &PortalServiceSpec) -> Container {
    let (readiness, liveness) = probes(spec);
    Container {
        name: "service".into(),
        image: Some(spec.image.clone()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: env(spec),
        ports: Some(
            spec.ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    container_port: p.port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        resources: Some(resources(spec)),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Requests (what the quota counts) and limits.
fn resources(spec: &PortalServiceSpec) -> ResourceRequirements {
    let quantities = |cpu: &Quantity, memory: &Quantity| -> BTreeMap<String, Quantity> {
        [
            ("cpu".to_string(), cpu.clone()),
            ("memory".to_string(), memory.clone()),
        ]
        .into()
    };
    let r = &spec.resources;
    ResourceRequirements {
        requests: Some(quantities(&r.cpu, &r.memory)),
        limits: Some(quantities(&r.cpu_limit, &r.memory_limit)),
        ..Default::default()
    }
}

/// Values and secret references; None when there are none.
fn env(spec: &PortalServiceSpec) -> Option<Vec<EnvVar>> {
    let env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: e.value.clone(),
            value_from: e.secret_key_ref.as_ref().map(|s| EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.name.clone(),
                    key: s.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        })
        .collect();
    (!env.is_empty()).then_some(env)
}

/// Readiness and liveness probes on the probed port: HTTP paths, or the gRPC health protocol.
fn probes(spec: &PortalServiceSpec) -> (Probe, Probe) {
    let port: Option<&Port> = spec
        .probes
        .as_ref()
        .and_then(|p| p.port.as_ref())
        .and_then(|port| spec.ports.iter().find(|p| &p.name == port))
        .or(spec.ports.first());
    let (readiness_path, liveness_path, period) = match &spec.probes {
        Some(p) => (
            p.readiness_path.clone(),
            p.liveness_path.clone(),
            p.period_seconds,
        ),
        None => ("/healthz".to_string(), "/healthz".to_string(), 10),
    };
    let probe = |path: String| {
        let mut probe = Probe {
            period_seconds: Some(period),
            failure_threshold: Some(3),
            ..Default::default()
        };
        match port {
            Some(p) if p.protocol == AppProtocol::Grpc => {
                probe.grpc = Some(GRPCAction {
                    port: p.port,
                    ..Default::default()
                })
            }
            _ => {
                probe.http_get = Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::String(port.map(|p| p.name.clone()).unwrap_or_default()),
                    ..Default::default()
                })
            }
        }
        probe
    };
    (probe(readiness_path), probe(liveness_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecurityBaseline;
    use crate::api::security_baseline::{BaselineRules, RuleName};
    use crate::baseline::{fixtures, rules};
    use proptest::prelude::*;
    use serde_json::json;

    /// The Saarland baselines (normal, high, very high) and one with every rule on.
    fn baselines() -> Vec<BaselineRules> {
        let text = include_str!("../../../../examples/saarland/10-baselines.yaml");
        let mut all: Vec<BaselineRules> = serde_yaml::Deserializer::from_str(text)
            .map(|d| {
                let b: SecurityBaseline = serde::Deserialize::deserialize(d).expect("baseline");
                b.spec.rules
            })
            .collect();
        all.push(fixtures::all_rules());
        all
    }

    const IMAGES: [&str; 6] = [
        "registry.saarland.de/portal/melderegister:2.3.1",
        "registry.saarland.de/portal/melderegister@sha256:3f1c2a9e8b7d6c5f4e3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e",
        "registry.saarland.de/portal/wohngeld:latest",
        "registry.saarland.de/uds/moodle-connector:1.4",
        "docker.io/library/nginx:1.27",
        "nginx",
    ];

    /// Random valid PortalService specs, as a data-centre operator could write them.
    fn service() -> impl Strategy<Value = PortalService> {
        (
            (0..IMAGES.len(), 1..=5i32, 0..=6i32, 1..=3usize, any::<bool>()),
            (
                proptest::option::of(5..=60i32),
                prop_oneof![Just("Normal"), Just("High"), Just("VeryHigh")],
                any::<bool>(),
                proptest::collection::vec((0..7usize, 0..=6i32), 0..=2),
                (0..4usize, 0..3usize),
                any::<bool>(),
            ),
        )
            .prop_map(
                |((image, min, extra, ports, grpc), (period, level, preferred, windows, (cpu, memory), secret))| {
                    let ports: Vec<_> = ["http", "grpc", "metrics"]
                        .iter()
                        .take(ports)
                        .enumerate()
                        .map(|(i, name)| {
                            let protocol = if grpc && *name == "grpc" { "Grpc" } else { "Http" };
                            json!({"name": name, "port": 8080 + i, "protocol": protocol})
                        })
                        .collect();
                    let days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
                    let windows: Vec<_> = windows
                        .iter()
                        .enumerate()
                        .map(|(i, (day, more))| {
                            json!({"name": format!("spitze-{i}"), "days": [days[*day]], "start": "07:00",
                                   "end": "19:00", "minReplicas": (min + more).min(min + extra)})
                        })
                        .collect();
                    let mut env = vec![json!({"name": "PORTAL_REGION", "value": "saarland"})];
                    if secret {
                        env.push(json!({"name": "DB_PASSWORD", "secretKeyRef": {"name": "db", "key": "password"}}));
                    }
                    let cpu = ["50m", "250m", "500m", "1"][cpu];
                    let memory = ["64Mi", "256Mi", "1Gi"][memory];
                    let mut spec = json!({
                        "image": IMAGES[image],
                        "ports": ports,
                        "env": env,
                        "replicas": {"min": min, "max": min + extra},
                        "scaling": {"targetCpuUtilization": 70, "windows": windows},
                        "resources": {"cpu": cpu, "memory": memory},
                        "protectionLevel": level,
                        "placement": {"spread": if preferred { "Preferred" } else { "Required" }},
                    });
                    if let Some(period) = period {
                        spec["probes"] = json!({"periodSeconds": period});
                    }
                    let mut ps: PortalService = serde_json::from_value(json!({
                        "apiVersion": "verbund.saarland.de/v1alpha1",
                        "kind": "PortalService",
                        "metadata": {"name": "dienst", "namespace": "lhs-buergerdienste", "uid": "uid-1"},
                        "spec": spec,
                    }))
                    .expect("a valid spec");
                    ps.metadata.generation = Some(1);
                    ps
                },
            )
    }

    /// The image rules are the only ones Verbund cannot satisfy by construction: the image is
    /// the tenant's choice. What they say about an image is checked on its own.
    const IMAGE_RULES: [RuleName; 3] = [
        RuleName::AllowedRegistries,
        RuleName::ImageDigestRequired,
        RuleName::LatestTagForbidden,
    ];

    fn image_violations(image: &str, baseline: &BaselineRules) -> Vec<RuleName> {
        let mut expected = Vec::new();
        if !baseline.allowed_registries.is_empty()
            && !rules::image_from(image, &baseline.allowed_registries)
        {
            expected.push(RuleName::AllowedRegistries);
        }
        if baseline.image_digest_required && !rules::image_pinned(image) {
            expected.push(RuleName::ImageDigestRequired);
        }
        if baseline.latest_tag_forbidden && !rules::image_tagged(image) {
            expected.push(RuleName::LatestTagForbidden);
        }
        expected
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every rendered workload satisfies every rule of every baseline, apart from what its
        /// image says; for those rules it violates exactly what the image breaks.
        #[test]
        fn every_rendered_workload_satisfies_its_baseline(ps in service(), sites in 1..=3usize) {
            let eligible: Vec<EligibleSite> = ["rz-land", "rz-uds", "rz-ego"]
                .iter()
                .take(sites)
                .map(|s| EligibleSite { site: s.to_string(), zone: s.to_string() })
                .collect();
            for baseline in baselines() {
                let floor = super::super::scaling::floor(&ps.spec, baseline.min_replicas, jiff::Timestamp::UNIX_EPOCH);
                let desired = build(&ps, &Inputs {
                    tenant: "lhs-saarbruecken",
                    eligible: &eligible,
                    min_replicas: floor.min,
                    max_replicas: ps.spec.replicas.max.max(floor.min),
                    gateway_namespace: "portal-gateway",
                }).expect("owner");
                let deployment = desired.deployment.expect("placed");
                let pod = deployment.spec.template.spec.as_ref().expect("pod");
                let workload = rules::Workload { kind: "Deployment", replicas: Some(floor.min), pod };
                let violations = rules::violations(&baseline, &workload);
                let (image, other): (Vec<RuleName>, Vec<RuleName>) =
                    violations.into_iter().partition(|r| IMAGE_RULES.contains(r));
                prop_assert_eq!(other, Vec::<RuleName>::new());
                prop_assert_eq!(image, image_violations(&ps.spec.image, &baseline));
                // The autoscaler never goes below the baseline's replica floor.
                let hpa = desired.autoscaler.spec;
                prop_assert!(hpa.min_replicas.unwrap_or(1) >= baseline.min_replicas.unwrap_or(1));
            }
        }
    }
}
