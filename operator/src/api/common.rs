//! Types shared by several kinds: protection levels, organisations, conditions, quantities.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Protection need (Schutzbedarf, BSI-Standard 200-2): the highest of confidentiality,
/// integrity and availability. Ordered: `Normal < High < VeryHigh`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum ProtectionLevel {
    /// Schutzbedarf "normal": damage would be limited and manageable.
    #[default]
    Normal,
    /// Schutzbedarf "hoch": damage could be considerable.
    High,
    /// Schutzbedarf "sehr hoch": damage could be existentially threatening or catastrophic.
    VeryHigh,
}

impl ProtectionLevel {
    /// The German term, for events and dashboards.
    pub fn german(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::High => "hoch",
            Self::VeryHigh => "sehr hoch",
        }
    }
}

impl std::fmt::Display for ProtectionLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Normal => "Normal",
            Self::High => "High",
            Self::VeryHigh => "VeryHigh",
        })
    }
}

/// The kind of organisation taking part in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OrganisationKind {
    /// The Land: a ministry, an agency or the state IT service provider.
    State,
    /// A university or college (Hochschule).
    University,
    /// A municipality or district (Kommune, Landkreis, Regionalverband).
    Municipality,
    /// A special-purpose association of municipalities (Zweckverband), e.g. eGo-Saar.
    Association,
}

/// Standard `metav1.Condition`s, as a list map keyed by `type` (each type at most once, and
/// merged by type under server-side apply).
pub type Conditions = Vec<Condition>;

/// Schema for a `conditions` list: the standard Condition with list-map semantics.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// The Kubernetes quantity syntax ("500m", "4", "16Gi", "1.5", "5e-1"): exactly what the API
/// server's `resource.ParseQuantity` and `quantity::Amount::parse` accept (exponents are
/// whole numbers).
pub const QUANTITY_PATTERN: &str =
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$";

/// Schema for a resource quantity: a number or a string in quantity syntax, as in the core API.
/// Never null: a defaulted quantity is still a quantity (kube marks optional int-or-string
/// fields nullable unless told otherwise).
pub fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "pattern": QUANTITY_PATTERN,
        "nullable": false,
    })
}

/// A DNS-1123 label: lowercase letters, digits and '-', starting and ending alphanumeric.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A Kubernetes label value (used for zones).
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// A host name as Ingresses take it: lower-case DNS labels with a top-level domain.
pub const HOST_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$";

/// A URL path prefix: "/" or segments without a trailing slash, e.g. "/saarbruecken".
pub const PATH_PREFIX_PATTERN: &str = r"^/([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*)?$";

/// Amtlicher Regionalschlüssel: 12 digits.
pub const REGIONAL_KEY_PATTERN: &str = r"^[0-9]{12}$";
