//! `Tenant`: an organisation that uses the pool, with its namespaces, admins and quota.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, Conditions, OrganisationKind, ProtectionLevel};

/// An organisation that uses the pool: a ministry, a university, a municipality. Verbund
/// creates its namespaces, with quota, limits, network isolation and admin rights.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "verbund.saarland.de",
    version = "v1alpha1",
    kind = "Tenant",
    doc = "An organisation that uses the pool (a ministry, a university, a municipality): its namespaces, which Verbund creates with quota, default limits, network isolation and admin rights, its tenant-wide quota, the highest protection need its services may declare, and what happens to its namespaces when it leaves.",
    plural = "tenants",
    shortname = "tn",
    category = "verbund",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.organisation.kind","description":"Kind of organisation"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.namespaceCount","description":"Namespaces the tenant owns"}"#,
    printcolumn = r#"{"name":"CPU Used","type":"string","jsonPath":".status.quota.used.cpu","description":"CPU requested by the tenant's pods"}"#,
    printcolumn = r#"{"name":"CPU Quota","type":"string","jsonPath":".spec.quota.cpu","description":"Tenant-wide CPU quota"}"#,
    printcolumn = r#"{"name":"Protection","type":"string","jsonPath":".spec.maxProtectionLevel","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.admins) || self.admins.all(a, a.kind != 'ServiceAccount' || a.__namespace__ in self.namespaces)").message("spec.admins: a ServiceAccount admin must live in one of the tenant's own spec.namespaces").field_path(".admins"))]
pub struct TenantSpec {
    /// Name of the organisation as people say it, e.g. "Landeshauptstadt Saarbrücken".
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,

    /// Who the tenant is.
    pub organisation: Organisation,

    /// Users, groups and service accounts that administer the tenant's workloads. They get the
    /// `verbund-tenant-admin` role in each of the tenant's namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub admins: Vec<Subject>,

    /// The namespaces the tenant owns; Verbund creates them. Each name at most once, and not
    /// owned by another tenant.
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub namespaces: Vec<String>,

    /// The tenant's share of the pool, enforced across all its namespaces together.
    pub quota: TenantQuota,

    /// The highest protection need the tenant's services may declare.
    #[serde(default)]
    pub max_protection_level: ProtectionLevel,

    /// Name of the SecurityBaseline bound to the tenant's namespaces. Defaults by
    /// `maxProtectionLevel`: `grundschutz-normal`, `grundschutz-hoch`, `grundschutz-sehr-hoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN))]
    pub baseline: Option<String>,

    /// Sites the tenant's services may run on. Empty: every site certified for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub allowed_sites: Vec<String>,

    /// Destinations the tenant's pods may reach beyond the tenant itself and DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub egress: Vec<EgressRule>,

    /// Where the tenant's services may be reached from outside the pool: host names and path
    /// prefixes its Ingresses and PortalService exposures may use. Empty: the tenant exposes
    /// nothing. A route another tenant holds already (same host and prefix) is refused; a
    /// route inside another tenant's (a longer prefix) is carved out of that one.
    /// `status.routes` lists what the tenant holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub routes: Vec<Route>,

    /// Priority classes the tenant's pods may name (`spec.priorityClassName`), set by the pool's
    /// administrators. Empty: none, every pod runs at the cluster's default priority and
    /// cannot preempt another tenant's pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 1, max = 253)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub priority_classes: Vec<String>,

    /// What happens to the namespaces when they leave the spec or the Tenant is deleted.
    /// `Retain` (default) keeps them and their workloads, only Verbund lets go of them;
    /// `Delete` removes them with everything in them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Who the tenant is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 'Municipality' || has(self.regionalKey)").message("spec.organisation.regionalKey (the 12-digit Amtlicher Regionalschlüssel) is required for a municipality").field_path(".regionalKey"))]
pub struct Organisation {
    /// Kind of organisation.
    pub kind: OrganisationKind,
    /// Official name, e.g. "Ministerium für Inneres, Bauen und Sport".
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Amtlicher Regionalschlüssel (ARS), 12 digits; Saarland's start with 10. Required for
    /// municipalities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = common::REGIONAL_KEY_PATTERN))]
    pub regional_key: Option<String>,
}

/// A user, group or service account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 'ServiceAccount' || has(self.namespace)").message("a ServiceAccount admin needs its namespace").field_path(".namespace"))]
#[x_kube(validation = Rule::new("self.kind == 'ServiceAccount' || !has(self.namespace)").message("namespace is only allowed for a ServiceAccount admin").field_path(".namespace"))]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: SubjectKind,
    /// Name of the user, group or service account.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of a service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

/// Kind of an RBAC subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SubjectKind {
    /// A person, as the cluster's authentication names them.
    User,
    /// A group of people.
    Group,
    /// A Kubernetes service account, e.g. a GitOps agent.
    ServiceAccount,
}

