//! The `verbund-tenant-admin` ClusterRole, bound to a tenant's admins in each of its namespaces
//! (APP.4.4.A3: least privilege). It gives full control of workloads and what they need, and
//! read access to the guard rails Verbund sets (quota, limits, network policies), but no power
//! over them, over RBAC, or over namespaces (a RoleBinding cannot grant cluster-scoped rights,
//! so namespace labels stay out of reach).

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::domain::tenancy::TENANT_ADMIN_ROLE;
use crate::meta::{MANAGED_BY, MANAGED_BY_LABEL, PART_OF, PART_OF_LABEL};

const ALL: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const READ: [&str; 3] = ["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The role as Verbund applies it at start-up.
pub fn tenant_admin_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(TENANT_ADMIN_ROLE.into()),
            labels: Some(
                [(MANAGED_BY_LABEL, MANAGED_BY), (PART_OF_LABEL, PART_OF)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        rules: Some(vec![
            // Workloads and what they consume.
            rule(
                &[""],
                &[
                    "pods",
                    "services",
                    "configmaps",
                    "secrets",
                    "serviceaccounts",
                    "persistentvolumeclaims",
                ],
                &ALL,
            ),
            rule(
                &[""],
                &["pods/log", "pods/status", "services/status"],
                &READ,
            ),
            rule(
                &[""],
                &["pods/exec", "pods/portforward", "pods/attach"],
                &["create", "get"],
            ),
            rule(
                &["apps"],
                &["deployments", "statefulsets", "replicasets"],
                &ALL,
            ),
            rule(
                &["apps"],
                &["deployments/scale", "statefulsets/scale"],
                &["get", "update", "patch"],
            ),
            rule(&["batch"], &["jobs", "cronjobs"], &ALL),
            rule(&["autoscaling"], &["horizontalpodautoscalers"], &ALL),
            rule(&["policy"], &["poddisruptionbudgets"], &ALL),
            rule(&["networking.k8s.io"], &["ingresses"], &ALL),
            rule(&["verbund.saarland.de"], &["portalservices"], &ALL),
            rule(&["verbund.saarland.de"], &["portalservices/status"], &READ),
            // Seeing what happens and what the guard rails are, without changing them.
            rule(&["", "events.k8s.io"], &["events"], &READ),
            rule(&[""], &["resourcequotas", "limitranges"], &READ),
            rule(&["networking.k8s.io"], &["networkpolicies"], &READ),
            rule(
                &["rbac.authorization.k8s.io"],
                &["roles", "rolebindings"],
                &READ,
            ),
        ]),
        aggregation_rule: None,
    }
}
