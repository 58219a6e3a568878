//! The rule catalogue: for every baseline rule, the BSI IT-Grundschutz requirements it
//! implements, the CEL expression the API server evaluates at admission, and the Rust check
//! the audit runs. The two are kept equivalent by tests that run both on the same workloads
//! (`baseline::fixtures`; the CEL side against the real API server in `tests/`).
//!
//! CEL expressions see variables the policy defines (`policy::VARIABLES`): `podSpec`, the pod
//! spec of a Pod or of a workload's pod template; `containers`, its containers and init
//! containers; `secured`, those and the ephemeral (debug) containers, for the rules about
//! privileges and images, which a debug container must obey too.

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, LifecycleHandler, PodSpec, Probe, SELinuxOptions, SecurityContext,
    Volume, WindowsSecurityContextOptions,
};

use crate::api::security_baseline::{BaselineRules, RuleName};
use crate::domain::sites::ZONE_LABEL as ZONE;

/// Kinds the replica rules apply to: a single-replica Pod or batch Job is not "highly
/// available" by nature. A ReplicaSet counts when someone runs it by hand; one a Deployment
/// made is judged through its Deployment (it scales to zero in every rollout).
pub const REPLICATED_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "ReplicaSet"];

/// CEL: the object is a workload the replica rules apply to.
const REPLICATED_CEL: &str = "(object.kind in ['Deployment', 'StatefulSet'] || (object.kind == 'ReplicaSet' && !(has(dyn(object).metadata.ownerReferences) && dyn(object).metadata.ownerReferences.exists(o, has(o.controller) && o.controller))))";

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every Pod and pod template.
    Pod,
    /// Deployments and StatefulSets.
    Replicated,
    /// The namespace as a whole (its NetworkPolicies): checked by the audit only, since
    /// admission of a Pod cannot see other objects.
    Namespace,
}

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub name: RuleName,
    /// BSI IT-Grundschutz requirement IDs (edition 2023) the rule implements.
    pub bsi: &'static [&'static str],
    pub scope: Scope,
    /// What a violation means, in a sentence an operator can act on.
    pub violation: &'static str,
}

