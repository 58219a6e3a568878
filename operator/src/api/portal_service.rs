//! `PortalService`: one online service of the citizens' portal, deployed, placed and scaled by
//! Verbund.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, Conditions, ProtectionLevel};

/// One online service of the portal (an OZG service, the citizen account, the front end),
/// owned by the tenant whose namespace it lives in. Verbund runs it as a hardened Deployment
/// placed on the sites certified for its protection need, with Service, autoscaler,
/// disruption budget, network policy and, when exposed, an Ingress.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "verbund.saarland.de",
    version = "v1alpha1",
    kind = "PortalService",
    doc = "One online service of the citizens' portal (an OZG service, the citizen account, the front end) with its catalogue entry. Verbund runs it as a hardened Deployment on the sites certified for its protection need, spread over them, scaled for scheduled peaks within the tenant's quota, with Service, autoscaler, disruption budget, network policy and, when exposed, an Ingress.",
    plural = "portalservices",
    shortname = "ps",
    category = "verbund",
    namespaced,
    status = "PortalServiceStatus",
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63").message("metadata.name must be a DNS label starting with a letter (at most 63 characters): it names the Service"),
    validation = Rule::new("!self.metadata.name.startsWith('verbund-')").message("metadata.name: names starting with verbund- are reserved for the guard rails Verbund keeps in every tenant namespace"),
    printcolumn = r#"{"name":"Service Key","type":"string","jsonPath":".spec.catalog.serviceKey","description":"Leistungsschlüssel (LeiKa)"}"#,
    printcolumn = r#"{"name":"Protection","type":"string","jsonPath":".spec.protectionLevel","priority":1}"#,
    printcolumn = r#"{"name":"Ready Pods","type":"integer","jsonPath":".status.replicas.ready"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.replicas.desired"}"#,
    printcolumn = r#"{"name":"Sites","type":"string","jsonPath":".status.siteSummary","description":"Ready pods per site"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.scaling) || !has(self.scaling.windows) || self.scaling.windows.all(w, w.minReplicas >= self.replicas.min && w.minReplicas <= self.replicas.max)").message("each spec.scaling.windows[].minReplicas must lie between spec.replicas.min and spec.replicas.max").field_path(".scaling"))]
#[x_kube(validation = Rule::new("!has(self.probes) || !has(self.probes.port) || self.ports.exists(p, p.name == self.probes.port)").message("spec.probes.port must name one of spec.ports").field_path(".probes.port"))]
pub struct PortalServiceSpec {
    /// Container image, e.g. "registry.saarland.de/portal/wohnsitz:2.4.1". The namespace's
    /// baseline may require a digest and an allowed registry.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^\s]+$"))]
    pub image: String,

    /// Entrypoint; empty means the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,

    /// Environment variables, as values or references to Secret keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// Ports the service listens on. Names and numbers unique.
    #[schemars(length(min = 1, max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.port == p.port))").message("spec.ports: each port number may appear only once"))]
    pub ports: Vec<ServicePort>,

    /// Lower and upper bound of the number of pods.
    #[serde(default)]
    pub replicas: Replicas,

    /// Autoscaling target and scheduled peak windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,

    /// CPU and memory per pod.
    #[serde(default)]
    pub resources: Resources,

    /// Protection need (Schutzbedarf) of the service; at most the tenant's. Decides which
    /// sites may run it and which baseline applies.
    #[serde(default)]
    pub protection_level: ProtectionLevel,

    /// Where the service may run and how its pods spread over the sites.
    #[serde(default)]
    pub placement: Placement,

    /// Health checks. Without them Verbund probes the first port's `/healthz` (HTTP) or the
    /// gRPC health service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,

    /// Publication on the portal domain (an Ingress). Absent: reachable inside the cluster only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,

    /// How the service appears in the catalogue of online services. Absent for parts of the
    /// portal that are not themselves administrative services (front end, citizen account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
}

/// An environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretKeyRef)").message("an env entry sets exactly one of value or secretKeyRef"))]
pub struct EnvVar {
    /// Variable name.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// A key of a Secret in the service's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A port the service listens on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name (IANA service name: lowercase, at most 15 characters), e.g. "http".
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `Http` (default) or `Grpc`.
    #[serde(default)]
    pub protocol: AppProtocol,
}

/// Application protocol of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AppProtocol {
    /// HTTP/1.1 or HTTP/2.
    #[default]
    Http,
    /// gRPC.
    Grpc,
}

