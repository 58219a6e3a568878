//! What the operator itself may do in a cluster: its ClusterRole, every rule with the reason
//! Verbund needs it. The Helm chart and the tests install exactly these rules
//! (`verbund-operator rbac` prints them), so that the operator's permissions are tested
//! wherever it runs.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::domain::tenancy::TENANT_ADMIN_ROLE;
use crate::meta::{MANAGED_BY, MANAGED_BY_LABEL, PART_OF, PART_OF_LABEL};

/// The name of the operator's ClusterRole (and its binding).
pub const OPERATOR_ROLE: &str = "verbund-operator";

/// One rule and why the operator needs it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub groups: &'static [&'static str],
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Restricts the rule to these object names (empty: all).
    pub names: &'static [&'static str],
    pub why: &'static str,
}

const WATCH: &[&str] = &["list", "watch"];
// Server-side apply of an object that does not exist yet is authorised as `create`. The
// caches hold only what Verbund labelled, so before creating a child it reads the name once
// (`get`): an object someone else made there is reported, never applied over.
const APPLY: &[&str] = &["get", "list", "watch", "create", "patch"];
const APPLY_DELETE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Every rule of the operator's ClusterRole.
pub const RULES: [Rule; 21] = [
    Rule {
        groups: &["verbund.saarland.de"],
        resources: &["sites", "securitybaselines", "portalservices"],
        verbs: WATCH,
        names: &[],
        why: "reads its own kinds into the caches every controller works from",
    },
    Rule {
        groups: &["verbund.saarland.de"],
        resources: &["tenants"],
        verbs: &["get", "list", "watch", "patch"],
        names: &[],
        why: "reads tenants; adds and removes the finalizer that releases their namespaces; `get` because the API server lets only those who may read Tenants make them an admission policy's parameter (the isolation policy)",
    },
    Rule {
        groups: &["verbund.saarland.de"],
        resources: &[
            "sites/status",
            "tenants/status",
            "securitybaselines/status",
            "portalservices/status",
        ],
        verbs: &["patch"],
        names: &[],
        why: "writes the status of its kinds (server-side apply)",
    },
    Rule {
        groups: &[""],
        resources: &["nodes"],
        verbs: WATCH,
        names: &[],
        why: "counts each site's nodes, capacity and readiness",
    },
    Rule {
        groups: &[""],
        resources: &["pods"],
        verbs: WATCH,
        names: &[],
        why: "sums requests per site, counts ready pods per service, audits standalone pods",
    },
    Rule {
        groups: &[""],
        resources: &["namespaces", "resourcequotas"],
        verbs: &["list", "watch", "create", "patch", "delete"],
        names: &[],
        why: "creates and labels tenant namespaces, deletes them for deletionPolicy Delete; keeps each tenant namespace's share of the quota, removes it when a namespace is released (both cached whole, so never read one by one)",
    },
    Rule {
        groups: &[""],
        resources: &["limitranges"],
        verbs: APPLY_DELETE,
        names: &[],
        why: "keeps each tenant namespace's default limits; removes them when a namespace is released",
    },
    Rule {
        groups: &["rbac.authorization.k8s.io"],
        resources: &["rolebindings"],
        verbs: APPLY_DELETE,
        names: &[],
        why: "binds a tenant's admins in its namespaces; removes the binding when a namespace is released",
    },
    Rule {
        groups: &["rbac.authorization.k8s.io"],
        resources: &["clusterroles"],
        verbs: &["bind"],
        names: &[TENANT_ADMIN_ROLE],
        why: "binds admins to verbund-tenant-admin, whose rights (exec, secrets) the operator itself does not hold; only that role",
    },
    Rule {
        groups: &["rbac.authorization.k8s.io"],
        resources: &["clusterroles"],
        verbs: &["get", "patch", "escalate"],
        names: &[TENANT_ADMIN_ROLE],
        why: "keeps verbund-tenant-admin (installed with Verbund) as Verbund defines it; its rights are not the operator's, hence escalate; only that role",
    },
    Rule {
        groups: &["networking.k8s.io"],
        resources: &["networkpolicies", "ingresses"],
        verbs: APPLY_DELETE,
        names: &[],
        why: "isolates tenant namespaces and services; publishes exposed services; removes what is no longer wanted; the audit checks every namespace's policies for a default deny",
    },
    Rule {
        groups: &["apps"],
        resources: &["deployments"],
        verbs: APPLY,
        names: &[],
        why: "runs each portal service (its pods are deleted with it by the garbage collector); the audit reads every Deployment's pod template",
    },
    Rule {
        groups: &[""],
        resources: &["services", "serviceaccounts"],
        verbs: APPLY,
        names: &[],
        why: "gives each portal service its Service and its own ServiceAccount",
    },
    Rule {
        groups: &["autoscaling"],
        resources: &["horizontalpodautoscalers"],
        verbs: APPLY,
        names: &[],
        why: "scales each portal service between its window's floor and its quota's ceiling",
    },
    Rule {
        groups: &["policy"],
        resources: &["poddisruptionbudgets"],
        verbs: APPLY,
        names: &[],
        why: "keeps each portal service available through node drains",
    },
    Rule {
        groups: &["apps"],
        resources: &["statefulsets", "daemonsets", "replicasets"],
        verbs: WATCH,
        names: &[],
        why: "audits every workload's pod template against its namespace's baseline (from a watch, not a list per audit)",
    },
    Rule {
        groups: &["batch"],
        resources: &["jobs", "cronjobs"],
        verbs: WATCH,
        names: &[],
        why: "audits every workload's pod template against its namespace's baseline",
    },
    Rule {
        groups: &["admissionregistration.k8s.io"],
        resources: &[
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
        ],
        verbs: &["get", "list", "watch", "create", "patch"],
        names: &[],
        why: "compiles each SecurityBaseline into the admission policy the API server enforces; keeps the pool's tenant isolation policy and binds it once per tenant; caches its own (list, watch) to compare before writing and to read the type-checking status",
    },
    Rule {
        groups: &["events.k8s.io"],
        resources: &["events"],
        verbs: &["create", "patch"],
        names: &[],
        why: "tells users what it did and what is wrong (Events are created, then patched as series)",
    },
    Rule {
        groups: &[""],
        resources: &["events"],
        verbs: &["list"],
        names: &[],
        why: "reads back, once after a restart, which violations its Events already reported",
    },
    Rule {
        groups: &["wgpolicyk8s.io"],
        resources: &["policyreports"],
        verbs: &["list", "create", "patch"],
        names: &[],
        why: "publishes each bound namespace's audit as a PolicyReport where that kind is installed",
    },
];