/// Every rule, in the order of `spec.rules`.
pub const CATALOGUE: [Rule; 22] = [
    Rule {
        name: RuleName::RunAsNonRoot,
        bsi: &["SYS.1.6.A17"],
        scope: Scope::Pod,
        violation: "a container may run as root: set securityContext.runAsNonRoot: true, and use no user or group 0 (runAsUser, runAsGroup, fsGroup, supplementalGroups)",
    },
    Rule {
        name: RuleName::NoPrivilegeEscalation,
        bsi: &["SYS.1.6.A17"],
        scope: Scope::Pod,
        violation: "a container may gain privileges: set securityContext.allowPrivilegeEscalation: false and do not run it privileged",
    },
    Rule {
        name: RuleName::DropAllCapabilities,
        bsi: &["SYS.1.6.A17"],
        scope: Scope::Pod,
        violation: "a container keeps Linux capabilities: drop ALL (only NET_BIND_SERVICE may be added back)",
    },
    Rule {
        name: RuleName::ReadOnlyRootFilesystem,
        bsi: &["SYS.1.6.A23"],
        scope: Scope::Pod,
        violation: "a container can write its root file system: set securityContext.readOnlyRootFilesystem: true",
    },
    Rule {
        name: RuleName::SeccompRuntimeDefault,
        bsi: &["SYS.1.6.A21"],
        scope: Scope::Pod,
        violation: "a container runs without the RuntimeDefault seccomp profile",
    },
    Rule {
        name: RuleName::ResourceLimitsRequired,
        bsi: &["SYS.1.6.A15"],
        scope: Scope::Pod,
        violation: "a container lacks CPU or memory requests or limits",
    },
    Rule {
        name: RuleName::AllowedRegistries,
        bsi: &["SYS.1.6.A6", "SYS.1.6.A12"],
        scope: Scope::Pod,
        violation: "an image (of a container or an image volume) comes from a registry the baseline does not allow",
    },
    Rule {
        name: RuleName::ImageDigestRequired,
        bsi: &["SYS.1.6.A6", "SYS.1.6.A12"],
        scope: Scope::Pod,
        violation: "an image (of a container or an image volume) is not pinned by digest (@sha256:...)",
    },
    Rule {
        name: RuleName::LatestTagForbidden,
        bsi: &["SYS.1.6.A6", "SYS.1.6.A12"],
        scope: Scope::Pod,
        violation: "an image uses the latest tag, or neither a tag nor a digest",
    },
    Rule {
        name: RuleName::ProbesRequired,
        bsi: &["APP.4.4.A11", "SYS.1.6.A3"],
        scope: Scope::Pod,
        violation: "a container lacks a readiness or liveness probe",
    },
    Rule {
        name: RuleName::NoDefaultServiceAccount,
        bsi: &["APP.4.4.A9"],
        scope: Scope::Pod,
        violation: "the pod runs as the namespace's default service account",
    },
    Rule {
        name: RuleName::NoServiceAccountTokenAutomount,
        bsi: &["APP.4.4.A9"],
        scope: Scope::Pod,
        violation: "the pod mounts a service account token: set automountServiceAccountToken: false and project no serviceAccountToken volume",
    },
    Rule {
        name: RuleName::NoHostNamespaces,
        bsi: &["APP.4.4.A4"],
        scope: Scope::Pod,
        violation: "the pod shares the node's network, PID or IPC namespace",
    },
    Rule {
        name: RuleName::NoHostPath,
        bsi: &["SYS.1.6.A19"],
        scope: Scope::Pod,
        violation: "the pod mounts a directory of the node (hostPath)",
    },
    Rule {
        name: RuleName::NoHostPorts,
        bsi: &["APP.4.4.A4"],
        scope: Scope::Pod,
        violation: "a container binds a port of the node (hostPort)",
    },
    Rule {
        name: RuleName::KernelIsolation,
        bsi: &["SYS.1.6.A17", "SYS.1.6.A21"],
        scope: Scope::Pod,
        violation: "the pod loosens the kernel's confinement: no Unconfined AppArmor profile, SELinux only with the container types (container_t, container_init_t, container_kvm_t, container_engine_t) and no user or role, procMount Default, only the safe namespaced sysctls, no Windows hostProcess",
    },
    Rule {
        name: RuleName::AllowedVolumeTypes,
        bsi: &["SYS.1.6.A19"],
        scope: Scope::Pod,
        violation: "the pod uses a volume type outside configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected and secret",
    },
    Rule {
        name: RuleName::NoHostProbes,
        bsi: &["APP.4.4.A7"],
        scope: Scope::Pod,
        violation: "a probe or lifecycle hook names a host (httpGet.host, tcpSocket.host): the kubelet would connect to it from the node, past the network policies",
    },
    Rule {
        name: RuleName::EmptyDirSizeLimit,
        bsi: &["SYS.1.6.A15"],
        scope: Scope::Pod,
        violation: "an emptyDir volume has no sizeLimit: it could fill the node's disk",
    },
    Rule {
        name: RuleName::DefaultDenyNetwork,
        bsi: &["APP.4.4.A7", "APP.4.4.A18"],
        scope: Scope::Namespace,
        violation: "the namespace has no default-deny NetworkPolicy for ingress and egress",
    },
    Rule {
        name: RuleName::MinReplicas,
        bsi: &["APP.4.4.A19", "SYS.1.6.A25"],
        scope: Scope::Replicated,
        violation: "the workload runs fewer replicas than the baseline's minimum (through its spec, the scale subresource or an autoscaler's minReplicas)",
    },
    Rule {
        name: RuleName::SpreadAcrossSites,
        bsi: &["APP.4.4.A19", "SYS.1.6.A25"],
        scope: Scope::Replicated,
        violation: "the workload has no topology spread constraint over topology.kubernetes.io/zone",
    },
];

/// The catalogue entry of `name`.
pub fn rule(name: RuleName) -> &'static Rule {
    CATALOGUE
        .iter()
        .find(|r| r.name == name)
        .unwrap_or(&CATALOGUE[0])
}

