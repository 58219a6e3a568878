//! Writing a status, shared by the controllers: only when it changed, a new failure told once
//! as a Warning Event, and changes of figures alone (ready pods, requested CPU, quota use)
//! paced so that a burst of pods does not rewrite a status per pod.
//!
//! A change that matters is written at once: a condition changing its status or reason, a new
//! `observedGeneration`, a first status, or a fact others act on (a tenant's routes and sites,
//! which admission reads). A change of figures or messages alone waits until the object's last
//! status write is its kind's [`WithConditions::FIGURES_INTERVAL`] old; the reconcile comes
//! back then. The pool's metrics (`pool_metrics`) read these statuses, so they follow alike.
//!
//! A status is decided on the cached object. Until the cache shows the last status written
//! (its `resourceVersion` moved on), nothing is written: the reconciles that a busy object
//! gets in the meantime would otherwise write the same change again from the old status.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use serde::Serialize;
use tracing::debug;

use super::apply::Writable;
use super::error::Failure;
use super::{Context, Error};
use crate::api::portal_service::PortalServiceStatus;
use crate::api::site::SiteStatus;
use crate::api::tenant::TenantStatus;
use crate::conditions::{self, kind};

/// The longest pacing of figures-only status writes, over every kind.
pub const FIGURES_INTERVAL_MAX: Duration = Duration::from_secs(30);

/// A status with standard conditions and an observed generation.
pub trait WithConditions: Serialize + PartialEq {
    /// The least time between two writes of one object's status that change only figures.
    const FIGURES_INTERVAL: Duration;
    fn conditions(&self) -> &[Condition];
    fn observed_generation(&self) -> Option<i64>;
    /// Whether what others act on, besides the conditions, is the same in `other`.
    fn same_facts(&self, _other: &Self) -> bool {
        true
    }
}

/// The accessors every Verbund status shares: its `conditions` and `observedGeneration` fields.
macro_rules! standard_fields {
    () => {
        fn conditions(&self) -> &[Condition] {
            &self.conditions
        }
        fn observed_generation(&self) -> Option<i64> {
            self.observed_generation
        }
    };
}

impl WithConditions for PortalServiceStatus {
    /// Ready pods per site: what `kubectl get` shows while a rollout goes on.
    const FIGURES_INTERVAL: Duration = Duration::from_secs(10);
    standard_fields!();
}

impl WithConditions for TenantStatus {
    /// Quota use and the count of services, which follow every pod of all the tenant's
    /// services: a summary, as slow as a Prometheus scrape.
    const FIGURES_INTERVAL: Duration = FIGURES_INTERVAL_MAX;
    standard_fields!();
    /// The tenant's admission policy reads its namespaces, routes and sites from here.
    fn same_facts(&self, other: &Self) -> bool {
        self.namespaces == other.namespaces
            && self.routes == other.routes
            && self.sites == other.sites
    }
}

impl WithConditions for SiteStatus {
    /// Requested and allocatable resources, which follow every pod of the site.
    const FIGURES_INTERVAL: Duration = Duration::from_secs(10);
    standard_fields!();
}

/// What going from `old` to `new` changes in a status: the first of these that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The object had no status yet.
    First,
    /// A new `observedGeneration`.
    Generation,
    /// A condition appeared, went, or changed its status or reason: `Type status/reason`
    /// before and after.
    Condition { from: String, to: String },
    /// A fact others act on (see [`WithConditions::same_facts`]).
    Facts,
    /// Figures or messages only.
    Figures,
}

impl Change {
    /// Whether the change is written at once rather than paced.
    pub fn significant(&self) -> bool {
        *self != Change::Figures
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::First => f.write_str("first status"),
            Change::Generation => f.write_str("new generation"),
            Change::Condition { from, to } => write!(f, "condition {from} -> {to}"),
            Change::Facts => f.write_str("facts"),
            Change::Figures => f.write_str("figures"),
        }
    }
}

/// Classifies going from `old` to `new` (see [`Change`]).
pub fn change<S: WithConditions>(old: Option<&S>, new: &S) -> Change {
    let Some(old) = old else { return Change::First };
    if old.observed_generation() != new.observed_generation() {
        return Change::Generation;
    }
    let gist = |conditions: &[Condition]| {
        let mut gist: Vec<String> = conditions
            .iter()
            .map(|c| format!("{} {}/{}", c.type_, c.status, c.reason))
            .collect();
        gist.sort();
        gist
    };
    let (before, after) = (gist(old.conditions()), gist(new.conditions()));
    if before != after {
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|c| !b.contains(c))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Change::Condition {
            from: only(&before, &after),
            to: only(&after, &before),
        };
    }
    if !old.same_facts(new) {
        return Change::Facts;
    }
    Change::Figures
}