/// Granted rights a normal run may not use (the install test compares the API server's audit
/// log with the chart's rules: every right it did not see used must be here), each with why
/// it stays: `verb group/resource` as the test prints it.
pub const NOT_EXERCISED: &[(&str, &str)] = &[(
    "patch events.k8s.io/events",
    "an Event that repeats is patched as a series (its count); in a short run most Events are new",
)];

/// The entries of [`NOT_EXERCISED`] that `rule` grants.
fn not_exercised(rule: &Rule) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    NOT_EXERCISED.iter().copied().filter(|(what, _)| {
        let Some((verb, target)) = what.split_once(' ') else {
            return false;
        };
        let (group, resource) = target.rsplit_once('/').unwrap_or(("", target));
        let group = if group == "core" { "" } else { group };
        rule.verbs.contains(&verb)
            && rule.groups.contains(&group)
            && rule.resources.contains(&resource)
    })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The ClusterRole as the API server takes it.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(OPERATOR_ROLE.into()),
            labels: Some(
                [(MANAGED_BY_LABEL, MANAGED_BY), (PART_OF_LABEL, PART_OF)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        rules: Some(
            RULES
                .iter()
                .map(|rule| PolicyRule {
                    api_groups: Some(strings(rule.groups)),
                    resources: Some(strings(rule.resources)),
                    verbs: strings(rule.verbs),
                    resource_names: (!rule.names.is_empty()).then(|| strings(rule.names)),
                    non_resource_urls: None,
                })
                .collect(),
        ),
        aggregation_rule: None,
    }
}

