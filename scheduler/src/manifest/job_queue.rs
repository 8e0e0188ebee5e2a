//! `kind: JobQueue`: its wire spec (environment order, time limits, fair share) and validation.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobQueueSpec {
    pub priority: i64,
    #[serde(default)]
    pub state: Option<ResourceState>,
    pub compute_environment_order: Vec<ComputeEnvironmentOrder>,
    #[serde(default)]
    pub job_state_time_limit_actions: Vec<JobStateTimeLimitActionSpec>,
    /// AWS Batch references a SchedulingPolicy by ARN; here the policy is written in the queue.
    #[serde(default)]
    pub scheduling_policy: Option<SchedulingPolicySpec>,
    /// How long finished jobs are kept, where it differs from the server's `--job-retention`.
    #[serde(default)]
    pub job_retention: Option<JobRetentionSpec>,
    /// Kueue's: `None` (the default) or `Hold` (place nothing new; running work goes on).
    #[serde(default)]
    pub stop_policy: Option<String>,
    /// At most this many of the queue's jobs STARTING or RUNNING at once (1 for one at a time).
    #[serde(default)]
    pub max_running_jobs: Option<u32>,
}

/// `jobRetention`: seconds finished jobs are kept after they stop, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRetentionSpec {
    #[serde(default)]
    pub succeeded_seconds: Option<u64>,
    #[serde(default)]
    pub failed_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulingPolicySpec {
    pub fairshare_policy: FairsharePolicySpec,
}

/// AWS Batch's FairsharePolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FairsharePolicySpec {
    #[serde(default)]
    pub share_decay_seconds: Option<u64>,
    #[serde(default)]
    pub compute_reservation: Option<u32>,
    #[serde(default)]
    pub share_distribution: Vec<ShareAttributesSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShareAttributesSpec {
    pub share_identifier: String,
    #[serde(default)]
    pub weight_factor: Option<f64>,
}

/// AWS Batch's limits on a fair-share policy.
pub(super) const MAX_SHARE_DECAY_SECONDS: u64 = 604_800;
pub(super) const MAX_COMPUTE_RESERVATION: u32 = 99;
pub(super) const WEIGHT_FACTOR_RANGE: std::ops::RangeInclusive<f64> = 0.0001..=999.9999;

/// AWS Batch's JobStateTimeLimitAction: what to do with a job left too long in a state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobStateTimeLimitActionSpec {
    pub reason: String,
    pub state: String,
    pub max_time_seconds: u64,
    pub action: String,
}

/// The longest `maxTimeSeconds` (AWS Batch's; it also has a floor of 600, which is lifted here so
/// a short limit can be tried out).
pub const MAX_TIME_LIMIT_SECONDS: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeEnvironmentOrder {
    pub order: i64,
    pub compute_environment: String,
}

pub fn job_queue(name: QueueName, spec: &JobQueueSpec) -> Result<JobQueue, FieldError> {
    if spec.compute_environment_order.is_empty() {
        return Err(FieldError::new(
            "computeEnvironmentOrder",
            "must name at least one compute environment",
        ));
    }
    let mut order = spec.compute_environment_order.clone();
    order.sort_by_key(|entry| entry.order);
    let mut seen_orders = HashSet::new();
    let mut environments = Vec::new();
    for (index, entry) in spec.compute_environment_order.iter().enumerate() {
        let field = format!("computeEnvironmentOrder[{index}]");
        if !seen_orders.insert(entry.order) {
            return Err(FieldError::new(
                format!("{field}.order"),
                format!(
                    "order {} is used twice; give each entry its own",
                    entry.order
                ),
            ));
        }
        EnvironmentName::try_from(entry.compute_environment.clone())
            .map_err(|m| FieldError::new(format!("{field}.computeEnvironment"), m))?;
    }
    for entry in order {
        environments.push(EnvironmentName::try_from(entry.compute_environment).expect("checked"));
    }
    let (held, drain) = match spec.stop_policy.as_deref() {
        None | Some("None") => (false, false),
        Some("Hold") => (true, false),
        Some("HoldAndDrain") => (true, true),
        Some(other) => {
            return Err(FieldError::new(
                "stopPolicy",
                format!("{other:?} is not a stop policy; use None, Hold or HoldAndDrain"),
            ))
        }
    };
    if spec.max_running_jobs == Some(0) {
        return Err(FieldError::new(
            "maxRunningJobs",
            "is 0; give at least 1, or leave it out for no cap (stopPolicy: Hold places nothing)",
        ));
    }
    Ok(JobQueue {
        name,
        held,
        drain,
        max_running_jobs: spec.max_running_jobs,
        priority: spec.priority,
        state: spec.state.unwrap_or(ResourceState::Enabled),
        compute_environments: environments,
        runnable_time_limits: time_limit_actions(&spec.job_state_time_limit_actions)?,
        fair_share: spec
            .scheduling_policy
            .as_ref()
            .map(|policy| fair_share_policy(&policy.fairshare_policy))
            .transpose()?,
        job_retention: spec
            .job_retention
            .map_or_else(JobRetention::default, |retention| JobRetention {
                succeeded_seconds: retention.succeeded_seconds,
                failed_seconds: retention.failed_seconds,
            }),
    })
}

