//! Scaling bounds of a portal service (pure): the floor from the active scheduled window, and
//! the ceiling that the tenant's remaining quota can hold.

use jiff::civil::{Time, Weekday as CivilWeekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::api::portal_service::{PortalServiceSpec, ScalingWindow, Weekday};
use crate::domain::resources::Resources;
use crate::quantity::Amount;

/// The HPA's lower bound now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    pub min: i32,
    /// The window that raised it, if any.
    pub active_window: Option<String>,
}

fn civil(day: Weekday) -> CivilWeekday {
    match day {
        Weekday::Monday => CivilWeekday::Monday,
        Weekday::Tuesday => CivilWeekday::Tuesday,
        Weekday::Wednesday => CivilWeekday::Wednesday,
        Weekday::Thursday => CivilWeekday::Thursday,
        Weekday::Friday => CivilWeekday::Friday,
        Weekday::Saturday => CivilWeekday::Saturday,
        Weekday::Sunday => CivilWeekday::Sunday,
    }
}

/// "HH:MM" as a time of day; "24:00" is the end of the day (as a very last instant).
fn time_of_day(text: &str) -> Option<Time> {
    if text == "24:00" {
        return Time::new(23, 59, 59, 999_999_999).ok();
    }
    let (h, m) = text.split_once(':')?;
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

fn zone(window: &ScalingWindow) -> Option<TimeZone> {
    TimeZone::get(&window.time_zone).ok()
}

/// Whether `window` is active at `now` (in its own time zone; start inclusive, end exclusive).
pub fn is_active(window: &ScalingWindow, now: Timestamp) -> bool {
    let (Some(tz), Some(start), Some(end)) = (
        zone(window),
        time_of_day(&window.start),
        time_of_day(&window.end),
    ) else {
        return false;
    };
    let local = now.to_zoned(tz);
    let day = local.weekday();
    window.days.iter().any(|d| civil(*d) == day) && local.time() >= start && local.time() < end
}

/// The floor at `now`: the highest `minReplicas` of the active windows, at least `replicas.min`
/// and at least the baseline's `minReplicas`.
pub fn floor(spec: &PortalServiceSpec, baseline_min: Option<i32>, now: Timestamp) -> Floor {
    let base = spec.replicas.min.max(baseline_min.unwrap_or(1));
    let windows = spec
        .scaling
        .as_ref()
        .map(|s| s.windows.as_slice())
        .unwrap_or_default();
    let best = windows
        .iter()
        .filter(|w| is_active(w, now))
        .max_by_key(|w| w.min_replicas);
    match best {
        Some(w) if w.min_replicas > base => Floor {
            min: w.min_replicas,
            active_window: Some(w.name.clone()),
        },
        Some(w) => Floor {
            min: base,
            active_window: Some(w.name.clone()),
        },
        None => Floor {
            min: base,
            active_window: None,
        },
    }
}

/// The next instant after `now` at which some window starts or ends: when the floor may change.
pub fn next_boundary(spec: &PortalServiceSpec, now: Timestamp) -> Option<Timestamp> {
    let windows = spec
        .scaling
        .as_ref()
        .map(|s| s.windows.as_slice())
        .unwrap_or_default();
    let mut next: Option<Timestamp> = None;
    for window in windows {
        let (Some(tz), Some(start), Some(end)) = (
            zone(window),
            time_of_day(&window.start),
            time_of_day(&window.end),
        ) else {
            continue;
        };
        let today = now.to_zoned(tz.clone()).date();
        for offset in 0..=7 {
            let Ok(date) = today.checked_add(offset.days()) else {
                continue;
            };
            if !window.days.iter().any(|d| civil(*d) == date.weekday()) {
                continue;
            }
            for time in [start, end] {
                let Ok(at) = date.to_datetime(time).to_zoned(tz.clone()) else {
                    continue;
                };
                let at = at.timestamp();
                if at > now && next.is_none_or(|n| at < n) {
                    next = Some(at);
                }
            }
        }
    }
    next
}

/// The HPA's upper bound and, when the quota lowered it, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceiling {
    pub max: i32,
    pub limited: Option<String>,
}