/// The rule's name as written in `spec.rules` (camelCase).
pub fn rule_key(name: RuleName) -> String {
    serde_json::to_value(name)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// True when `rules` switches `name` on.
pub fn enabled(name: RuleName, rules: &BaselineRules) -> bool {
    match name {
        RuleName::RunAsNonRoot => rules.run_as_non_root,
        RuleName::NoPrivilegeEscalation => rules.no_privilege_escalation,
        RuleName::DropAllCapabilities => rules.drop_all_capabilities,
        RuleName::ReadOnlyRootFilesystem => rules.read_only_root_filesystem,
        RuleName::SeccompRuntimeDefault => rules.seccomp_runtime_default,
        RuleName::ResourceLimitsRequired => rules.resource_limits_required,
        RuleName::AllowedRegistries => !rules.allowed_registries.is_empty(),
        RuleName::ImageDigestRequired => rules.image_digest_required,
        RuleName::LatestTagForbidden => rules.latest_tag_forbidden,
        RuleName::ProbesRequired => rules.probes_required,
        RuleName::NoDefaultServiceAccount => rules.no_default_service_account,
        RuleName::NoServiceAccountTokenAutomount => rules.no_service_account_token_automount,
        RuleName::NoHostNamespaces => rules.no_host_namespaces,
        RuleName::NoHostPath => rules.no_host_path,
        RuleName::NoHostPorts => rules.no_host_ports,
        RuleName::KernelIsolation => rules.kernel_isolation,
        RuleName::AllowedVolumeTypes => rules.allowed_volume_types,
        RuleName::NoHostProbes => rules.no_host_probes,
        RuleName::EmptyDirSizeLimit => rules.empty_dir_size_limit,
        RuleName::DefaultDenyNetwork => rules.default_deny_network,
        RuleName::MinReplicas => rules.min_replicas.is_some(),
        RuleName::SpreadAcrossSites => rules.spread_across_sites,
    }
}

/// The enabled rules of a baseline, in catalogue order.
pub fn enabled_rules(rules: &BaselineRules) -> impl Iterator<Item = &'static Rule> + '_ {
    CATALOGUE.iter().filter(|r| enabled(r.name, rules))
}

/// The message admission and audit give for a violation: rule, what is wrong, BSI IDs.
pub fn message(rule: &Rule) -> String {
    format!(
        "{}: {} (BSI IT-Grundschutz {})",
        rule_key(rule.name),
        rule.violation,
        rule.bsi.join(", ")
    )
}

/// A CEL string literal (single-quoted). Parameters come from a validated schema, but they
/// are escaped anyway: a policy must never be able to change the shape of an expression.
pub fn cel_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The CEL expression that holds when a Pod or workload satisfies `name` with `rules`'
/// parameters. `None` for rules admission cannot check (namespace scope).
pub fn cel(name: RuleName, rules: &BaselineRules) -> Option<String> {
    // Container security context field `f` is set (in `c`).
    let sc = |f: &str| format!("has(c.securityContext) && has(c.securityContext.{f})");
    let pod_sc = |f: &str| {
        format!(
            "has(variables.podSpec.securityContext) && has(variables.podSpec.securityContext.{f})"
        )
    };
    let expression = match name {
        RuleName::RunAsNonRoot => {
            // User or group 0 anywhere is root, whatever runAsNonRoot says.
            let zero = |f: &str, at: &str| format!("(has({at}.{f}) && {at}.{f} == 0)");
            let pod = "variables.podSpec.securityContext";
            let c = "c.securityContext";
            format!(
                "variables.secured.all(c, (({}) ? c.securityContext.runAsNonRoot : ({} && variables.podSpec.securityContext.runAsNonRoot)) && !(has(c.securityContext) && ({} || {}))) && !(has({pod}) && ({} || {} || {} || (has({pod}.supplementalGroups) && 0 in {pod}.supplementalGroups)))",
                sc("runAsNonRoot"),
                pod_sc("runAsNonRoot"),
                zero("runAsUser", c),
                zero("runAsGroup", c),
                zero("runAsUser", pod),
                zero("runAsGroup", pod),
                zero("fsGroup", pod),
            )
        }
        RuleName::NoPrivilegeEscalation => format!(
            "variables.secured.all(c, {} && c.securityContext.allowPrivilegeEscalation == false && !({} && c.securityContext.privileged))",
            sc("allowPrivilegeEscalation"),
            sc("privileged")
        ),
        RuleName::DropAllCapabilities => format!(
            "variables.secured.all(c, {caps} && has(c.securityContext.capabilities.drop) && 'ALL' in c.securityContext.capabilities.drop && (!has(c.securityContext.capabilities.add) || c.securityContext.capabilities.add.all(a, a == 'NET_BIND_SERVICE')))",
            caps = sc("capabilities")
        ),
        RuleName::ReadOnlyRootFilesystem => format!(
            "variables.secured.all(c, {} && c.securityContext.readOnlyRootFilesystem)",
            sc("readOnlyRootFilesystem")
        ),
        RuleName::SeccompRuntimeDefault => format!(
            "variables.secured.all(c, ({}) ? c.securityContext.seccompProfile.type == 'RuntimeDefault' : ({} && variables.podSpec.securityContext.seccompProfile.type == 'RuntimeDefault'))",
            sc("seccompProfile"),
            pod_sc("seccompProfile")
        ),
        RuleName::ResourceLimitsRequired => "variables.containers.all(c, has(c.resources) && has(c.resources.requests) && has(c.resources.limits) && ['cpu', 'memory'].all(r, r in c.resources.requests && r in c.resources.limits))".to_string(),
        RuleName::AllowedRegistries => {
            let registries: Vec<String> = rules
                .allowed_registries
                .iter()
                .map(|r| cel_string(&format!("{}/", r.trim_end_matches('/'))))
                .collect();
            format!(
                "variables.images.all(i, [{}].exists(r, i.startsWith(r)))",
                registries.join(", ")
            )
        }
        RuleName::ImageDigestRequired => {
            "variables.images.all(i, i.contains('@sha256:'))".to_string()
        }
        RuleName::LatestTagForbidden => "variables.images.all(i, !i.split('@')[0].endsWith(':latest') && (i.contains('@') || i.substring(i.lastIndexOf('/') + 1).contains(':')))".to_string(),
        RuleName::ProbesRequired => "variables.podSpec.containers.all(c, has(c.readinessProbe) && has(c.livenessProbe))".to_string(),
        RuleName::NoDefaultServiceAccount => "has(variables.podSpec.serviceAccountName) && !(variables.podSpec.serviceAccountName in ['', 'default'])".to_string(),
        RuleName::NoServiceAccountTokenAutomount => "has(variables.podSpec.automountServiceAccountToken) && variables.podSpec.automountServiceAccountToken == false && (!has(variables.podSpec.volumes) || variables.podSpec.volumes.all(v, !has(v.projected) || !has(v.projected.sources) || v.projected.sources.all(s, !has(s.serviceAccountToken))))".to_string(),
        RuleName::NoHostNamespaces => "!(has(variables.podSpec.hostNetwork) && variables.podSpec.hostNetwork) && !(has(variables.podSpec.hostPID) && variables.podSpec.hostPID) && !(has(variables.podSpec.hostIPC) && variables.podSpec.hostIPC)".to_string(),
        RuleName::NoHostPath => "!has(variables.podSpec.volumes) || variables.podSpec.volumes.all(v, !has(v.hostPath))".to_string(),
        RuleName::NoHostPorts => "variables.containers.all(c, !has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == 0))".to_string(),
        RuleName::KernelIsolation => kernel_isolation_cel(),
        RuleName::AllowedVolumeTypes => format!(
            "!has(variables.podSpec.volumes) || variables.podSpec.volumes.all(v, {})",
            OTHER_VOLUME_TYPES
                .map(|t| format!("!has(v.{t})"))
                .join(" && ")
        ),
        RuleName::NoHostProbes => {
            let handler = |h: &str| {
                format!("(!has({h}) || ((!has({h}.httpGet) || !has({h}.httpGet.host) || {h}.httpGet.host == '') && (!has({h}.tcpSocket) || !has({h}.tcpSocket.host) || {h}.tcpSocket.host == '')))")
            };
            let hooks = ["c.readinessProbe", "c.livenessProbe", "c.startupProbe"]
                .map(handler)
                .join(" && ");
            format!(
                "variables.secured.all(c, {hooks} && (!has(c.lifecycle) || ({} && {})))",
                handler("c.lifecycle.postStart"),
                handler("c.lifecycle.preStop")
            )
        }
        RuleName::EmptyDirSizeLimit => "!has(variables.podSpec.volumes) || variables.podSpec.volumes.all(v, !has(v.emptyDir) || has(v.emptyDir.sizeLimit))".to_string(),
        RuleName::DefaultDenyNetwork => return None,
        RuleName::MinReplicas => {
            let min = rules.min_replicas.unwrap_or(1);
            // A scale request carries the new count; an autoscaler its lower bound (1 when
            // unset); a workload its spec.
            format!(
                "(has(request.subResource) && request.subResource == 'scale') ? (has(dyn(object).spec.replicas) ? dyn(object).spec.replicas : 0) >= {min} : (object.kind == 'HorizontalPodAutoscaler' ? (has(dyn(object).spec.minReplicas) ? dyn(object).spec.minReplicas : 1) >= {min} : (!{REPLICATED_CEL} || (has(dyn(object).spec.replicas) ? dyn(object).spec.replicas : 1) >= {min}))"
            )
        }
        RuleName::SpreadAcrossSites => format!(
            "!{REPLICATED_CEL} || (has(variables.podSpec.topologySpreadConstraints) && variables.podSpec.topologySpreadConstraints.exists(t, t.topologyKey == {}))",
            cel_string(ZONE)
        ),
    };
    Some(expression)
}

/// The volume sources `allowedVolumeTypes` refuses: every one of the v1 API but those Pod
/// Security's `restricted` level allows (configMap, csi, downwardAPI, emptyDir, ephemeral,
/// persistentVolumeClaim, projected, secret) and image volumes, which the image rules vet like
/// containers. Node disks, network file systems, cloud disks outside a CSI driver's control,
/// git repositories (cloned by the kubelet) and hostPath.
pub const OTHER_VOLUME_TYPES: [&str; 21] = [
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "iscsi",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// SELinux types a container may run with (Pod Security's list); empty means the runtime's.
pub const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Namespaced sysctls Pod Security knows to be safe: they cannot reach other pods or the node.
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// CEL: a list literal of strings.
fn cel_list(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| cel_string(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CEL of `kernelIsolation`: for the pod's and every container's security context (`s`).
fn kernel_isolation_cel() -> String {
    let confined = |s: &str| {
        format!(
            "!has({s}) || ((!has({s}.appArmorProfile) || {s}.appArmorProfile.type != 'Unconfined') && (!has({s}.seLinuxOptions) || ((!has({s}.seLinuxOptions.type) || {s}.seLinuxOptions.type in [{types}]) && (!has({s}.seLinuxOptions.user) || {s}.seLinuxOptions.user == '') && (!has({s}.seLinuxOptions.role) || {s}.seLinuxOptions.role == ''))) && (!has({s}.windowsOptions) || !has({s}.windowsOptions.hostProcess) || !{s}.windowsOptions.hostProcess))",
            types = cel_list(&SELINUX_TYPES)
        )
    };
    let pod = "variables.podSpec.securityContext";
    format!(
        "({}) && (!has({pod}) || !has({pod}.sysctls) || {pod}.sysctls.all(x, x.name in [{}])) && variables.secured.all(c, ({}) && (!has(c.securityContext) || !has(c.securityContext.procMount) || c.securityContext.procMount == 'Default'))",
        confined(pod),
        cel_list(&SAFE_SYSCTLS),
        confined("c.securityContext"),
    )
}

/// A Pod or a workload with a pod template, as the audit sees it.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob.
    pub kind: &'a str,
    /// `spec.replicas` of a Deployment or StatefulSet as stored (the API server defaults it).
    pub replicas: Option<i32>,
    pub pod: &'a PodSpec,
}

fn all_containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
}

/// A container as the privilege and image rules see it: its security context and image.
#[derive(Debug, Clone, Copy)]
struct Secured<'a> {
    security: Option<&'a SecurityContext>,
    image: &'a str,
}

/// Containers, init containers and ephemeral (debug) containers.
fn secured(pod: &PodSpec) -> impl Iterator<Item = Secured<'_>> {
    all_containers(pod)
        .map(|c| Secured {
            security: c.security_context.as_ref(),
            image: c.image.as_deref().unwrap_or_default(),
        })
        .chain(pod.ephemeral_containers.iter().flatten().map(|c| Secured {
            security: c.security_context.as_ref(),
            image: c.image.as_deref().unwrap_or_default(),
        }))
}

