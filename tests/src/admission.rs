//! Posting objects the way kubectl does and reading what admission said: the status code,
//! the refusal message and the `Warning` headers (kube's typed API does not surface those).

use http::Request;
use http_body_util::BodyExt;
use kube::Client;
use serde_json::Value;
use verbund_operator::baseline::workload::KINDS;

/// What the API server answered to a create.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The refusal message (empty when admitted).
    pub message: String,
    /// Admission warnings, one per `Warning` header.
    pub warnings: Vec<String>,
}

impl Answer {
    pub fn admitted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The plural resource name of `kind`, as the API server spells it.
fn plural(kind: &str) -> String {
    if let Some((_, _, _, plural)) = KINDS.iter().find(|(_, _, k, _)| *k == kind) {
        return plural.to_string();
    }
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// The collection URL of `object`'s kind (from its apiVersion and kind) in `namespace`.
fn collection(namespace: &str, object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    format!("{prefix}/namespaces/{namespace}/{}", plural(kind))
}

/// Creates `object` in `namespace` (server-side dry run when `dry_run`), as `client`.
pub async fn create(client: &Client, namespace: &str, object: &Value, dry_run: bool) -> Answer {
    let mut url = collection(namespace, object);
    if dry_run {
        url.push_str("?dryRun=All");
    }
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(
            serde_json::to_vec(object).expect("json"),
        ))
        .expect("request");
    send(client, request).await
}

/// Sets the replicas of `resource` (`deployments`, `statefulsets`) `name` through its scale
/// subresource (a merge patch, as `kubectl scale` does), as `client`.
pub async fn scale(
    client: &Client,
    namespace: &str,
    resource: &str,
    name: &str,
    replicas: i32,
) -> Answer {
    let url = format!("/apis/apps/v1/namespaces/{namespace}/{resource}/{name}/scale");
    let body = serde_json::json!({"spec": {"replicas": replicas}});
    let request = Request::patch(url)
        .header("content-type", "application/merge-patch+json")
        .body(kube::client::Body::from(
            serde_json::to_vec(&body).expect("json"),
        ))
        .expect("request");
    send(client, request).await
}

/// Sends `request` and reads status, refusal message and warnings.
async fn send(client: &Client, request: Request<kube::client::Body>) -> Answer {
    let response = client.send(request).await.expect("the API server answers");
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    let message = if (200..300).contains(&status) {
        String::new()
    } else {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
    };
    Answer {
        status,
        message,
        warnings,
    }
}
