//! Counting the operator's requests from the API server's audit log: the API server's word,
//! not the operator's.

use std::collections::BTreeMap;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use verbund_tests::audit;

/// Requests of one user, counted by `verb resource[/subresource]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Requests {
    pub by_kind: BTreeMap<String, u64>,
    /// Requests the API server refused with 429 (throttled by API Priority and Fairness).
    pub throttled: u64,
}

impl Requests {
    const WRITES: [&'static str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

    /// Write requests (create, update, patch, delete).
    pub fn writes(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| Self::WRITES.iter().any(|w| k.starts_with(&format!("{w} "))))
            .map(|(_, n)| n)
            .sum()
    }

    /// Write requests by `verb resource`.
    pub fn write_kinds(&self) -> BTreeMap<String, u64> {
        self.by_kind
            .iter()
            .filter(|(k, _)| Self::WRITES.iter().any(|w| k.starts_with(&format!("{w} "))))
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }

    /// `list` requests.
    pub fn lists(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.starts_with("list "))
            .map(|(_, n)| n)
            .sum()
    }

    /// All requests but watches.
    pub fn total(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| !k.starts_with("watch "))
            .map(|(_, n)| n)
            .sum()
    }
}

/// A position in the audit log: requests after it can be counted.
#[derive(Debug, Clone)]
pub struct Mark {
    path: PathBuf,
    offset: u64,
}

impl Mark {
    /// The end of the log now.
    pub fn now(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Self {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// The requests of `user` logged since this mark.
    pub fn requests_of(&self, user: &str) -> Requests {
        let mut requests = Requests::default();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return requests;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return requests;
        }
        for request in audit::requests_of(BufReader::new(file), user) {
            if request.code == 429 {
                requests.throttled += 1;
            }
            *requests
                .by_kind
                .entry(format!("{} {}", request.verb, request.resource))
                .or_default() += 1;
        }
        requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_one_users_completed_requests_by_verb_and_resource() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.log");
        let event = |stage: &str, user: &str, verb: &str, resource: &str, sub: &str, code: u16| {
            serde_json::json!({
                "kind": "Event", "stage": stage, "verb": verb, "user": { "username": user },
                "objectRef": { "resource": resource, "subresource": sub },
                "responseStatus": { "code": code },
            })
            .to_string()
        };
        std::fs::write(
            &path,
            event("ResponseComplete", "op", "patch", "pods", "", 200) + "\n",
        )
        .expect("write");
        let mark = Mark::now(&path);
        let lines = [
            event("ResponseComplete", "op", "patch", "deployments", "", 200),
            event(
                "ResponseComplete",
                "op",
                "patch",
                "portalservices",
                "status",
                200,
            ),
            event("ResponseStarted", "op", "watch", "pods", "", 200),
            event("ResponseComplete", "op", "list", "pods", "", 429),
            event(
                "ResponseComplete",
                "someone",
                "patch",
                "deployments",
                "",
                200,
            ),
        ];
        let mut text = std::fs::read_to_string(&path).expect("read");
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write");
        let requests = mark.requests_of("op");
        assert_eq!(requests.writes(), 2);
        assert_eq!(requests.lists(), 1);
        assert_eq!(requests.throttled, 1);
        assert_eq!(requests.by_kind["patch portalservices/status"], 1);
    }
}
