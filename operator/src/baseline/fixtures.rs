//! Example workloads for the rule catalogue: compliant ones of every kind a baseline covers,
//! and for each rule one that breaks exactly that rule. The unit tests check the Rust side on
//! them; `tests/` posts the same objects to the API server to check the CEL side.

use serde_json::{Value, json};

use super::workload::{OwnedWorkload, workload_of};
use crate::api::security_baseline::{BaselineRules, RuleName};

/// The registry the fixtures' images come from.
pub const REGISTRY: &str = "registry.saarland.de/portal";
/// The service account the fixtures run as (create it in the namespace before posting).
pub const SERVICE_ACCOUNT: &str = "portal-fixture";
const DIGEST: &str = "sha256:0d9c4e4d1c6ff5a1a5d7e2c1b6ef0f7b2a53c9f1d8e7c6b5a4f3e2d1c0b9a8f7";

/// A baseline switching every rule on (two replicas, the fixtures' registry).
pub fn all_rules() -> BaselineRules {
    BaselineRules {
        run_as_non_root: true,
        no_privilege_escalation: true,
        drop_all_capabilities: true,
        read_only_root_filesystem: true,
        seccomp_runtime_default: true,
        resource_limits_required: true,
        allowed_registries: vec![REGISTRY.into()],
        image_digest_required: true,
        latest_tag_forbidden: true,
        probes_required: true,
        no_default_service_account: true,
        no_service_account_token_automount: true,
        no_host_namespaces: true,
        no_host_path: true,
        no_host_ports: true,
        kernel_isolation: true,
        allowed_volume_types: true,
        no_host_probes: true,
        empty_dir_size_limit: true,
        default_deny_network: true,
        min_replicas: Some(2),
        spread_across_sites: true,
    }
}

/// One example object and the rules it breaks under `all_rules()`, in catalogue order.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub object: Value,
    pub expected: Vec<RuleName>,
}

impl Fixture {
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    /// The workload the audit would see.
    pub fn workload(&self) -> OwnedWorkload {
        workload_of(&self.object).unwrap_or_default()
    }
}

/// A pod spec that satisfies every rule of `all_rules()`.
fn compliant_pod_spec() -> Value {
    json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "containers": [{
            "name": "app",
            "image": format!("{REGISTRY}/fixture:1.0@{DIGEST}"),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}
            },
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "200m", "memory": "128Mi"}
            },
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
            "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}}
        }],
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "fixture"}}
        }]
    })
}