/// Every image reference of a pod: its containers' (debug containers included) and its image
/// volumes', which the kubelet pulls the same way.
fn images(pod: &PodSpec) -> impl Iterator<Item = &str> {
    secured(pod).map(|c| c.image).chain(
        pod.volumes
            .iter()
            .flatten()
            .filter_map(|v| v.image.as_ref())
            .map(|i| i.reference.as_deref().unwrap_or_default()),
    )
}

/// Does the pod stay confined by the kernel (the `kernelIsolation` rule)?
fn kernel_confined(pod: &PodSpec) -> bool {
    fn confined(
        app_armor: Option<&AppArmorProfile>,
        se_linux: Option<&SELinuxOptions>,
        windows: Option<&WindowsSecurityContextOptions>,
    ) -> bool {
        app_armor.is_none_or(|p| p.type_ != "Unconfined")
            && se_linux.is_none_or(|o| {
                SELINUX_TYPES.contains(&o.type_.as_deref().unwrap_or_default())
                    && o.user.as_deref().unwrap_or_default().is_empty()
                    && o.role.as_deref().unwrap_or_default().is_empty()
            })
            && windows.and_then(|w| w.host_process) != Some(true)
    }
    let pod_sc = pod.security_context.as_ref();
    let pod_ok = pod_sc.is_none_or(|s| {
        confined(
            s.app_armor_profile.as_ref(),
            s.se_linux_options.as_ref(),
            s.windows_options.as_ref(),
        ) && s
            .sysctls
            .iter()
            .flatten()
            .all(|x| SAFE_SYSCTLS.contains(&x.name.as_str()))
    });
    pod_ok
        && secured(pod).all(|c| {
            c.security.is_none_or(|s| {
                confined(
                    s.app_armor_profile.as_ref(),
                    s.se_linux_options.as_ref(),
                    s.windows_options.as_ref(),
                ) && s.proc_mount.as_deref().is_none_or(|m| m == "Default")
            })
        })
}