/// The tenant-wide quota: the sum over all the tenant's namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("quantity(string(self.cpu)).isGreaterThan(quantity('0'))").message("spec.quota.cpu must be greater than zero").field_path(".cpu"))]
#[x_kube(validation = Rule::new("quantity(string(self.memory)).isGreaterThan(quantity('0'))").message("spec.quota.memory must be greater than zero").field_path(".memory"))]
pub struct TenantQuota {
    /// CPU requests, e.g. "16" or "2500m".
    #[schemars(schema_with = "common::quantity_schema")]
    pub cpu: Quantity,
    /// Memory requests, e.g. "64Gi".
    #[schemars(schema_with = "common::quantity_schema")]
    pub memory: Quantity,
    /// Number of pods.
    #[schemars(range(min = 1, max = 100000))]
    pub pods: i32,
    /// Persistent storage all the tenant's volume claims may request together, e.g. "500Gi",
    /// split evenly over its namespaces. Unset: the tenant claims no persistent volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "common::quantity_schema")]
    pub storage: Option<Quantity>,
    /// Objects of each kind a namespace may hold (ConfigMaps, Secrets, Services, Deployments,
    /// Ingresses, PortalServices, ...; ten times as many ReplicaSets, which Deployments keep
    /// as history), so that no tenant can flood the pool's etcd. Default 1000.
    #[serde(default = "default_objects_per_namespace")]
    #[schemars(range(min = 10, max = 10000))]
    pub objects_per_namespace: i32,
}

fn default_objects_per_namespace() -> i32 {
    1000
}

/// One allowed egress destination.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cidr) != has(self.namespace)").message("an egress rule names exactly one destination: cidr or namespace"))]
pub struct EgressRule {
    /// Name of the rule, e.g. "xta-gateway"; unique within the tenant.
    #[schemars(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN))]
    pub name: String,
    /// Destination network in CIDR notation, e.g. "10.20.0.0/16".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("cidr must be a network in CIDR notation, e.g. 10.20.0.0/16"))]
    #[schemars(length(max = 64))]
    pub cidr: Option<String>,
    /// Destination namespace in the cluster (e.g. a shared service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = common::DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
    /// Destination ports; empty means all ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ports: Vec<EgressPort>,
}

/// A destination port of an egress rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressPort {
    /// Port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: TransportProtocol,
}

/// Transport protocol of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TransportProtocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
}

/// A host name and path prefix under which a tenant's services may be reached.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Host name, e.g. "service.saarland.de".
    #[schemars(length(min = 1, max = 253), regex(pattern = common::HOST_PATTERN))]
    pub host: String,
    /// Path prefix under the host, e.g. "/saarbruecken"; "/" (default) is the whole host.
    /// Paths under it match segment by segment: "/saarbruecken" covers
    /// "/saarbruecken/wohnsitz", not "/saarbrueckenx".
    #[serde(default = "root_path")]
    #[schemars(length(min = 1, max = 256), regex(pattern = common::PATH_PREFIX_PATTERN))]
    pub path_prefix: String,
}

fn root_path() -> String {
    "/".into()
}

/// A route the tenant holds, without the longer prefixes other tenants hold inside it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantedRoute {
    /// Host name.
    pub host: String,
    /// Path prefix.
    pub path_prefix: String,
    /// Prefixes under `pathPrefix` that other tenants hold: not this tenant's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// What happens to a tenant's namespaces when Verbund lets go of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the namespaces and their workloads; remove only Verbund's labels and ownership.
    #[default]
    Retain,
    /// Delete the namespaces with everything in them.
    Delete,
}

/// Observed state of a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The namespaces Verbund manages for the tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// Number of namespaces, for `kubectl get`.
    #[serde(default)]
    pub namespace_count: i32,

    /// Tenant-wide quota and use, summed over the namespaces.
    #[serde(default)]
    pub quota: QuotaStatus,

    /// Number of PortalServices in the tenant's namespaces.
    #[serde(default)]
    pub services: i32,

    /// The routes the tenant holds: admission lets its Ingresses and PortalService exposures
    /// use these hosts and paths, and no others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<GrantedRoute>,

    /// The sites the tenant's pods may run on (`spec.allowedSites`, or every site), each with
    /// its zone and the protection need it is certified for: admission lets a pod in the
    /// tenant's namespaces run only in the zones of the sites certified for its protection
    /// level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<TenantSite>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: every namespace and its guard rails are in place. `QuotaExceeded`: the
    /// tenant uses all of a resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions_schema")]
    pub conditions: Conditions,
}

/// A site a tenant may use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSite {
    /// The Site's name.
    pub name: String,
    /// Its nodes' `topology.kubernetes.io/zone`.
    pub zone: String,
    /// The highest protection need it is certified for.
    pub max_protection_level: ProtectionLevel,
}

/// Quota and use per resource (`cpu`, `memory`, `pods`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// The tenant-wide quota.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hard: BTreeMap<String, Quantity>,
    /// What the tenant's pods request, summed over its namespaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: BTreeMap<String, Quantity>,
}
