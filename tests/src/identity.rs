//! The operator's identity as a real installation gives it: a ServiceAccount bound to the
//! operator's ClusterRole (`verbund_operator::rbac`), authenticated by a TokenRequest token.
//! Not `system:masters`: RBAC and API Priority and Fairness apply to it as in production.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;

use crate::HarnessError;

/// The namespace and name of the operator's ServiceAccount.
pub const NAMESPACE: &str = "verbund-system";
pub const SERVICE_ACCOUNT: &str = "verbund-operator";

/// The Role and RoleBinding of the operator's lease, as the chart names them.
const LEADER_ELECTION: &str = "verbund-operator-leader-election";

/// The user name the API server knows the operator by.
pub fn username() -> String {
    format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}")
}

/// Creates the ServiceAccount, the operator's ClusterRole and its binding, the leader-election
/// Role of its lease and its binding (idempotently), and
/// writes a kubeconfig authenticating as the ServiceAccount next to `admin_kubeconfig`.
pub async fn operator_kubeconfig(
    client: &Client,
    admin_kubeconfig: &Path,
) -> Result<PathBuf, HarnessError> {
    let params = PatchParams::apply("verbund-tests").force();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(NAMESPACE, &params, &Patch::Apply(&namespace))
        .await?;
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SERVICE_ACCOUNT.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    accounts
        .patch(SERVICE_ACCOUNT, &params, &Patch::Apply(&account))
        .await?;
    // verbund-tenant-admin is installed with Verbund (the operator may keep it, not create it).
    let tenant_admin = verbund_operator::controller::tenant::rbac::tenant_admin_role();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
        .patch(
            verbund_operator::domain::tenancy::TENANT_ADMIN_ROLE,
            &params,
            &Patch::Apply(&tenant_admin),
        )
        .await?;
    let role = verbund_operator::rbac::cluster_role();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
        .patch(
            verbund_operator::rbac::OPERATOR_ROLE,
            &params,
            &Patch::Apply(&role),
        )
        .await?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(verbund_operator::rbac::OPERATOR_ROLE.into()),
            ..Default::default()
        },
        role_ref: role_ref("ClusterRole", verbund_operator::rbac::OPERATOR_ROLE),
        subjects: Some(vec![operator_subject()]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            verbund_operator::rbac::OPERATOR_ROLE,
            &params,
            &Patch::Apply(&binding),
        )
        .await?;

    // The chart's leader-election Role: its lease, in its namespace, and nothing else.
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": { "name": LEADER_ELECTION, "namespace": NAMESPACE },
        "rules": [
            { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] },
            { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
              "resourceNames": [SERVICE_ACCOUNT], "verbs": ["get", "list", "watch", "patch"] }
        ]
    }))
    .map_err(|e| HarnessError::Start(format!("leader-election role: {e}")))?;
    Api::<Role>::namespaced(client.clone(), NAMESPACE)
        .patch(LEADER_ELECTION, &params, &Patch::Apply(&role))
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(LEADER_ELECTION.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        role_ref: role_ref("Role", LEADER_ELECTION),
        subjects: Some(vec![operator_subject()]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), NAMESPACE)
        .patch(LEADER_ELECTION, &params, &Patch::Apply(&binding))
        .await?;

    token_kubeconfig(
        client,
        admin_kubeconfig,
        NAMESPACE,
        SERVICE_ACCOUNT,
        "verbund-operator.kubeconfig",
    )
    .await
}

/// Writes a kubeconfig named `file_name` next to `admin_kubeconfig` that authenticates as the
/// ServiceAccount `namespace/account` with a TokenRequest token (valid a day).
pub async fn token_kubeconfig(
    client: &Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    account: &str,
    file_name: &str,
) -> Result<PathBuf, HarnessError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..Default::default()
        }),
        status: None,
    };
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| HarnessError::Start("the TokenRequest returned no token".into()))?;

    let mut kubeconfig = Kubeconfig::read_from(admin_kubeconfig)
        .map_err(|e| HarnessError::Start(format!("kubeconfig: {e}")))?;
    for named in &mut kubeconfig.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            *auth = kube::config::AuthInfo {
                token: Some(token.clone().into()),
                ..Default::default()
            };
        }
    }
    let path = admin_kubeconfig.with_file_name(file_name);
    let text = serde_yaml::to_string(&kubeconfig)
        .map_err(|e| HarnessError::Start(format!("kubeconfig: {e}")))?;
    std::fs::write(&path, text).map_err(|e| HarnessError::io(&path, e))?;
    Ok(path)
}

/// The operator's ServiceAccount as a binding's subject.
fn operator_subject() -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: SERVICE_ACCOUNT.into(),
        namespace: Some(NAMESPACE.into()),
        api_group: None,
    }
}

/// A binding's reference to the RBAC `kind` (`Role`, `ClusterRole`) named `name`.
fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    }
}