/// Bounds of the number of pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("spec.replicas.min must not exceed spec.replicas.max"))]
pub struct Replicas {
    /// Fewest pods, also outside peak windows.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min: i32,
    /// Most pods the autoscaler may run (lowered further when the tenant's quota is short).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub max: i32,
}

fn default_min_replicas() -> i32 {
    2
}

fn default_max_replicas() -> i32 {
    6
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            min: default_min_replicas(),
            max: default_max_replicas(),
        }
    }
}

/// Autoscaling settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Average CPU utilisation (percent of requests) the autoscaler aims for.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 10, max = 95))]
    pub target_cpu_utilization: i32,
    /// Scheduled peaks: while a window is active, at least its `minReplicas` pods run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub windows: Vec<ScalingWindow>,
}

fn default_target_cpu() -> i32 {
    70
}

/// A recurring period of expected high demand, e.g. Monday mornings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start < self.end").message("a scaling window must start before it ends (start < end, same day)").field_path(".end"))]
pub struct ScalingWindow {
    /// Name of the window, e.g. "montagmorgen".
    #[schemars(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN))]
    pub name: String,
    /// Days of the week the window recurs on.
    #[schemars(length(min = 1, max = 7), extend("x-kubernetes-list-type" = "set"))]
    pub days: Vec<Weekday>,
    /// Start time of day, "HH:MM" (24 h), in `timeZone`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// End time of day, "HH:MM" (24 h), after `start`.
    #[schemars(regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"))]
    pub end: String,
    /// IANA time zone the times are in.
    #[serde(default = "default_time_zone")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: String,
    /// Fewest pods while the window is active.
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
}

fn default_time_zone() -> String {
    "Europe/Berlin".to_string()
}

/// Day of the week.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Weekday {
    /// Monday (Montag).
    Monday,
    /// Tuesday (Dienstag).
    Tuesday,
    /// Wednesday (Mittwoch).
    Wednesday,
    /// Thursday (Donnerstag).
    Thursday,
    /// Friday (Freitag).
    Friday,
    /// Saturday (Samstag).
    Saturday,
    /// Sunday (Sonntag).
    Sunday,
}

/// CPU and memory of each pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("quantity(string(self.cpuLimit)).compareTo(quantity(string(self.cpu))) >= 0").message("spec.resources.cpuLimit must be at least spec.resources.cpu").field_path(".cpuLimit"))]
#[x_kube(validation = Rule::new("quantity(string(self.memoryLimit)).compareTo(quantity(string(self.memory))) >= 0").message("spec.resources.memoryLimit must be at least spec.resources.memory").field_path(".memoryLimit"))]
#[x_kube(validation = Rule::new("quantity(string(self.cpuLimit)).asApproximateFloat() <= 10.0 * quantity(string(self.cpu)).asApproximateFloat()").message("spec.resources.cpuLimit may be at most ten times spec.resources.cpu (the tenant's limit/request ratio)").field_path(".cpuLimit"))]
#[x_kube(validation = Rule::new("quantity(string(self.memoryLimit)).asApproximateFloat() <= 4.0 * quantity(string(self.memory)).asApproximateFloat()").message("spec.resources.memoryLimit may be at most four times spec.resources.memory (the tenant's limit/request ratio)").field_path(".memoryLimit"))]
pub struct Resources {
    /// CPU request per pod; what the tenant's quota counts and the autoscaler measures against.
    #[serde(default = "default_cpu")]
    #[schemars(schema_with = "common::quantity_schema")]
    pub cpu: Quantity,
    /// Memory request per pod.
    #[serde(default = "default_memory")]
    #[schemars(schema_with = "common::quantity_schema")]
    pub memory: Quantity,
    /// CPU limit per pod.
    #[serde(default = "default_cpu_limit")]
    #[schemars(schema_with = "common::quantity_schema")]
    pub cpu_limit: Quantity,
    /// Memory limit per pod.
    #[serde(default = "default_memory_limit")]
    #[schemars(schema_with = "common::quantity_schema")]
    pub memory_limit: Quantity,
}

fn default_cpu() -> Quantity {
    Quantity("250m".into())
}
fn default_memory() -> Quantity {
    Quantity("256Mi".into())
}
fn default_cpu_limit() -> Quantity {
    Quantity("1".into())
}
fn default_memory_limit() -> Quantity {
    Quantity("512Mi".into())
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: default_cpu(),
            memory: default_memory(),
            cpu_limit: default_cpu_limit(),
            memory_limit: default_memory_limit(),
        }
    }
}

