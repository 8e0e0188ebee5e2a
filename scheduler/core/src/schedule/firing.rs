//! Firing decisions: which ticks are due (catch-up), and what an overlapping run does.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use super::*;

/// A validated `kind: Schedule`. Stored as `ScheduleForm`: the expression as its text, parsed
/// again when read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ScheduleForm", into = "ScheduleForm")]
pub struct Schedule {
    pub name: String,
    pub expression: ScheduleExpression,
    /// As written, for display.
    pub expression_text: String,
    pub time_zone: Tz,
    pub enabled: bool,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Each tick fires at a random point up to this late (EventBridge Scheduler's
    /// flexibleTimeWindow), spreading many schedules of the same tick.
    pub flexible_window_minutes: u32,
    pub overlap: OverlapPolicy,
    pub catch_up: CatchUp,
    /// How many of its finished jobs are kept, by outcome (Kubernetes CronJob's
    /// successfulJobsHistoryLimit and failedJobsHistoryLimit); `None` leaves them to retention.
    pub history: HistoryLimits,
    /// Deleted once it has no tick left (EventBridge Scheduler's `actionAfterCompletion: DELETE`):
    /// an `at()` schedule after its one tick, another after its end date.
    pub delete_after_completion: bool,
}

/// `Schedule` as it is stored.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleForm {
    name: String,
    expression: String,
    time_zone: Tz,
    enabled: bool,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    flexible_window_minutes: u32,
    overlap: OverlapPolicy,
    catch_up: CatchUp,
    history: HistoryLimits,
    #[serde(default)]
    delete_after_completion: bool,
}

impl From<Schedule> for ScheduleForm {
    fn from(schedule: Schedule) -> ScheduleForm {
        ScheduleForm {
            name: schedule.name,
            expression: schedule.expression_text,
            time_zone: schedule.time_zone,
            enabled: schedule.enabled,
            start: schedule.start,
            end: schedule.end,
            flexible_window_minutes: schedule.flexible_window_minutes,
            overlap: schedule.overlap,
            catch_up: schedule.catch_up,
            history: schedule.history,
            delete_after_completion: schedule.delete_after_completion,
        }
    }
}