/// How long a reconcile waits before it looks again at a status whose last write the cache has
/// not shown yet. The watch event of that write normally brings it back sooner.
pub const UNSEEN_WRITE_RETRY: Duration = Duration::from_secs(1);

/// Each object's last status write: when, and, until the cache shows it, the version the
/// cache held then.
#[derive(Debug, Default)]
pub struct Pacer {
    written: Mutex<Writes>,
}

/// The last writes, pruned of those too old to matter (deleted objects' among them).
#[derive(Debug, Default)]
struct Writes {
    last: HashMap<String, LastWrite>,
    pruned: Option<Instant>,
}

/// How long a last write is remembered: beyond every kind's pacing, and far beyond the time a
/// watch event takes to reach the cache.
const REMEMBERED: Duration = Duration::from_secs(2 * FIGURES_INTERVAL_MAX.as_secs());

#[derive(Debug)]
struct LastWrite {
    at: Instant,
    /// The object's cached `resourceVersion` when the write was decided, if the write made a
    /// new one: while the cache still holds this version, it does not show the write.
    unseen_from: Option<String>,
}

impl Pacer {
    /// How long a figures-only change of `key` must still wait, `interval` after its last
    /// write (None: write now).
    pub fn wait(&self, key: &str, now: Instant, interval: Duration) -> Option<Duration> {
        let written = self.written.lock().ok()?;
        let since = now.duration_since(written.last.get(key)?.at);
        (since < interval).then(|| interval - since)
    }

    /// Whether the cache, which holds `cached_version` of `key`, does not show the last status
    /// written yet: a status built from it would be decided on what was there before that
    /// write, and would write the same again.
    pub fn unseen(&self, key: &str, cached_version: Option<&str>) -> bool {
        let Ok(written) = self.written.lock() else {
            return false;
        };
        written
            .last
            .get(key)
            .and_then(|last| last.unseen_from.as_deref())
            .is_some_and(|version| Some(version) == cached_version)
    }

    /// Records a status write of `key` decided on `cached_version` that left the object at
    /// `new_version` (the same when the write changed nothing).
    pub fn wrote(
        &self,
        key: &str,
        now: Instant,
        cached_version: Option<&str>,
        new_version: Option<&str>,
    ) {
        if let Ok(mut written) = self.written.lock() {
            let unseen_from = cached_version
                .filter(|cached| Some(*cached) != new_version)
                .map(str::to_string);
            written.last.insert(
                key.to_string(),
                LastWrite {
                    at: now,
                    unseen_from,
                },
            );
            if written
                .pruned
                .is_none_or(|pruned| now.duration_since(pruned) >= REMEMBERED)
            {
                written
                    .last
                    .retain(|_, last| now.duration_since(last.at) < REMEMBERED);
                written.pruned = Some(now);
            }
        }
    }
}

/// What became of a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written, or nothing to write.
    Done,
    /// Held back, a figures-only change paced or the last write not in the cache yet:
    /// reconcile again after this long.
    Paced(Duration),
}

