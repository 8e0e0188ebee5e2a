//! `kind: Schedule`: expression, time zone, window, catch-up and overlap, and its target.

use super::*;

/// `kind: Schedule`: EventBridge Scheduler's fields, Kubernetes CronJob's overlap policy, and a
/// catch-up policy for ticks missed while no server ran. The target is a SubmitJob request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    pub schedule_expression: String,
    /// IANA name; UTC when absent. EventBridge Scheduler calls it scheduleExpressionTimezone.
    #[serde(default, alias = "scheduleExpressionTimezone")]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub state: Option<ResourceState>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    #[serde(default)]
    pub flexible_time_window: Option<FlexibleTimeWindowSpec>,
    #[serde(default)]
    pub overlap_policy: Option<OverlapPolicy>,
    #[serde(default)]
    pub catch_up: Option<CatchUpSpec>,
    /// Kubernetes CronJob's: how many finished jobs of each outcome to keep; older ones are
    /// deleted (with their output) by the retention pass. Unset: the queue's retention decides.
    #[serde(default)]
    pub successful_jobs_history_limit: Option<u32>,
    #[serde(default)]
    pub failed_jobs_history_limit: Option<u32>,
    /// EventBridge Scheduler's: `DELETE` removes the schedule once it has no tick left.
    #[serde(default)]
    pub action_after_completion: Option<String>,
    pub target: SubmitJobRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlexibleTimeWindowSpec {
    /// EventBridge Scheduler's `OFF` or `FLEXIBLE`; the window alone decides here.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub maximum_window_in_minutes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatchUpSpec {
    pub policy: CatchUpPolicy,
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
}

/// The longest flexible window EventBridge Scheduler allows.
pub(super) const MAX_FLEXIBLE_WINDOW_MINUTES: u32 = 1440;

pub fn schedule(name: String, spec: &ScheduleSpec) -> Result<Schedule, FieldError> {
    let expression = parse_expression(&spec.schedule_expression).map_err(|error| {
        FieldError::new(
            "scheduleExpression",
            format!("{:?} {error}", spec.schedule_expression),
        )
    })?;
    let time_zone: chrono_tz::Tz = match &spec.time_zone {
        Some(zone) => zone.parse().map_err(|_| {
            FieldError::new(
                "timeZone",
                format!("{zone:?} is not an IANA time zone; use a name like Europe/Berlin or UTC"),
            )
        })?,
        None => chrono_tz::UTC,
    };
    let date = |field: &str,
                text: &Option<String>|
     -> Result<Option<chrono::DateTime<chrono::Utc>>, FieldError> {
        text.as_ref()
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|time| time.with_timezone(&chrono::Utc))
                    .map_err(|error| {
                        FieldError::new(
                            field,
                            format!("{text:?} is not an RFC 3339 time like 2026-12-01T00:00:00Z: {error}"),
                        )
                    })
            })
            .transpose()
    };
    let start = date("startDate", &spec.start_date)?;
    let end = date("endDate", &spec.end_date)?;
    if let (Some(start), Some(end)) = (start, end) {
        if end <= start {
            return Err(FieldError::new("endDate", "must be after startDate"));
        }
    }
    let flexible_window_minutes = match &spec.flexible_time_window {
        Some(window) => {
            let minutes = window.maximum_window_in_minutes.unwrap_or(0);
            match window.mode.as_deref() {
                None | Some("FLEXIBLE") | Some("OFF") => {}
                Some(other) => {
                    return Err(FieldError::new(
                        "flexibleTimeWindow.mode",
                        format!("{other:?} is not a mode; use OFF or FLEXIBLE"),
                    ))
                }
            }
            if minutes > MAX_FLEXIBLE_WINDOW_MINUTES {
                return Err(FieldError::new(
                    "flexibleTimeWindow.maximumWindowInMinutes",
                    format!("is {minutes}; give 0 to {MAX_FLEXIBLE_WINDOW_MINUTES}"),
                ));
            }
            match window.mode.as_deref() {
                Some("OFF") => 0,
                _ => minutes,
            }
        }
        None => 0,
    };
    let catch_up = match &spec.catch_up {
        Some(catch_up) => CatchUp {
            policy: catch_up.policy,
            max_age_seconds: catch_up.max_age_seconds,
        },
        None => CatchUp {
            policy: CatchUpPolicy::Latest,
            max_age_seconds: None,
        },
    };
    if !spec.target.depends_on.is_empty() {
        return Err(FieldError::new(
            "target.dependsOn",
            "a schedule's runs cannot depend on job ids; chain jobs with an event rule instead",
        ));
    }
    if spec.target.job_queue.trim().is_empty() || spec.target.job_definition.trim().is_empty() {
        return Err(FieldError::new(
            "target",
            "needs jobQueue and jobDefinition: the job each tick submits",
        ));
    }
    let delete_after_completion = match spec.action_after_completion.as_deref() {
        None | Some("NONE") => false,
        Some("DELETE") => true,
        Some(other) => {
            return Err(FieldError::new(
                "actionAfterCompletion",
                format!("{other:?} is not an action; use NONE or DELETE"),
            ))
        }
    };
    Ok(Schedule {
        name,
        expression,
        expression_text: spec.schedule_expression.clone(),
        time_zone,
        enabled: spec.state.unwrap_or(ResourceState::Enabled) == ResourceState::Enabled,
        start,
        end,
        flexible_window_minutes,
        overlap: spec.overlap_policy.unwrap_or(OverlapPolicy::Allow),
        catch_up,
        history: HistoryLimits {
            succeeded: spec.successful_jobs_history_limit,
            failed: spec.failed_jobs_history_limit,
        },
        delete_after_completion,
    })
}
