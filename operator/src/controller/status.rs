//! Writing a status, shared by the controllers: only when it changed, a new failure told once
//! as a Warning Event, and changes of figures alone (ready pods, requested CPU, quota use)
//! paced so that a burst of pods does not rewrite a status per pod.
//!
//! A change that matters is written at once: a condition changing its status or reason, a new
//! `observedGeneration`, or a first status. A change of figures or messages alone waits until
//! the object's last status write is [`FIGURES_INTERVAL`] old; the reconcile comes back then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use serde::Serialize;

use super::apply::Writable;
use super::error::Failure;
use super::{Context, Error};
use crate::api::portal_service::PortalServiceStatus;
use crate::api::site::SiteStatus;
use crate::api::tenant::TenantStatus;
use crate::conditions::{self, kind};

/// The least time between two status writes of one object that change only figures.
pub const FIGURES_INTERVAL: Duration = Duration::from_secs(5);

/// A status with standard conditions and an observed generation.
pub trait WithConditions: Serialize + PartialEq {
    fn conditions(&self) -> &[Condition];
    fn observed_generation(&self) -> Option<i64>;
}

macro_rules! with_conditions {
    ($($status:ty),*) => {$(
        impl WithConditions for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
        }
    )*};
}

with_conditions!(SiteStatus, TenantStatus, PortalServiceStatus);

/// True when going from `old` to `new` changes what a status says, not only its figures: a
/// first status, a new observed generation, a condition's status or reason.
pub fn significant<S: WithConditions>(old: Option<&S>, new: &S) -> bool {
    let Some(old) = old else { return true };
    let gist = |conditions: &[Condition]| {
        let mut gist: Vec<(String, String, String)> = conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        gist.sort();
        gist
    };
    old.observed_generation() != new.observed_generation()
        || gist(old.conditions()) != gist(new.conditions())
}

/// When each object's status was last written.
#[derive(Debug, Default)]
pub struct Pacer {
    written: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    /// How long a figures-only change of `key` must still wait (None: write now).
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let written = self.written.lock().ok()?;
        let since = now.duration_since(*written.get(key)?);
        (since < FIGURES_INTERVAL).then(|| FIGURES_INTERVAL - since)
    }

    pub fn wrote(&self, key: &str, now: Instant) {
        if let Ok(mut written) = self.written.lock() {
            written.insert(key.to_string(), now);
        }
    }
}

/// What became of a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written, or nothing to write.
    Done,
    /// A figures-only change held back: reconcile again after this long.
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
    let now = Instant::now();
    if !significant(old, status)
        && let Some(wait) = ctx.pacer.wait(&key, now)
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
    ctx.writer.apply_status(api, object, status).await?;
    ctx.pacer.wrote(&key, now);
    Ok(Written::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Desired, reason, set_condition};
    use k8s_openapi::jiff::Timestamp;

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
    fn figures_wait_for_the_interval_since_the_last_write() {
        let pacer = Pacer::default();
        let start = Instant::now();
        assert_eq!(pacer.wait("ps/a", start), None, "never written");
        pacer.wrote("ps/a", start);
        assert_eq!(
            pacer.wait("ps/a", start + Duration::from_secs(2)),
            Some(FIGURES_INTERVAL - Duration::from_secs(2))
        );
        assert_eq!(pacer.wait("ps/a", start + FIGURES_INTERVAL), None);
        assert_eq!(pacer.wait("ps/b", start), None, "per object");
    }
}