/// The most pods the tenant's quota can hold for this service: `(total - used by everything
/// else) / per pod`, for CPU, memory and pod count; never above `spec_max`, never below 1.
pub fn ceiling(
    spec_max: i32,
    per_pod: Resources,
    total: Resources,
    used_by_others: Resources,
) -> Ceiling {
    let fit = |total: Amount, used: Amount, each: Amount| -> i64 {
        if each.0 <= 0 {
            return i64::MAX;
        }
        i64::try_from(total.saturating_sub(used).0 / each.0).unwrap_or(i64::MAX)
    };
    let by_cpu = fit(total.cpu, used_by_others.cpu, per_pod.cpu);
    let by_memory = fit(total.memory, used_by_others.memory, per_pod.memory);
    let by_pods = fit(total.pods, used_by_others.pods, Amount::count(1));
    let (cap, resource, free, whole, each) = [
        (
            by_cpu,
            "CPU",
            total.cpu.saturating_sub(used_by_others.cpu).to_cpu().0,
            total.cpu.to_cpu().0,
            per_pod.cpu.to_cpu().0,
        ),
        (
            by_memory,
            "memory",
            total
                .memory
                .saturating_sub(used_by_others.memory)
                .to_memory()
                .0,
            total.memory.to_memory().0,
            per_pod.memory.to_memory().0,
        ),
        (
            by_pods,
            "pods",
            total.pods.saturating_sub(used_by_others.pods).to_count().0,
            total.pods.to_count().0,
            "1".to_string(),
        ),
    ]
    .into_iter()
    .min_by_key(|c| c.0)
    .unwrap_or((i64::MAX, "", String::new(), String::new(), String::new()));
    if cap >= i64::from(spec_max) {
        return Ceiling {
            max: spec_max,
            limited: None,
        };
    }
    let max = i32::try_from(cap).unwrap_or(0).max(1);
    Ceiling {
        max,
        limited: Some(format!(
            "spec.replicas.max {spec_max} capped to {max}: the tenant's quota has {free} of {whole} {resource} free for this service ({each} per pod)"
        )),
    }
}

/// What one pod of the service requests (unparsable quantities count as zero: the schema
/// refuses them).
pub fn per_pod(spec: &PortalServiceSpec) -> Resources {
    Resources {
        cpu: Amount::of(&spec.resources.cpu).unwrap_or_default(),
        memory: Amount::of(&spec.resources.memory).unwrap_or_default(),
        pods: Amount::count(1),
    }
}

/// The ceiling for a service whose `running` pods hold resources, in a tenant with quota
/// `total` of which `tenant_used` is used: what the others leave, per pod.
pub fn ceiling_for(
    spec: &PortalServiceSpec,
    floor: i32,
    total: Resources,
    tenant_used: Resources,
    running: i64,
) -> Ceiling {
    let each = per_pod(spec);
    let others = tenant_used.saturating_sub(each.times(running));
    ceiling(spec.replicas.max.max(floor), each, total, others)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(windows: serde_json::Value) -> PortalServiceSpec {
        serde_json::from_value(serde_json::json!({
            "image": "registry.saarland.de/x:1", "ports": [{ "name": "http", "port": 8080 }],
            "replicas": { "min": 2, "max": 10 }, "scaling": { "windows": windows }
        }))
        .expect("spec")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_monday_morning_window_raises_the_floor_in_berlin_time() {
        let s = spec(
            serde_json::json!([{ "name": "montagmorgen", "days": ["Monday"], "start": "07:00", "end": "11:00", "minReplicas": 6 }]),
        );
        // 2026-11-30 is a Monday; 06:30 UTC is 07:30 in Berlin (CET).
        let active = floor(&s, None, at("2026-11-30T06:30:00Z"));
        assert_eq!(
            active,
            Floor {
                min: 6,
                active_window: Some("montagmorgen".into())
            }
        );
        assert_eq!(
            floor(&s, None, at("2026-11-30T10:00:00Z")).min,
            2,
            "11:00 Berlin: over"
        );
        assert_eq!(
            floor(&s, None, at("2026-12-01T06:30:00Z")).min,
            2,
            "Tuesday"
        );
        assert_eq!(
            floor(&s, Some(3), at("2026-12-01T06:30:00Z")).min,
            3,
            "baseline minimum"
        );
    }

    #[test]
    fn the_next_boundary_is_the_next_start_or_end() {
        let s = spec(
            serde_json::json!([{ "name": "m", "days": ["Monday"], "start": "07:00", "end": "11:00", "minReplicas": 6 }]),
        );
        assert_eq!(
            next_boundary(&s, at("2026-11-28T12:00:00Z")),
            Some(at("2026-11-30T06:00:00Z"))
        );
        assert_eq!(
            next_boundary(&s, at("2026-11-30T06:30:00Z")),
            Some(at("2026-11-30T10:00:00Z"))
        );
        assert_eq!(
            next_boundary(&spec(serde_json::json!([])), at("2026-11-30T06:30:00Z")),
            None
        );
    }

    fn r(cpu: &str, memory: &str, pods: i64) -> Resources {
        Resources {
            cpu: Amount::parse(cpu).expect("cpu"),
            memory: Amount::parse(memory).expect("memory"),
            pods: Amount::count(pods),
        }
    }

    #[test]
    fn the_ceiling_is_what_the_quota_can_hold() {
        let per_pod = r("500m", "256Mi", 1);
        assert_eq!(
            ceiling(10, per_pod, r("24", "96Gi", 200), r("2", "4Gi", 10)),
            Ceiling {
                max: 10,
                limited: None
            }
        );
        let capped = ceiling(10, per_pod, r("4", "96Gi", 200), r("2", "4Gi", 10));
        assert_eq!(capped.max, 4);
        let message = capped.limited.expect("limited");
        assert!(
            message.contains("capped to 4") && message.contains("2 of 4 CPU"),
            "{message}"
        );
        assert_eq!(
            ceiling(10, per_pod, r("1", "96Gi", 200), r("1", "4Gi", 10)).max,
            1,
            "never below one"
        );
    }
}