/// `spec` wrapped in an object of `kind` named `name`.
pub fn wrap(kind: &str, name: &str, mut spec: Value, replicas: i64) -> Value {
    let labels = json!({"app": "fixture"});
    let batch = matches!(kind, "Job" | "CronJob");
    if batch {
        spec["restartPolicy"] = json!("Never");
    }
    let template = json!({"metadata": {"labels": labels}, "spec": spec});
    let (api_version, body) = match kind {
        "Pod" => ("v1", json!({"metadata": {"labels": labels}, "spec": spec})),
        "Deployment" | "StatefulSet" | "ReplicaSet" => (
            "apps/v1",
            json!({"spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}}),
        ),
        "DaemonSet" => (
            "apps/v1",
            json!({"spec": {"selector": {"matchLabels": labels}, "template": template}}),
        ),
        "Job" => ("batch/v1", json!({"spec": {"template": template}})),
        _ => (
            "batch/v1",
            json!({"spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}}),
        ),
    };
    let mut object = body;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    object["metadata"]["name"] = json!(name);
    object
}

/// Compliant objects of every kind a baseline covers.
pub fn compliant() -> Vec<Fixture> {
    [
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
    ]
    .iter()
    .map(|kind| Fixture {
        name: format!("compliant-{}", kind.to_lowercase()),
        object: wrap(
            kind,
            &format!("compliant-{}", kind.to_lowercase()),
            compliant_pod_spec(),
            2,
        ),
        expected: Vec::new(),
    })
    .collect()
}

/// How each rule is broken: a change to the compliant pod spec (and the replica count).
fn breach(rule: RuleName, spec: &mut Value, replicas: &mut i64) {
    let container = &mut spec["containers"][0];
    match rule {
        RuleName::RunAsNonRoot => {
            spec["securityContext"]["runAsNonRoot"] = json!(false);
            spec["securityContext"]["runAsUser"] = json!(0);
        }
        RuleName::NoPrivilegeEscalation => {
            container["securityContext"]["allowPrivilegeEscalation"] = json!(true)
        }
        RuleName::DropAllCapabilities => {
            container["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"])
        }
        RuleName::ReadOnlyRootFilesystem => {
            container["securityContext"]["readOnlyRootFilesystem"] = json!(false)
        }
        RuleName::SeccompRuntimeDefault => {
            container["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"})
        }
        RuleName::ResourceLimitsRequired => {
            if let Some(resources) = container["resources"].as_object_mut() {
                resources.remove("limits");
            }
        }
        RuleName::AllowedRegistries => {
            container["image"] = json!(format!("docker.io/library/nginx:1.27@{DIGEST}"))
        }
        RuleName::ImageDigestRequired => {
            container["image"] = json!(format!("{REGISTRY}/fixture:1.0"))
        }
        RuleName::LatestTagForbidden => {
            container["image"] = json!(format!("{REGISTRY}/fixture:latest@{DIGEST}"))
        }
        RuleName::ProbesRequired => {
            if let Some(c) = container.as_object_mut() {
                c.remove("livenessProbe");
            }
        }
        RuleName::NoDefaultServiceAccount => {
            if let Some(s) = spec.as_object_mut() {
                s.remove("serviceAccountName");
            }
        }
        RuleName::NoServiceAccountTokenAutomount => {
            if let Some(s) = spec.as_object_mut() {
                s.remove("automountServiceAccountToken");
            }
        }
        RuleName::NoHostNamespaces => spec["hostPID"] = json!(true),
        RuleName::NoHostPath => {
            spec["volumes"] = json!([{"name": "node-logs", "hostPath": {"path": "/var/log"}}])
        }
        RuleName::NoHostPorts => {
            container["ports"] = json!([{"name": "http", "containerPort": 8080, "hostPort": 8080}])
        }
        RuleName::KernelIsolation => {
            container["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"})
        }
        RuleName::AllowedVolumeTypes => {
            spec["volumes"] =
                json!([{"name": "share", "nfs": {"server": "nfs.example.org", "path": "/export"}}])
        }
        RuleName::NoHostProbes => {
            container["readinessProbe"]["httpGet"]["host"] = json!("169.254.169.254")
        }
        RuleName::EmptyDirSizeLimit => {
            spec["volumes"] = json!([{"name": "scratch", "emptyDir": {}}])
        }
        RuleName::DefaultDenyNetwork => {}
        RuleName::MinReplicas => *replicas = 1,
        RuleName::SpreadAcrossSites => {
            if let Some(s) = spec.as_object_mut() {
                s.remove("topologySpreadConstraints");
            }
        }
    }
}

/// An object of `kind` that breaks `rule` (and nothing else, but for hostPath, which is a
/// volume type outside the allowed ones too).
pub fn breaking(rule: RuleName, kind: &str) -> Fixture {
    let mut spec = compliant_pod_spec();
    let mut replicas = 2;
    breach(rule, &mut spec, &mut replicas);
    let name = format!(
        "{}-{}",
        super::rules::rule_key(rule).to_lowercase(),
        kind.to_lowercase()
    );
    // A hostPath volume is also a volume type outside the allowed ones.
    let expected = match rule {
        RuleName::NoHostPath => vec![rule, RuleName::AllowedVolumeTypes],
        _ => vec![rule],
    };
    Fixture {
        object: wrap(kind, &name, spec, replicas),
        name,
        expected,
    }
}

/// Less obvious ways to break a rule: root by group, an image volume from elsewhere or not
/// pinned, a projected token despite automount off. Each breaks exactly its rule.
pub fn evasions() -> Vec<Fixture> {
    let evasion = |name: &str, rule: RuleName, change: &dyn Fn(&mut Value)| {
        let mut spec = compliant_pod_spec();
        change(&mut spec);
        Fixture {
            name: name.to_string(),
            object: wrap("Pod", name, spec, 2),
            expected: vec![rule],
        }
    };
    let image_volume = |image: String| {
        move |spec: &mut Value| {
            spec["volumes"] = json!([{"name": "data", "image": {"reference": image, "pullPolicy": "IfNotPresent"}}]);
        }
    };
    vec![
        evasion("root-group", RuleName::RunAsNonRoot, &|spec| {
            spec["securityContext"]["runAsGroup"] = json!(0)
        }),
        evasion("root-fsgroup", RuleName::RunAsNonRoot, &|spec| {
            spec["securityContext"]["fsGroup"] = json!(0)
        }),
        evasion("root-supplemental-group", RuleName::RunAsNonRoot, &|spec| {
            spec["securityContext"]["supplementalGroups"] = json!([1000, 0])
        }),
        evasion("root-user-in-container", RuleName::RunAsNonRoot, &|spec| {
            spec["containers"][0]["securityContext"]["runAsUser"] = json!(0)
        }),
        evasion(
            "image-volume-foreign-registry",
            RuleName::AllowedRegistries,
            &image_volume(format!("docker.io/library/busybox:1.36@{DIGEST}")),
        ),
        evasion(
            "image-volume-unpinned",
            RuleName::ImageDigestRequired,
            &image_volume(format!("{REGISTRY}/data:1.0")),
        ),
        evasion(
            "selinux-super-privileged",
            RuleName::KernelIsolation,
            &|spec| spec["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"}),
        ),
        evasion("selinux-role", RuleName::KernelIsolation, &|spec| {
            spec["containers"][0]["securityContext"]["seLinuxOptions"] = json!({"role": "system_r"})
        }),
        evasion("unsafe-sysctl", RuleName::KernelIsolation, &|spec| {
            spec["securityContext"]["sysctls"] =
                json!([{"name": "kernel.msgmax", "value": "65536"}])
        }),
        evasion("lifecycle-hook-host", RuleName::NoHostProbes, &|spec| {
            spec["containers"][0]["lifecycle"] =
                json!({"postStart": {"httpGet": {"host": "10.0.0.1", "path": "/", "port": 80}}})
        }),
        evasion(
            "projected-token",
            RuleName::NoServiceAccountTokenAutomount,
            &|spec| {
                spec["volumes"] = json!([{"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
                ]}}]);
                spec["containers"][0]["volumeMounts"] =
                    json!([{"name": "token", "mountPath": "/var/run/token", "readOnly": true}]);
            },
        ),
    ]
}

/// For every rule admission checks, a Pod (where the rule applies to pods) and a Deployment
/// breaking it; and a few other kinds, so every way to reach a pod template is exercised.
pub fn violating() -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    for rule in super::rules::CATALOGUE.iter() {
        match rule.scope {
            super::rules::Scope::Pod => {
                fixtures.push(breaking(rule.name, "Pod"));
                fixtures.push(breaking(rule.name, "Deployment"));
            }
            super::rules::Scope::Replicated => {
                fixtures.push(breaking(rule.name, "Deployment"));
                fixtures.push(breaking(rule.name, "StatefulSet"));
            }
            super::rules::Scope::Namespace => {}
        }
    }
    for (rule, kind) in [
        (RuleName::RunAsNonRoot, "CronJob"),
        (RuleName::NoHostPath, "Job"),
        (RuleName::AllowedRegistries, "DaemonSet"),
        (RuleName::ProbesRequired, "ReplicaSet"),
        (RuleName::SeccompRuntimeDefault, "StatefulSet"),
        (RuleName::MinReplicas, "ReplicaSet"),
    ] {
        fixtures.push(breaking(rule, kind));
    }
    fixtures.extend(evasions());
    fixtures
}