/// Is the volume of a type the `allowedVolumeTypes` rule admits? (Its sources by their JSON
/// names, as CEL sees them.)
fn volume_type_allowed(volume: &Volume) -> bool {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .is_some_and(|fields| {
            fields
                .keys()
                .all(|k| !OTHER_VOLUME_TYPES.contains(&k.as_str()))
        })
}

/// The hosts of every probe and lifecycle hook of every container: (httpGet.host, tcpSocket.host).
fn secured_handlers(pod: &PodSpec) -> impl Iterator<Item = (Option<&str>, Option<&str>)> {
    fn of_probe(p: Option<&Probe>) -> Option<(Option<&str>, Option<&str>)> {
        p.map(|p| {
            (
                p.http_get.as_ref().and_then(|h| h.host.as_deref()),
                p.tcp_socket.as_ref().and_then(|t| t.host.as_deref()),
            )
        })
    }
    fn of_hook(h: Option<&LifecycleHandler>) -> Option<(Option<&str>, Option<&str>)> {
        h.map(|h| {
            (
                h.http_get.as_ref().and_then(|h| h.host.as_deref()),
                h.tcp_socket.as_ref().and_then(|t| t.host.as_deref()),
            )
        })
    }
    let containers = all_containers(pod).map(|c| {
        (
            c.readiness_probe.as_ref(),
            c.liveness_probe.as_ref(),
            c.startup_probe.as_ref(),
            c.lifecycle.as_ref(),
        )
    });
    let debug = pod.ephemeral_containers.iter().flatten().map(|c| {
        (
            c.readiness_probe.as_ref(),
            c.liveness_probe.as_ref(),
            c.startup_probe.as_ref(),
            c.lifecycle.as_ref(),
        )
    });
    containers
        .chain(debug)
        .flat_map(|(readiness, liveness, startup, lifecycle)| {
            [
                of_probe(readiness),
                of_probe(liveness),
                of_probe(startup),
                of_hook(lifecycle.and_then(|l| l.post_start.as_ref())),
                of_hook(lifecycle.and_then(|l| l.pre_stop.as_ref())),
            ]
        })
        .flatten()
}

