//! What one user did, from the API server's audit log (a cluster started with `audit`): the
//! API server's word, not the client's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    stage: String,
    verb: String,
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<Status>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    code: u16,
}

/// One kind of request: verb, API group and resource (`pods`, `tenants/status`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Use {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

impl std::fmt::Display for Use {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

/// One completed request of the audit log: who, what, and the API server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub verb: String,
    pub group: String,
    /// `pods`, `tenants/status`; `-` for a request on no resource.
    pub resource: String,
    pub code: u16,
    /// The authorizer refused it (`authorization.k8s.io/decision: forbid`); a 403 from
    /// admission (a namespace being deleted) is not that.
    pub unauthorized: bool,
}

/// The completed requests of `username` in the audit log lines of `log`.
pub fn requests_of<'a>(
    log: impl std::io::BufRead + 'a,
    username: &'a str,
) -> impl Iterator<Item = Request> + 'a {
    log.lines().map_while(Result::ok).filter_map(move |line| {
        let event = serde_json::from_str::<Event>(&line).ok()?;
        if event.stage != "ResponseComplete" || event.user.username != username {
            return None;
        }
        let (group, resource) = match event.object_ref {
            Some(o) if o.subresource.is_empty() => (o.api_group, o.resource),
            Some(o) => (o.api_group, format!("{}/{}", o.resource, o.subresource)),
            None => (String::new(), "-".into()),
        };
        let unauthorized = event
            .annotations
            .get("authorization.k8s.io/decision")
            .is_some_and(|d| d == "forbid");
        Some(Request {
            verb: event.verb,
            group,
            resource,
            code: event.response_status.map(|s| s.code).unwrap_or_default(),
            unauthorized,
        })
    })
}

/// The requests of `username` in the audit log at `path`: how often each kind was made, and
/// which the authorizer refused.
#[derive(Debug, Default)]
pub struct Usage {
    pub made: BTreeMap<Use, u64>,
    pub forbidden: BTreeSet<Use>,
}

pub fn usage(path: &Path, username: &str) -> Usage {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("cannot read the audit log {}: {e}", path.display()));
    let mut usage = Usage::default();
    for request in requests_of(std::io::BufReader::new(file), username) {
        if request.resource == "-" {
            continue;
        }
        let key = Use {
            verb: request.verb,
            group: request.group,
            resource: request.resource,
        };
        if request.unauthorized {
            usage.forbidden.insert(key.clone());
        }
        // A server-side apply that made the object (201) was authorised as `create` too.
        if key.verb == "patch" && request.code == 201 {
            let created = Use {
                verb: "create".into(),
                ..key.clone()
            };
            *usage.made.entry(created).or_default() += 1;
        }
        *usage.made.entry(key).or_default() += 1;
    }
    usage
}