/// Where the service may run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Sites the service may run on (names of Site objects). Empty: every eligible site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub sites: Vec<String>,
    /// `Required` (default): pods are spread evenly over the sites, or not scheduled.
    /// `Preferred`: spread when possible.
    #[serde(default)]
    pub spread: Spread,
}

/// How strictly pods spread over sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Spread {
    /// Never more than one pod of difference between sites (DoNotSchedule).
    #[default]
    Required,
    /// Spread as well as capacity allows (ScheduleAnyway).
    Preferred,
}

/// Health checks of the service's containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    /// Port to probe (a name from `spec.ports`); default the first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub port: Option<String>,
    /// HTTP path answering 200 once the service can take requests.
    #[serde(default = "default_readiness_path")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/"))]
    pub readiness_path: String,
    /// HTTP path answering 200 while the process is healthy.
    #[serde(default = "default_liveness_path")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/"))]
    pub liveness_path: String,
    /// Seconds between probes.
    #[serde(default = "default_probe_period")]
    #[schemars(range(min = 1, max = 300))]
    pub period_seconds: i32,
}

fn default_readiness_path() -> String {
    "/healthz/ready".into()
}
fn default_liveness_path() -> String {
    "/healthz/live".into()
}
fn default_probe_period() -> i32 {
    10
}

/// Publication on the portal domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// Host name, e.g. "service.saarland.de".
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$")
    )]
    pub host: String,
    /// Path prefix, e.g. "/wohnsitz".
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/[A-Za-z0-9/._~-]*$"))]
    pub path: String,
    /// Secret holding the TLS certificate for `host`. Absent: the gateway's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub tls_secret_name: Option<String>,
}

fn default_path() -> String {
    "/".into()
}

/// The service's entry in the catalogue of online services (and the Portalverbund).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// Leistungsschlüssel from the federal service catalogue (LeiKa), 14 digits, e.g.
    /// "99115005104000" for registering a residence.
    #[schemars(regex(pattern = r"^[0-9]{14}$"))]
    pub service_key: String,
    /// Title shown to citizens, e.g. "Wohnsitz anmelden".
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// One or two sentences on what the service does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1000))]
    pub summary: String,
    /// The authority responsible for the service, e.g. "Bürgeramt der Landeshauptstadt
    /// Saarbrücken".
    #[schemars(length(min = 1, max = 200))]
    pub responsible_authority: String,
    /// Regions served: Amtliche Regionalschlüssel (12 digits).
    #[schemars(
        length(min = 1, max = 128),
        inner(regex(pattern = common::REGIONAL_KEY_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub regional_keys: Vec<String>,
    /// Languages offered, as language tags, e.g. "de", "en", "fr".
    #[serde(default = "default_languages")]
    #[schemars(
        length(min = 1, max = 16),
        inner(regex(pattern = r"^[a-z]{2,3}(-[A-Z]{2})?$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub languages: Vec<String>,
    /// Accessibility status under BITV 2.0.
    pub accessibility: Accessibility,
    /// The eIDAS trust level of the login the service needs.
    pub trust_level: TrustLevel,
    /// Address of the service on the portal (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^https://[^\s]+$"))]
    pub online_service_url: Option<String>,
}

fn default_languages() -> Vec<String> {
    vec!["de".into()]
}

/// Conformity with the accessibility ordinance BITV 2.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Accessibility {
    /// Fully conformant (vollständig barrierefrei).
    Full,
    /// Partly conformant (teilweise barrierefrei).
    Partial,
    /// Not conformant (nicht barrierefrei).
    None,
}

/// eIDAS level of assurance of the login a service needs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum TrustLevel {
    /// eIDAS "niedrig": user name and password.
    Low,
    /// eIDAS "substanziell": e.g. ELSTER certificate.
    Substantial,
    /// eIDAS "hoch": the online ID card (Online-Ausweis).
    High,
}

/// Observed state of a portal service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortalServiceStatus {
    /// Desired and ready pods.
    #[serde(default)]
    pub replicas: ReplicaCounts,
    /// Ready pods per site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SitePods>,
    /// Ready pods per site as one line, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_summary: Option<String>,
    /// The scaling window active now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_window: Option<String>,
    /// Where citizens reach the service, when exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Placed`, `Compliant` and `ScalingLimited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions_schema")]
    pub conditions: Conditions,
}

/// Desired and ready pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCounts {
    /// Pods the Deployment wants now.
    pub desired: i32,
    /// Pods that are Ready.
    pub ready: i32,
}

/// Ready pods on one site.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SitePods {
    /// Name of the Site.
    pub site: String,
    /// Ready pods there.
    pub ready: i32,
}