/// True when a security context names user or group 0 (root) anywhere.
fn names_root(user: Option<i64>, group: Option<i64>) -> bool {
    user == Some(0) || group == Some(0)
}

/// True when a pod may mount a service account token: automounted, or a projected token
/// volume of its own.
fn mounts_token(pod: &PodSpec) -> bool {
    pod.automount_service_account_token != Some(false)
        || pod.volumes.iter().flatten().any(|v| {
            v.projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .is_some_and(|s| s.iter().any(|s| s.service_account_token.is_some()))
        })
}

/// Is `image` from one of `registries` (prefix up to a `/`)?
pub fn image_from(image: &str, registries: &[String]) -> bool {
    registries
        .iter()
        .any(|r| image.starts_with(&format!("{}/", r.trim_end_matches('/'))))
}

/// Is `image` pinned by a sha256 digest?
pub fn image_pinned(image: &str) -> bool {
    image.contains("@sha256:")
}

/// Does `image` avoid the `latest` tag, and name a tag or a digest?
pub fn image_tagged(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    if name.ends_with(":latest") {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    image.contains('@') || last.contains(':')
}

/// True when `workload` satisfies `name` with `rules`' parameters (the Rust twin of `cel`).
/// Namespace-scope rules are not about a workload: they hold here.
pub fn satisfied(name: RuleName, rules: &BaselineRules, workload: &Workload<'_>) -> bool {
    let pod = workload.pod;
    let pod_sc = pod.security_context.as_ref();
    let replicated = REPLICATED_KINDS.contains(&workload.kind);
    match name {
        RuleName::RunAsNonRoot => {
            let pod_root = pod_sc.is_some_and(|s| {
                names_root(s.run_as_user, s.run_as_group)
                    || s.fs_group == Some(0)
                    || s.supplemental_groups.iter().flatten().any(|g| *g == 0)
            });
            !pod_root
                && secured(pod).all(|c| {
                    let non_root = match c.security.and_then(|s| s.run_as_non_root) {
                        Some(set) => set,
                        None => pod_sc.and_then(|s| s.run_as_non_root).unwrap_or(false),
                    };
                    non_root
                        && !c
                            .security
                            .is_some_and(|s| names_root(s.run_as_user, s.run_as_group))
                })
        }
        RuleName::NoPrivilegeEscalation => secured(pod).all(|c| {
            c.security.and_then(|s| s.allow_privilege_escalation) == Some(false)
                && c.security.and_then(|s| s.privileged) != Some(true)
        }),
        RuleName::DropAllCapabilities => secured(pod).all(|c| {
            c.security
                .and_then(|s| s.capabilities.as_ref())
                .is_some_and(|caps| {
                    caps.drop
                        .as_ref()
                        .is_some_and(|d| d.iter().any(|d| d == "ALL"))
                        && caps.add.iter().flatten().all(|a| a == "NET_BIND_SERVICE")
                })
        }),
        RuleName::ReadOnlyRootFilesystem => {
            secured(pod).all(|c| c.security.and_then(|s| s.read_only_root_filesystem) == Some(true))
        }
        RuleName::SeccompRuntimeDefault => secured(pod).all(|c| {
            let profile = c
                .security
                .and_then(|s| s.seccomp_profile.as_ref())
                .or_else(|| pod_sc.and_then(|s| s.seccomp_profile.as_ref()));
            profile.is_some_and(|p| p.type_ == "RuntimeDefault")
        }),
        RuleName::ResourceLimitsRequired => all_containers(pod).all(|c| {
            let resources = c.resources.as_ref();
            let has = |m: Option<&std::collections::BTreeMap<String, _>>| {
                m.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
            };
            has(resources.and_then(|r| r.requests.as_ref()))
                && has(resources.and_then(|r| r.limits.as_ref()))
        }),
        RuleName::AllowedRegistries => {
            images(pod).all(|image| image_from(image, &rules.allowed_registries))
        }
        RuleName::ImageDigestRequired => images(pod).all(image_pinned),
        RuleName::LatestTagForbidden => images(pod).all(image_tagged),
        RuleName::ProbesRequired => pod
            .containers
            .iter()
            .all(|c| c.readiness_probe.is_some() && c.liveness_probe.is_some()),
        RuleName::NoDefaultServiceAccount => pod
            .service_account_name
            .as_deref()
            .is_some_and(|n| !n.is_empty() && n != "default"),
        RuleName::NoServiceAccountTokenAutomount => !mounts_token(pod),
        RuleName::NoHostNamespaces => {
            pod.host_network != Some(true)
                && pod.host_pid != Some(true)
                && pod.host_ipc != Some(true)
        }
        RuleName::NoHostPath => pod.volumes.iter().flatten().all(|v| v.host_path.is_none()),
        RuleName::NoHostPorts => all_containers(pod).all(|c| {
            c.ports
                .iter()
                .flatten()
                .all(|p| p.host_port.unwrap_or(0) == 0)
        }),
        RuleName::KernelIsolation => kernel_confined(pod),
        RuleName::AllowedVolumeTypes => pod.volumes.iter().flatten().all(volume_type_allowed),
        RuleName::NoHostProbes => secured_handlers(pod)
            .all(|(http, tcp)| http.is_none_or(str::is_empty) && tcp.is_none_or(str::is_empty)),
        RuleName::EmptyDirSizeLimit => pod
            .volumes
            .iter()
            .flatten()
            .all(|v| v.empty_dir.as_ref().is_none_or(|e| e.size_limit.is_some())),
        RuleName::DefaultDenyNetwork => true,
        RuleName::MinReplicas => {
            !replicated || workload.replicas.unwrap_or(1) >= rules.min_replicas.unwrap_or(1)
        }
        RuleName::SpreadAcrossSites => {
            !replicated
                || pod
                    .topology_spread_constraints
                    .iter()
                    .flatten()
                    .any(|t| t.topology_key == ZONE)
        }
    }
}

/// The enabled workload rules `workload` violates, in catalogue order.
pub fn violations(rules: &BaselineRules, workload: &Workload<'_>) -> Vec<RuleName> {
    enabled_rules(rules)
        .filter(|r| r.scope != Scope::Namespace)
        .filter(|r| !satisfied(r.name, rules, workload))
        .map(|r| r.name)
        .collect()
}

/// What the audit keeps of a Pod or workload, decided once when it is read: enough to judge it
/// against any baseline without keeping its pod spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadFacts {
    /// Replicated kinds' `spec.replicas` (the minReplicas rule's parameter meets it).
    pub replicas: Option<i32>,
    pub replicated: bool,
    /// Every image (the allowedRegistries rule's parameter meets them).
    pub images: Vec<String>,
    /// The rules without parameters it satisfies, one bit per catalogue entry.
    satisfied: u32,
}