/// The ClusterRole's rules as YAML, each with its reason as a comment.
pub fn rules_yaml() -> String {
    let list = |items: &[&str]| {
        let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from(
        "# Generated by `verbund-operator rbac` from operator/src/rbac.rs; do not edit by hand.\n",
    );
    for rule in &RULES {
        out.push_str(&format!("# {}\n", rule.why));
        for (what, why) in not_exercised(rule) {
            out.push_str(&format!("# Not used in a normal run: {what}; {why}.\n"));
        }
        out.push_str(&format!("- apiGroups: {}\n", list(rule.groups)));
        out.push_str(&format!("  resources: {}\n", list(rule.resources)));
        if !rule.names.is_empty() {
            out.push_str(&format!("  resourceNames: {}\n", list(rule.names)));
        }
        out.push_str(&format!("  verbs: {}\n", list(rule.verbs)));
    }
    out
}

/// A ClusterRole Verbund installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleName {
    /// The operator's own rules ([`RULES`]).
    Operator,
    /// `verbund-tenant-admin`, which the operator binds tenant admins to.
    TenantAdmin,
}

/// How `verbund-operator rbac` prints a role's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// The YAML list the Helm chart includes.
    #[default]
    Yaml,
    /// The README's table (the operator's role only).
    Markdown,
}

/// The rules of `role` as the YAML list the Helm chart includes (`charts/verbund/files`).
pub fn role_rules_yaml(role: RoleName) -> anyhow::Result<String> {
    Ok(match role {
        RoleName::Operator => rules_yaml(),
        RoleName::TenantAdmin => {
            let rules = crate::controller::tenant::rbac::tenant_admin_role()
                .rules
                .unwrap_or_default();
            format!(
                "# Generated by `verbund-operator rbac --role tenant-admin`; do not edit by hand.\n{}",
                serde_yaml::to_string(&rules)?
            )
        }
    })
}

/// The operator's rules as the README's table: what Verbund may do, and why.
pub fn markdown_table() -> String {
    let code = |items: &[&str]| {
        items
            .iter()
            .map(|s| format!("`{}`", if s.is_empty() { "core" } else { s }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("| API group | resources | verbs | why |\n|---|---|---|---|\n");
    for rule in &RULES {
        let mut resources = code(rule.resources);
        if !rule.names.is_empty() {
            resources.push_str(&format!(" (only {})", code(rule.names)));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            // API groups as plain words: they name groups, not files.
            rule.groups
                .iter()
                .map(|g| if g.is_empty() { "core" } else { g })
                .collect::<Vec<_>>()
                .join(", "),
            resources,
            code(rule.verbs),
            rule.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart includes these generated files; a change to the rules must regenerate them
    /// (`make crds`), or an installed operator would run with other rights than the tested one.
    #[test]
    fn the_charts_rules_are_the_generated_ones() {
        let files =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/verbund/files");
        for (role, file) in [
            (RoleName::Operator, "operator-rules.yaml"),
            (RoleName::TenantAdmin, "tenant-admin-rules.yaml"),
        ] {
            let on_disk = std::fs::read_to_string(files.join(file)).unwrap_or_default();
            assert!(
                on_disk == role_rules_yaml(role).expect("serialisable"),
                "charts/verbund/files/{file} is stale or missing: run `make crds`"
            );
        }
    }

    #[test]
    fn no_wildcards_and_every_rule_says_why() {
        for rule in &RULES {
            assert!(rule.why.len() > 20, "{rule:?}");
            for part in [rule.groups, rule.resources, rule.verbs] {
                assert!(!part.contains(&"*"), "{rule:?}");
            }
            if rule
                .verbs
                .iter()
                .any(|v| ["bind", "escalate", "impersonate"].contains(v))
            {
                assert_eq!(rule.names, [TENANT_ADMIN_ROLE], "{rule:?}");
            }
        }
    }

    #[test]
    fn every_right_not_exercised_belongs_to_a_rule() {
        for (what, _) in NOT_EXERCISED {
            assert!(
                RULES
                    .iter()
                    .any(|rule| not_exercised(rule).any(|(w, _)| w == *what)),
                "{what} is granted by no rule"
            );
        }
    }

    #[test]
    fn the_readme_shows_the_rules() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(path).unwrap_or_default();
        let section = readme
            .split_once("<!-- rbac -->\n")
            .and_then(|(_, rest)| rest.split_once("<!-- /rbac -->"))
            .map(|(table, _)| table);
        assert!(
            section == Some(markdown_table().as_str()),
            "README.md's <!-- rbac --> section is stale: `verbund-operator rbac --format markdown` prints it"
        );
    }

    #[test]
    fn the_yaml_reads_back_as_the_same_rules() {
        let rules: Vec<PolicyRule> = serde_yaml::from_str(&rules_yaml()).expect("YAML");
        assert_eq!(Some(rules), cluster_role().rules);
    }
}
