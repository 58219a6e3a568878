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

/// The requests of `username` in the audit log at `path`: how often each kind was made, and
/// which the API server refused as forbidden (403).
#[derive(Debug, Default)]
pub struct Usage {
    pub made: BTreeMap<Use, u64>,
    pub forbidden: BTreeSet<Use>,
}

pub fn usage(path: &Path, username: &str) -> Usage {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the audit log {}: {e}", path.display()));
    let mut usage = Usage::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        if event.stage != "ResponseComplete" || event.user.username != username {
            continue;
        }
        let Some(object) = event.object_ref else {
            continue;
        };
        let resource = if object.subresource.is_empty() {
            object.resource
        } else {
            format!("{}/{}", object.resource, object.subresource)
        };
        let key = Use {
            verb: event.verb,
            group: object.api_group,
            resource,
        };
        let code = event.response_status.map(|s| s.code).unwrap_or_default();
        if code == 403 {
            usage.forbidden.insert(key.clone());
        }
        // A server-side apply that made the object (201) was authorised as `create` too.
        if key.verb == "patch" && code == 201 {
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