/// Rules whose verdict depends on the baseline's parameters, not only on the workload.
fn parametric(name: RuleName) -> bool {
    matches!(name, RuleName::AllowedRegistries | RuleName::MinReplicas)
}

fn bit(name: RuleName) -> u32 {
    CATALOGUE
        .iter()
        .position(|r| r.name == name)
        .map_or(0, |i| 1 << i)
}

/// The facts of `workload`.
pub fn facts(workload: &Workload<'_>) -> WorkloadFacts {
    let neutral = BaselineRules::default();
    let satisfied = CATALOGUE
        .iter()
        .filter(|r| !parametric(r.name) && r.scope != Scope::Namespace)
        .filter(|r| satisfied(r.name, &neutral, workload))
        .fold(0, |bits, r| bits | bit(r.name));
    WorkloadFacts {
        replicas: workload.replicas,
        replicated: REPLICATED_KINDS.contains(&workload.kind),
        images: images(workload.pod).map(str::to_string).collect(),
        satisfied,
    }
}

/// The enabled workload rules a workload with `facts` violates, in catalogue order: the same
/// verdict as [`violations`] on the workload itself.
pub fn violations_of(rules: &BaselineRules, facts: &WorkloadFacts) -> Vec<RuleName> {
    enabled_rules(rules)
        .filter(|r| r.scope != Scope::Namespace)
        .filter(|r| match r.name {
            RuleName::AllowedRegistries => !facts
                .images
                .iter()
                .all(|image| image_from(image, &rules.allowed_registries)),
            RuleName::MinReplicas => {
                facts.replicated && facts.replicas.unwrap_or(1) < rules.min_replicas.unwrap_or(1)
            }
            name => facts.satisfied & bit(name) == 0,
        })
        .map(|r| r.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::fixtures;

    #[test]
    fn facts_give_the_same_verdict_as_the_workload_under_every_baseline() {
        let mut baselines = vec![fixtures::all_rules(), BaselineRules::default()];
        let text = include_str!("../../../examples/saarland/10-baselines.yaml");
        for doc in serde_yaml::Deserializer::from_str(text) {
            let b: crate::api::SecurityBaseline =
                serde::Deserialize::deserialize(doc).expect("baseline");
            baselines.push(b.spec.rules);
        }
        let mut checked = 0;
        for fixture in fixtures::compliant()
            .into_iter()
            .chain(fixtures::violating())
        {
            let owned = fixture.workload();
            let workload = owned.as_workload();
            let facts = facts(&workload);
            for rules in &baselines {
                assert_eq!(
                    violations_of(rules, &facts),
                    violations(rules, &workload),
                    "{}",
                    fixture.name
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn every_rule_is_in_the_catalogue_once_with_bsi_ids() {
        for (i, rule) in CATALOGUE.iter().enumerate() {
            assert!(!rule.bsi.is_empty(), "{:?} has no BSI ID", rule.name);
            assert!(
                CATALOGUE[i + 1..].iter().all(|r| r.name != rule.name),
                "{:?} twice",
                rule.name
            );
            assert!(
                rule.bsi
                    .iter()
                    .all(|id| id.starts_with("SYS.1.6.A") || id.starts_with("APP.4.4.A"))
            );
        }
    }

    #[test]
    fn every_pod_rule_has_a_cel_expression_and_namespace_rules_do_not() {
        let rules = fixtures::all_rules();
        for rule in &CATALOGUE {
            assert_eq!(
                cel(rule.name, &rules).is_some(),
                rule.scope != Scope::Namespace,
                "{:?}",
                rule.name
            );
        }
    }

    #[test]
    fn the_compliant_fixtures_satisfy_every_rule() {
        let rules = fixtures::all_rules();
        for fixture in fixtures::compliant() {
            let workload = fixture.workload();
            assert_eq!(
                violations(&rules, &workload.as_workload()),
                Vec::<RuleName>::new(),
                "{}",
                fixture.name
            );
        }
    }

    #[test]
    fn each_violating_fixture_breaks_exactly_its_rule() {
        let rules = fixtures::all_rules();
        for fixture in fixtures::violating() {
            let workload = fixture.workload();
            assert_eq!(
                violations(&rules, &workload.as_workload()),
                fixture.expected.clone(),
                "{}",
                fixture.name
            );
        }
    }

    #[test]
    fn image_references_are_read_like_a_container_runtime() {
        assert!(image_tagged("registry.saarland.de:5000/x:1.2"));
        assert!(
            !image_tagged("registry.saarland.de:5000/x"),
            "a port is not a tag"
        );
        assert!(!image_tagged("registry.saarland.de/x:latest"));
        assert!(image_tagged("registry.saarland.de/x@sha256:abc"));
        assert!(!image_tagged("registry.saarland.de/x:latest@sha256:abc"));
        assert!(image_from(
            "registry.saarland.de/portal/x:1",
            &["registry.saarland.de/portal/".into()]
        ));
        assert!(!image_from(
            "registry.saarland.de.evil.example/x:1",
            &["registry.saarland.de".into()]
        ));
    }

    #[test]
    fn parameters_cannot_break_out_of_a_cel_string() {
        assert_eq!(cel_string(r"a'b\c"), r"'a\'b\\c'");
    }
}
