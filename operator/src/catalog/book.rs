//! The catalogue in memory: every entry by key, a revision that grows with each change, the
//! recent changes for clients that resume, and a bounded broadcast of new ones.
//!
//! Memory stays bounded whatever the clients do: the history keeps [`HISTORY`] changes and
//! the broadcast [`BROADCAST`]; a watcher that falls further behind gets a fresh snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::entry::{Filter, Page, page_token};
use super::proto;
use super::proto::service_event::Type;

/// Changes kept for clients resuming from a revision.
pub const HISTORY: usize = 4096;
/// Changes buffered for live watchers; one further behind gets a fresh snapshot.
pub const BROADCAST: usize = 1024;

/// One change of the catalogue: the entry before and after (either may be absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub revision: u64,
    pub before: Option<proto::Service>,
    pub after: Option<proto::Service>,
}

impl Change {
    /// What a watcher with `filter` sees of this change, if anything.
    pub fn seen_through(&self, filter: &Filter) -> Option<proto::ServiceEvent> {
        let was = self.before.as_ref().filter(|s| filter.matches(s));
        let is = self.after.as_ref().filter(|s| filter.matches(s));
        let (kind, service) = match (was, is) {
            (None, None) => return None,
            (None, Some(now)) => (Type::Added, now.clone()),
            (Some(_), Some(now)) => (Type::Modified, now.clone()),
            (Some(then), None) => (
                Type::Deleted,
                proto::Service {
                    name: then.name.clone(),
                    ..Default::default()
                },
            ),
        };
        Some(proto::ServiceEvent {
            r#type: kind as i32,
            revision: self.revision,
            service: Some(service),
        })
    }
}

#[derive(Debug)]
struct Inner {
    entries: BTreeMap<String, proto::Service>,
    revision: u64,
    history: VecDeque<Arc<Change>>,
}

