//! `Site`: a data-centre site contributing machines to the pool.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{self, Conditions, OrganisationKind, ProtectionLevel};

/// A data-centre site contributing machines to the pool. Its nodes are those labelled
/// `topology.kubernetes.io/zone=<zone>`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "verbund.saarland.de",
    version = "v1alpha1",
    kind = "Site",
    doc = "A data-centre site contributing machines to the pool: who runs it, the zone label of its nodes (topology.kubernetes.io/zone) and the highest protection need (Schutzbedarf) it is certified for. Verbund reports its nodes, capacity and use in status; a cordoned site takes no new placements.",
    plural = "sites",
    shortname = "site",
    category = "verbund",
    status = "SiteStatus",
    printcolumn = r#"{"name":"Operator","type":"string","jsonPath":".spec.operatedBy.kind","description":"Kind of organisation running the site"}"#,
    printcolumn = r#"{"name":"Zone","type":"string","jsonPath":".status.zone","description":"Node label topology.kubernetes.io/zone of the site's nodes"}"#,
    printcolumn = r#"{"name":"Protection","type":"string","jsonPath":".spec.maxProtectionLevel","description":"Highest protection need the site is certified for"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes.ready","description":"Ready nodes"}"#,
    printcolumn = r#"{"name":"CPU %","type":"integer","jsonPath":".status.utilisation.cpu","description":"CPU requested / allocatable, percent"}"#,
    printcolumn = r#"{"name":"Cordoned","type":"boolean","jsonPath":".spec.cordoned","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.cordoned || has(self.cordonReason)").message("spec.cordonReason is required when spec.cordoned is true: say why the site takes no new workloads").field_path(".cordonReason"))]
#[x_kube(validation = Rule::new("!has(self.cordonReason) || self.cordoned").message("spec.cordonReason is only allowed when spec.cordoned is true").field_path(".cordonReason"))]
pub struct SiteSpec {
    /// Name of the site as people say it, e.g. "Rechenzentrum des Landes, Saarbrücken".
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,

    /// The organisation that runs the site.
    pub operated_by: Operator,

    /// Value of the node label `topology.kubernetes.io/zone` that marks this site's nodes.
    /// Defaults to the Site's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = common::LABEL_VALUE_PATTERN))]
    pub zone: Option<String>,

    /// The highest protection need (Schutzbedarf) the site is certified for. Services needing
    /// more are never placed here.
    #[serde(default)]
    pub max_protection_level: ProtectionLevel,

    /// Certifications of the site, e.g. "ISO 27001 auf Basis von IT-Grundschutz".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 128)), extend("x-kubernetes-list-type" = "set"))]
    pub certifications: Vec<String>,

    /// A cordoned site takes no new placements, and services running there move away.
    #[serde(default)]
    pub cordoned: bool,

    /// Why the site is cordoned (maintenance, incident, ...). Required when cordoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub cordon_reason: Option<String>,
}

/// The organisation running a site.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operator {
    /// Kind of organisation.
    pub kind: OrganisationKind,
    /// Name of the organisation, e.g. "IT-Dienstleistungszentrum Saarland".
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
}

/// Observed state of a site, computed from its nodes and the pods scheduled on them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    /// The zone the site's nodes were looked up by (`spec.zone`, or the Site's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,

    /// How many nodes the site has, and how many of them are Ready.
    #[serde(default)]
    pub nodes: NodeCounts,

    /// Sum of the nodes' capacity, per resource (cpu, memory, pods).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,

    /// Sum of the Ready nodes' allocatable resources, per resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,

    /// Sum of the resource requests of the pods scheduled on the site's nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requested: BTreeMap<String, Quantity>,

    /// Requested as a percentage of allocatable, per resource.
    #[serde(default)]
    pub utilisation: Utilisation,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: the site has Ready nodes and is not cordoned. `Degraded`: some nodes are not
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "common::conditions_schema")]
    pub conditions: Conditions,
}

/// Node counts of a site.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// All nodes labelled with the site's zone.
    pub total: i32,
    /// Nodes whose Ready condition is True.
    pub ready: i32,
    /// Nodes marked unschedulable (`kubectl cordon`).
    #[serde(default)]
    pub unschedulable: i32,
}

/// Requested / allocatable in percent, per resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Utilisation {
    /// CPU, percent.
    pub cpu: i32,
    /// Memory, percent.
    pub memory: i32,
    /// Pod slots, percent.
    pub pods: i32,
}