impl TryFrom<ScheduleForm> for Schedule {
    type Error = ExpressionError;
    fn try_from(form: ScheduleForm) -> Result<Schedule, ExpressionError> {
        Ok(Schedule {
            expression: parse_expression(&form.expression)?,
            name: form.name,
            expression_text: form.expression,
            time_zone: form.time_zone,
            enabled: form.enabled,
            start: form.start,
            end: form.end,
            flexible_window_minutes: form.flexible_window_minutes,
            overlap: form.overlap,
            catch_up: form.catch_up,
            history: form.history,
            delete_after_completion: form.delete_after_completion,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HistoryLimits {
    pub succeeded: Option<u32>,
    pub failed: Option<u32>,
}

/// Kubernetes CronJob's concurrencyPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OverlapPolicy {
    /// Fire even while the last fired job runs.
    Allow,
    /// Skip a tick while the last fired job has not finished.
    Forbid,
    /// Terminate the last fired job if it has not finished, then fire.
    Replace,
}

/// What happens to ticks missed while no server ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatchUp {
    pub policy: CatchUpPolicy,
    /// Missed ticks older than this are skipped (recorded as such), whatever the policy.
    pub max_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpPolicy {
    /// Skip every missed tick.
    None,
    /// Fire only the most recent missed tick.
    Latest,
    /// Fire every missed tick.
    All,
}

/// How late a tick may fire and still count as on time rather than missed.
pub const ON_TIME_SECONDS: i64 = 60;
/// The most ticks one evaluation considers, so a tiny rate after a long downtime stays bounded.
pub const MAX_TICKS_PER_EVALUATION: usize = 1000;

/// What to do with one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickDecision {
    Fire { tick: DateTime<Utc> },
    Skip { tick: DateTime<Utc>, reason: String },
}

/// The ticks of `schedule` that are due at `now`, having handled every tick up to `since`
/// (exclusive of later ones), each with what to do. Missed ticks (older than `ON_TIME_SECONDS`)
/// follow the catch-up policy; none is dropped silently: skipped ones are returned as `Skip`.
pub fn due_ticks(
    schedule: &Schedule,
    anchor: DateTime<Utc>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<TickDecision> {
    if !schedule.enabled {
        return Vec::new();
    }
    let mut ticks = Vec::new();
    let mut cursor = match schedule.start {
        // A start date later than `since` means nothing before it counts.
        Some(start) if start > since => start - Duration::milliseconds(1),
        _ => since,
    };
    while ticks.len() < MAX_TICKS_PER_EVALUATION {
        match next_fire(&schedule.expression, schedule.time_zone, anchor, cursor) {
            Some(tick) if tick <= now && schedule.end.is_none_or(|end| tick <= end) => {
                ticks.push(tick);
                cursor = tick;
            }
            _ => break,
        }
    }
    let on_time = |tick: &DateTime<Utc>| (now - *tick).num_seconds() < ON_TIME_SECONDS;
    let too_old = |tick: &DateTime<Utc>| {
        schedule
            .catch_up
            .max_age_seconds
            .is_some_and(|max| (now - *tick).num_seconds() > max as i64)
    };
    let latest_missed = ticks.iter().rev().find(|tick| !on_time(tick)).copied();
    ticks
        .into_iter()
        .map(|tick| {
            if on_time(&tick) {
                return TickDecision::Fire { tick };
            }
            let skip = |reason: String| TickDecision::Skip { tick, reason };
            if too_old(&tick) {
                return skip(format!(
                    "missed while no server ran, older than catchUp.maxAgeSeconds ({})",
                    schedule.catch_up.max_age_seconds.unwrap_or_default()
                ));
            }
            match schedule.catch_up.policy {
                CatchUpPolicy::All => TickDecision::Fire { tick },
                CatchUpPolicy::Latest if Some(tick) == latest_missed => TickDecision::Fire { tick },
                CatchUpPolicy::Latest => skip(
                    "missed while no server ran; catchUp.policy latest fires only the latest"
                        .into(),
                ),
                CatchUpPolicy::None => {
                    skip("missed while no server ran; catchUp.policy is none".into())
                }
            }
        })
        .collect()
}

/// What the overlap policy says about firing while the last fired job is `last_job_finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapAction {
    Fire,
    Skip,
    TerminateThenFire,
}

pub fn overlap_action(policy: OverlapPolicy, last_job_finished: bool) -> OverlapAction {
    match (policy, last_job_finished) {
        (_, true) | (OverlapPolicy::Allow, false) => OverlapAction::Fire,
        (OverlapPolicy::Forbid, false) => OverlapAction::Skip,
        (OverlapPolicy::Replace, false) => OverlapAction::TerminateThenFire,
    }
}

/// How late within its flexible window a tick fires: a stable fraction of the window per
/// (schedule, tick), so every replica computes the same instant.
pub fn flexible_delay(schedule: &Schedule, tick: DateTime<Utc>) -> Duration {
    if schedule.flexible_window_minutes == 0 {
        return Duration::zero();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schedule
        .name
        .bytes()
        .chain(tick.timestamp_millis().to_le_bytes())
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    let window_ms = i64::from(schedule.flexible_window_minutes) * 60_000;
    Duration::milliseconds((hash % window_ms as u64) as i64)
}

#[cfg(test)]
mod decision_tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn schedule(expression: &str, policy: CatchUpPolicy, max_age: Option<u64>) -> Schedule {
        Schedule {
            name: "s".into(),
            expression: parse_expression(expression).unwrap(),
            expression_text: expression.into(),
            time_zone: chrono_tz::UTC,
            enabled: true,
            start: None,
            end: None,
            flexible_window_minutes: 0,
            overlap: OverlapPolicy::Allow,
            catch_up: CatchUp {
                policy,
                max_age_seconds: max_age,
            },
            history: HistoryLimits::default(),
            delete_after_completion: false,
        }
    }

    fn summary(decisions: &[TickDecision]) -> Vec<String> {
        decisions
            .iter()
            .map(|decision| match decision {
                TickDecision::Fire { tick } => format!("fire {}", tick.format("%H:%M")),
                TickDecision::Skip { tick, .. } => format!("skip {}", tick.format("%H:%M")),
            })
            .collect()
    }

    #[test]
    fn missed_ticks_follow_the_catch_up_policy() {
        // Every 10 minutes; the server was down from 10:00 to 10:35; it is now 10:40:20, so 10:40
        // is on time and 10:10 to 10:30 were missed.
        let since = utc("2026-11-21T10:00:00Z");
        let now = utc("2026-11-21T10:40:20Z");
        let cases: [(CatchUpPolicy, Option<u64>, &[&str]); 5] = [
            (
                CatchUpPolicy::None,
                None,
                &["skip 10:10", "skip 10:20", "skip 10:30", "fire 10:40"],
            ),
            (
                CatchUpPolicy::Latest,
                None,
                &["skip 10:10", "skip 10:20", "fire 10:30", "fire 10:40"],
            ),
            (
                CatchUpPolicy::All,
                None,
                &["fire 10:10", "fire 10:20", "fire 10:30", "fire 10:40"],
            ),
            // maxAge 1300 s: 10:10 (1820 s old) is too old, 10:20 (1220 s) is not.
            (
                CatchUpPolicy::All,
                Some(1300),
                &["skip 10:10", "fire 10:20", "fire 10:30", "fire 10:40"],
            ),
            (
                CatchUpPolicy::Latest,
                Some(60),
                &["skip 10:10", "skip 10:20", "skip 10:30", "fire 10:40"],
            ),
        ];
        for (policy, max_age, expected) in cases {
            let schedule = schedule("*/10 * * * *", policy, max_age);
            let decisions = due_ticks(&schedule, since, since, now);
            assert_eq!(summary(&decisions), *expected, "{policy:?} {max_age:?}");
        }
    }

    #[test]
    fn start_end_and_state_bound_the_ticks() {
        let since = utc("2026-11-21T10:00:00Z");
        let now = utc("2026-11-21T10:00:50Z");
        let mut every_minute = schedule("rate(1 minute)", CatchUpPolicy::All, None);
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            Vec::<String>::new()
        );
        let now = utc("2026-11-21T10:03:10Z");
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            ["fire 10:01", "fire 10:02", "fire 10:03"]
        );
        every_minute.end = Some(utc("2026-11-21T10:02:00Z"));
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            ["fire 10:01", "fire 10:02"]
        );
        every_minute.end = None;
        every_minute.start = Some(utc("2026-11-21T10:02:30Z"));
        assert_eq!(
            summary(&due_ticks(&every_minute, since, since, now)),
            ["fire 10:03"]
        );
        every_minute.enabled = false;
        assert!(due_ticks(&every_minute, since, since, now).is_empty());
    }

    #[test]
    fn overlap_policies_as_kubernetes() {
        use OverlapAction::*;
        let cases = [
            (OverlapPolicy::Allow, false, Fire),
            (OverlapPolicy::Forbid, false, Skip),
            (OverlapPolicy::Replace, false, TerminateThenFire),
            (OverlapPolicy::Forbid, true, Fire),
            (OverlapPolicy::Replace, true, Fire),
        ];
        for (policy, finished, expected) in cases {
            assert_eq!(
                overlap_action(policy, finished),
                expected,
                "{policy:?} {finished}"
            );
        }
    }

    #[test]
    fn the_flexible_delay_is_stable_and_within_the_window() {
        let mut s = schedule("@hourly", CatchUpPolicy::None, None);
        let tick = utc("2026-11-21T10:00:00Z");
        assert_eq!(flexible_delay(&s, tick), Duration::zero());
        s.flexible_window_minutes = 15;
        let delay = flexible_delay(&s, tick);
        assert_eq!(delay, flexible_delay(&s, tick));
        assert!(delay >= Duration::zero() && delay < Duration::minutes(15));
    }
}