/// The catalogue, shared by the feeder (writes) and the gRPC service (reads).
#[derive(Debug)]
pub struct Book {
    inner: RwLock<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// Where a new watcher starts.
#[derive(Debug)]
pub struct Start {
    /// The events to send first: a snapshot and its end, or the changes since the revision
    /// the client resumes from.
    pub events: Vec<proto::ServiceEvent>,
    /// Every change after those.
    pub changes: broadcast::Receiver<Arc<Change>>,
}

impl Book {
    /// An empty catalogue whose first change gets revision `first + 1`. Starting from the time
    /// of day in microseconds makes revisions grow across restarts, so a client resuming from
    /// a revision of an earlier process gets a snapshot rather than a wrong replay.
    pub fn new(first: u64) -> Self {
        Self {
            inner: RwLock::new(Inner {
                entries: BTreeMap::new(),
                revision: first,
                history: VecDeque::new(),
            }),
            changes: broadcast::channel(BROADCAST).0,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// Entries in the catalogue.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the entry of `key` (`None`: removes it). Returns whether anything changed.
    pub fn set(&self, key: &str, entry: Option<proto::Service>) -> bool {
        let mut inner = self.write();
        let before = inner.entries.get(key).cloned();
        if before == entry {
            return false;
        }
        match &entry {
            Some(e) => inner.entries.insert(key.to_string(), e.clone()),
            None => inner.entries.remove(key),
        };
        inner.revision += 1;
        let change = Arc::new(Change {
            revision: inner.revision,
            before,
            after: entry,
        });
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(change.clone());
        // Sent under the lock, so that a watcher subscribing under the read lock neither
        // misses a change nor gets one twice. No receiver is fine.
        let _ = self.changes.send(change);
        true
    }

    /// Makes the catalogue hold exactly `entries`; returns the number of changes.
    pub fn replace_all(&self, entries: BTreeMap<String, proto::Service>) -> usize {
        let stale: Vec<String> = self
            .read()
            .entries
            .keys()
            .filter(|k| !entries.contains_key(*k))
            .cloned()
            .collect();
        let mut changed = 0;
        for key in stale {
            changed += usize::from(self.set(&key, None));
        }
        for (key, entry) in entries {
            changed += usize::from(self.set(&key, Some(entry)));
        }
        changed
    }

    pub fn get(&self, key: &str) -> Option<proto::Service> {
        self.read().entries.get(key).cloned()
    }

    /// One page of the entries matching `filter`, in key order; the token of the next page
    /// (empty on the last); the number matching over all pages.
    pub fn list(&self, filter: &Filter, page: &Page) -> (Vec<proto::Service>, String, usize) {
        let inner = self.read();
        let matching = inner.entries.values().filter(|s| filter.matches(s));
        let total = matching.clone().count();
        let mut rest =
            matching.skip_while(|s| page.after.as_ref().is_some_and(|after| &s.name <= after));
        let services: Vec<proto::Service> = rest.by_ref().take(page.size).cloned().collect();
        let next = match (rest.next(), services.last()) {
            (Some(_), Some(last)) => page_token(&last.name, filter),
            _ => String::new(),
        };
        (services, next, total)
    }

    /// The snapshot of the entries matching `filter`, ending with its end marker.
    fn snapshot(inner: &Inner, filter: &Filter) -> Vec<proto::ServiceEvent> {
        let revision = inner.revision;
        inner
            .entries
            .values()
            .filter(|s| filter.matches(s))
            .map(|s| proto::ServiceEvent {
                r#type: Type::Snapshot as i32,
                revision,
                service: Some(s.clone()),
            })
            .chain(std::iter::once(proto::ServiceEvent {
                r#type: Type::SnapshotEnd as i32,
                revision,
                service: None,
            }))
            .collect()
    }

    /// Where a watcher with `filter` starts: after `resume` when the history still holds
    /// every change since, else with a snapshot.
    pub fn watch(&self, filter: &Filter, resume: u64) -> Start {
        let inner = self.read();
        let changes = self.changes.subscribe();
        let oldest = inner
            .history
            .front()
            .map_or(inner.revision, |c| c.revision - 1);
        let events = if resume != 0 && resume >= oldest && resume <= inner.revision {
            inner
                .history
                .iter()
                .filter(|c| c.revision > resume)
                .filter_map(|c| c.seen_through(filter))
                .collect()
        } else {
            Self::snapshot(&inner, filter)
        };
        Start { events, changes }
    }

    /// A fresh snapshot and subscription, for a watcher that fell behind.
    pub fn resnapshot(&self, filter: &Filter) -> Start {
        let inner = self.read();
        let changes = self.changes.subscribe();
        Start {
            events: Self::snapshot(&inner, filter),
            changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, tenant: &str) -> proto::Service {
        proto::Service {
            name: name.into(),
            tenant: tenant.into(),
            title: format!("Dienst {name}"),
            ..Default::default()
        }
    }

    fn tenant(name: &str) -> Filter {
        Filter::parse(Some(&proto::ServiceFilter {
            tenant: name.into(),
            ..Default::default()
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn types(events: &[proto::ServiceEvent]) -> Vec<(Type, String)> {
        events
            .iter()
            .map(|e| {
                (
                    Type::try_from(e.r#type).unwrap_or(Type::Unspecified),
                    e.service
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn unchanged_entries_make_no_revision() {
        let book = Book::new(100);
        assert!(book.set("a/x", Some(service("a/x", "t"))));
        assert!(!book.set("a/x", Some(service("a/x", "t"))));
        assert_eq!(book.revision(), 101);
        assert!(book.set("a/x", None));
        assert!(!book.set("a/x", None));
        assert_eq!(book.revision(), 102);
    }

    #[test]
    fn pages_cover_every_match_once_in_key_order() {
        let book = Book::new(0);
        for i in 0..7 {
            let key = format!("ns/s{i}");
            book.set(
                &key,
                Some(service(&key, if i % 2 == 0 { "even" } else { "odd" })),
            );
        }
        let even = tenant("even");
        let mut seen = Vec::new();
        let mut page = Page::parse(2, "", &even).unwrap_or_else(|e| panic!("{e}"));
        loop {
            let (services, next, total) = book.list(&even, &page);
            assert_eq!(total, 4);
            seen.extend(services.into_iter().map(|s| s.name));
            if next.is_empty() {
                break;
            }
            page = Page::parse(2, &next, &even).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(seen, ["ns/s0", "ns/s2", "ns/s4", "ns/s6"]);
    }

    #[test]
    fn a_watch_starts_with_a_snapshot_and_resumes_from_a_revision() {
        let book = Book::new(0);
        book.set("a/x", Some(service("a/x", "t")));
        book.set("a/y", Some(service("a/y", "u")));
        let start = book.watch(&tenant("t"), 0);
        assert_eq!(
            types(&start.events),
            [
                (Type::Snapshot, "a/x".into()),
                (Type::SnapshotEnd, String::new())
            ]
        );
        let seen = start.events[1].revision;

        // A change that moves a/x out of the filter is a deletion for this watcher; one that
        // brings a/y in, an addition.
        book.set("a/x", Some(service("a/x", "u")));
        book.set("a/y", Some(service("a/y", "t")));
        book.set("a/z", Some(service("a/z", "u")));
        let resumed = book.watch(&tenant("t"), seen);
        assert_eq!(
            types(&resumed.events),
            [(Type::Deleted, "a/x".into()), (Type::Added, "a/y".into())]
        );
        // A revision from before the history (or another process) gets a snapshot.
        let old = book.watch(&tenant("t"), 1_000_000);
        assert_eq!(
            old.events.last().map(|e| e.r#type),
            Some(Type::SnapshotEnd as i32)
        );
    }

    #[tokio::test]
    async fn a_subscribed_watcher_receives_each_change_once() {
        let book = Book::new(0);
        let mut start = book.watch(&Filter::default(), 0);
        book.set("a/x", Some(service("a/x", "t")));
        book.set("a/x", None);
        let first = start.changes.recv().await.unwrap_or_else(|e| panic!("{e}"));
        let second = start.changes.recv().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((first.revision, second.revision), (1, 2));
        assert!(start.changes.try_recv().is_err());
    }

    #[test]
    fn a_watcher_that_falls_behind_lags_instead_of_holding_memory() {
        let book = Book::new(0);
        let mut start = book.watch(&Filter::default(), 0);
        for i in 0..(BROADCAST + 10) {
            book.set("a/x", Some(service("a/x", &format!("t{i}"))));
        }
        assert!(matches!(
            start.changes.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
