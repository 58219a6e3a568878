//! Baselines bound to test namespaces, for the admission and audit tests.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use verbund_operator::api::SecurityBaseline;
use verbund_operator::api::security_baseline::RuleName;
use verbund_operator::baseline::fixtures;

use crate::admission::{self, Answer};
use crate::control_plane::ControlPlane;
use crate::namespace::TestNamespace;
use crate::{unique_name, wait};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A namespace bound to a fresh baseline, with a tenant admin who may run workloads in it.
pub struct Bound {
    pub baseline: String,
    pub ns: TestNamespace,
    /// The tenant admin (impersonated).
    pub admin: Client,
    /// Cluster admin, for what tenant admins may not do (DaemonSets, NetworkPolicies).
    pub root: Client,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("baseline", &self.baseline)
            .field("ns", &self.ns.name())
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// The client that creates `kind` (tenant admins do not run DaemonSets).
    pub fn client_for(&self, kind: &str) -> &Client {
        if kind == "DaemonSet" {
            &self.root
        } else {
            &self.admin
        }
    }

    pub async fn dry_run(&self, object: &Value) -> Answer {
        let kind = object["kind"].as_str().unwrap_or_default();
        admission::create(self.client_for(kind), self.ns.name(), object, true).await
    }

    pub async fn status(&self) -> Value {
        let api: Api<SecurityBaseline> = Api::all(self.root.clone());
        let baseline = api.get(&self.baseline).await.expect("baseline");
        serde_json::to_value(baseline.status).expect("status")
    }
}

/// Applies `name`, a baseline that only audits (one rule, Pod Security `restricted`): for tests
/// about tenancy rather than hardening, whose workloads must not be refused by a baseline.
pub async fn apply_audit_baseline(client: &Client, name: &str) {
    let audit = json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "SecurityBaseline",
        "metadata": { "name": name },
        "spec": {
            "protectionLevel": "VeryHigh",
            "enforcement": "Audit",
            "podSecurity": "Restricted",
            "rules": { "runAsNonRoot": true }
        }
    });
    Api::<SecurityBaseline>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(&audit),
        )
        .await
        .expect("audit baseline accepted");
}

/// Creates a namespace, a baseline with every rule on in `enforcement` mode (exceptions from
/// `exceptions(namespace)`), binds them, and waits until the baseline is Ready.
pub async fn bound(
    cp: &ControlPlane,
    enforcement: &str,
    exceptions: impl Fn(&str) -> Value,
) -> Bound {
    let root = cp.client().await;
    let ns = cp.namespace("sbl").await;
    let baseline = unique_name("sbl");
    let body = json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "SecurityBaseline",
        "metadata": { "name": baseline },
        "spec": {
            "protectionLevel": "High",
            "enforcement": enforcement,
            "rules": fixtures::all_rules(),
            "exceptions": exceptions(ns.name()),
        }
    });
    let baselines: Api<SecurityBaseline> = Api::all(root.clone());
    baselines
        .patch(
            &baseline,
            &PatchParams::apply("verbund-tests"),
            &Patch::Apply(&body),
        )
        .await
        .expect("baseline accepted");
    Api::<Namespace>::all(root.clone())
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"verbund.saarland.de/baseline": baseline}}}),
            ),
        )
        .await
        .expect("namespace labelled");
    // The service account the fixtures run as, and a tenant admin bound as Verbund binds them.
    ns.api::<ServiceAccount>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": fixtures::SERVICE_ACCOUNT}}))
                .expect("sa"),
        )
        .await
        .expect("service account");
    let user = format!("anna@{}", ns.name());
    ns.api::<RoleBinding>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "tenant-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "verbund-tenant-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
            }))
            .expect("binding"),
        )
        .await
        .expect("role binding");
    wait::ready(&baselines, &baseline, TIMEOUT).await;
    // Pods need the namespace's default service account (the controller-manager makes it).
    let accounts = ns.api::<ServiceAccount>();
    wait::until(TIMEOUT, "default service account", || {
        let accounts = accounts.clone();
        async move {
            accounts
                .get_opt("default")
                .await
                .ok()
                .flatten()
                .ok_or("absent")
        }
    })
    .await;
    Bound {
        baseline,
        admin: cp.impersonate(&user, &[]).await,
        root,
        ns,
    }
}

/// Waits until the API server's admission has picked up the policy: a Pod running as root is
/// answered as `in_force` says.
pub async fn await_policy(bound: &Bound, in_force: impl Fn(&Answer) -> bool) {
    let probe = fixtures::breaking(RuleName::RunAsNonRoot, "Pod").object;
    wait::until(TIMEOUT, "the admission policy in force", || {
        let probe = probe.clone();
        let in_force = &in_force;
        async move {
            let answer = bound.dry_run(&probe).await;
            if in_force(&answer) {
                Ok(())
            } else {
                Err(answer)
            }
        }
    })
    .await;
}