/// Writes `status` when it differs from the object's `old` one (see the module docs for the
/// pacing); a failure that changes the `Ready` condition is also told once as a Warning Event.
pub async fn write<K: Writable, S: WithConditions>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    old: Option<&S>,
    status: &S,
    failure: Option<&Failure>,
) -> Result<Written, Error> {
    if old == Some(status) {
        return Ok(Written::Done);
    }
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.name_any()
    );
    let cached_version = object.meta().resource_version.as_deref();
    if ctx.pacer.unseen(&key, cached_version) {
        // Our last write is on its way to the cache; its watch event brings this back.
        return Ok(Written::Paced(UNSEEN_WRITE_RETRY));
    }
    let now = Instant::now();
    let change = change(old, status);
    if !change.significant()
        && let Some(wait) = ctx.pacer.wait(&key, now, S::FIGURES_INTERVAL)
    {
        return Ok(Written::Paced(wait));
    }
    let old_conditions = old.map(S::conditions).unwrap_or_default();
    if let Some(failure) = failure
        && conditions::changed(old_conditions, status.conditions(), kind::READY)
    {
        ctx.writer
            .event(
                object,
                EventType::Warning,
                failure.reason,
                failure.message.clone(),
            )
            .await;
    }
    debug!(object = %key, %change, cached_version = cached_version.unwrap_or_default(), "writing status");
    let new_version = ctx.writer.apply_status(api, object, status).await?;
    ctx.pacer
        .wrote(&key, now, cached_version, new_version.as_deref());
    Ok(Written::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Desired, reason, set_condition};
    use k8s_openapi::jiff::Timestamp;

    fn significant<S: WithConditions>(old: Option<&S>, new: &S) -> bool {
        change(old, new).significant()
    }

    fn status(ready: bool, count: i32, generation: i64) -> PortalServiceStatus {
        let mut s = PortalServiceStatus {
            observed_generation: Some(generation),
            ..Default::default()
        };
        s.replicas.ready = count;
        let (reason, message) = if ready {
            (reason::AVAILABLE, format!("{count} pods ready"))
        } else {
            (reason::PODS_NOT_READY, format!("{count} of 2 ready"))
        };
        set_condition(
            &mut s.conditions,
            Desired::new(kind::READY, ready, reason, message),
            Some(generation),
            Timestamp::UNIX_EPOCH,
        );
        s
    }

    #[test]
    fn figures_alone_are_not_significant_but_conditions_and_generations_are() {
        let base = status(true, 2, 1);
        assert!(significant(None, &base), "a first status");
        assert!(
            !significant(Some(&base), &status(true, 3, 1)),
            "one more ready pod"
        );
        assert!(
            significant(Some(&base), &status(false, 1, 1)),
            "Ready flips"
        );
        assert!(
            significant(Some(&base), &status(true, 2, 2)),
            "a new generation"
        );
    }

    #[test]
    fn a_change_says_which_condition_moved() {
        let change = change(Some(&status(true, 2, 1)), &status(false, 1, 1));
        assert_eq!(
            change.to_string(),
            "condition Ready True/Available -> Ready False/PodsNotReady"
        );
        assert_eq!(
            super::change(Some(&status(true, 2, 1)), &status(true, 3, 1)),
            Change::Figures
        );
    }

    #[test]
    fn a_tenants_routes_are_written_at_once_its_figures_paced() {
        let base = TenantStatus {
            services: 1,
            ..Default::default()
        };
        let more = TenantStatus {
            services: 2,
            ..Default::default()
        };
        assert!(!significant(Some(&base), &more), "a count alone");
        let routed = TenantStatus {
            routes: vec![crate::api::tenant::GrantedRoute {
                host: "service.saarland.de".into(),
                path_prefix: "/a".into(),
                except: Vec::new(),
            }],
            ..base.clone()
        };
        assert!(significant(Some(&base), &routed), "a new route");
        let moved = TenantStatus {
            namespaces: vec!["b".into()],
            ..base.clone()
        };
        assert!(significant(Some(&base), &moved), "a new namespace");
        assert!(
            TenantStatus::FIGURES_INTERVAL > PortalServiceStatus::FIGURES_INTERVAL,
            "a tenant's figures change with every pod of all its services"
        );
    }

    #[test]
    fn figures_wait_for_the_interval_since_the_last_write() {
        let pacer = Pacer::default();
        let start = Instant::now();
        let interval = PortalServiceStatus::FIGURES_INTERVAL;
        assert_eq!(pacer.wait("ps/a", start, interval), None, "never written");
        pacer.wrote("ps/a", start, Some("1"), Some("2"));
        assert_eq!(
            pacer.wait("ps/a", start + Duration::from_secs(2), interval),
            Some(interval - Duration::from_secs(2))
        );
        assert_eq!(pacer.wait("ps/a", start + interval, interval), None);
        assert_eq!(pacer.wait("ps/b", start, interval), None, "per object");
    }

    #[test]
    fn a_status_waits_while_the_cache_does_not_show_the_last_write() {
        let pacer = Pacer::default();
        let now = Instant::now();
        assert!(!pacer.unseen("t/lhs", Some("7")), "never written");
        pacer.wrote("t/lhs", now, Some("7"), Some("9"));
        assert!(pacer.unseen("t/lhs", Some("7")), "the cache still at 7");
        assert!(
            !pacer.unseen("t/lhs", Some("9")),
            "the cache shows the write"
        );
        assert!(!pacer.unseen("t/lhs", Some("12")), "and later writes");
        // A write that changed nothing makes no new version and no watch event.
        pacer.wrote("t/lhs", now, Some("12"), Some("12"));
        assert!(!pacer.unseen("t/lhs", Some("12")));
        pacer.wrote("t/lhs", now, Some("12"), Some("13"));
        // Another object's write a while later forgets it (deleted objects' writes go so).
        pacer.wrote("t/saarbruecken", now + REMEMBERED, None, Some("1"));
        assert!(!pacer.unseen("t/lhs", Some("12")), "forgotten");
        assert_eq!(pacer.wait("t/lhs", now + REMEMBERED, REMEMBERED), None);
    }
}