pub(super) fn fair_share_policy(spec: &FairsharePolicySpec) -> Result<FairSharePolicy, FieldError> {
    let field = |name: &str| format!("schedulingPolicy.fairsharePolicy.{name}");
    let share_decay_seconds = spec.share_decay_seconds.unwrap_or(0);
    if share_decay_seconds > MAX_SHARE_DECAY_SECONDS {
        return Err(FieldError::new(
            field("shareDecaySeconds"),
            format!("is {share_decay_seconds}; give 0 to {MAX_SHARE_DECAY_SECONDS}"),
        ));
    }
    let compute_reservation = spec.compute_reservation.unwrap_or(0);
    if compute_reservation > MAX_COMPUTE_RESERVATION {
        return Err(FieldError::new(
            field("computeReservation"),
            format!(
                "is {compute_reservation}; give a percentage from 0 to {MAX_COMPUTE_RESERVATION}"
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut share_distribution = Vec::new();
    for (index, entry) in spec.share_distribution.iter().enumerate() {
        let entry_field = |name: &str| field(&format!("shareDistribution[{index}].{name}"));
        validate_share_identifier(&entry.share_identifier, true)
            .map_err(|reason| FieldError::new(entry_field("shareIdentifier"), reason))?;
        if !seen.insert(entry.share_identifier.as_str()) {
            return Err(FieldError::new(
                entry_field("shareIdentifier"),
                format!("{:?} is listed twice", entry.share_identifier),
            ));
        }
        let weight_factor = entry.weight_factor.unwrap_or(1.0);
        if !WEIGHT_FACTOR_RANGE.contains(&weight_factor) {
            return Err(FieldError::new(
                entry_field("weightFactor"),
                format!("is {weight_factor}; give 0.0001 to 999.9999 (lower gets a larger share)"),
            ));
        }
        share_distribution.push(ShareWeight {
            share_identifier: entry.share_identifier.clone(),
            weight_factor,
        });
    }
    Ok(FairSharePolicy {
        share_decay_seconds,
        compute_reservation,
        share_distribution,
    })
}

/// A share identifier: 1 to 255 letters, digits and underscores (AWS Batch's rule; hyphens are
/// accepted too), and in a policy a trailing `*` for a prefix.
pub(super) fn validate_share_identifier(value: &str, prefix_allowed: bool) -> Result<(), String> {
    let body = match value.strip_suffix('*') {
        Some(body) if prefix_allowed => body,
        _ => value,
    };
    let valid = body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (value.len(), valid) {
        (0, _) => Err("is empty".into()),
        (256.., _) => Err(format!("is {} characters long; 255 at most", value.len())),
        (_, false) => Err(format!(
            "{value:?} may only contain letters, digits, underscores and hyphens{}",
            if prefix_allowed {
                ", with an optional trailing *"
            } else {
                ""
            }
        )),
        (_, true) => Ok(()),
    }
}

pub(super) fn time_limit_actions(
    specs: &[JobStateTimeLimitActionSpec],
) -> Result<Vec<RunnableTimeLimit>, FieldError> {
    specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let field = |name: &str| format!("jobStateTimeLimitActions[{index}].{name}");
            if spec.state != "RUNNABLE" {
                return Err(FieldError::new(
                    field("state"),
                    format!("{:?} is not supported; RUNNABLE is the only state with a time limit, as in AWS Batch", spec.state),
                ));
            }
            if spec.action != "CANCEL" {
                return Err(FieldError::new(
                    field("action"),
                    format!("{:?} is not supported; use CANCEL", spec.action),
                ));
            }
            if !(1..=MAX_TIME_LIMIT_SECONDS).contains(&spec.max_time_seconds) {
                return Err(FieldError::new(
                    field("maxTimeSeconds"),
                    format!(
                        "is {}; give 1 to {MAX_TIME_LIMIT_SECONDS} seconds",
                        spec.max_time_seconds
                    ),
                ));
            }
            if spec.reason.trim().is_empty() {
                return Err(FieldError::new(
                    field("reason"),
                    "is empty; say why such jobs are cancelled (it becomes their statusReason)",
                ));
            }
            Ok(RunnableTimeLimit {
                max_seconds: spec.max_time_seconds,
                reason: spec.reason.clone(),
            })
        })
        .collect()
}
