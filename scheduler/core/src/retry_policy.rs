//! A job definition's `retryStrategy`: how many attempts, which exits retry or end the job,
//! how a retry's requirements grow, and the backoff between attempts — validated values. What
//! they decide for an ended attempt is `crate::retry`'s.

use serde::{Deserialize, Serialize};

use crate::model::Resources;

/// AWS Batch's retryStrategy, and a backoff it lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, 1 to 10.
    pub attempts: u32,
    /// Checked in order after a failed attempt; the first that matches decides. None matching
    /// means retry, as AWS Batch.
    #[serde(default)]
    pub evaluate_on_exit: Vec<ExitRule>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// How many attempts `RETRY_WITHOUT_COUNT` may retry without spending one of `attempts`
    /// (disruptions: evictions, preemptions, lost executors).
    #[serde(default = "default_max_disruptions")]
    pub max_disruptions: u32,
}

/// `retryStrategy.maxDisruptions` when a definition names none.
pub const DEFAULT_MAX_DISRUPTIONS: u32 = 3;
/// The most `retryStrategy.maxDisruptions` may be.
pub const MAX_DISRUPTIONS: u32 = 100;

fn default_max_disruptions() -> u32 {
    DEFAULT_MAX_DISRUPTIONS
}

impl RetryPolicy {
    pub fn attempts(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            evaluate_on_exit: Vec::new(),
            backoff: None,
            max_disruptions: DEFAULT_MAX_DISRUPTIONS,
        }
    }
}

/// One `evaluateOnExit` entry. Patterns match whole strings; a trailing `*` matches any rest.
/// An absent pattern matches anything; all present ones must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExitRule {
    pub on_exit_code: Option<String>,
    pub on_reason: Option<String>,
    pub on_status_reason: Option<String>,
    pub action: RetryAction,
    /// On a retry this rule decides, the next attempt's requirements, grown (for an attempt
    /// killed for memory, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_adjustments: Option<ResourceAdjustments>,
}

/// `evaluateOnExit[].resourceAdjustments`: how a retry's requirements grow from the attempt's
/// that ended. Factors are kept in hundredths (200 doubles), so the stored spec stays exact; they
/// read and write as factors (`memoryFactor: 2.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAdjustments {
    #[serde(
        rename = "memoryFactor",
        with = "factor_in_hundredths",
        default = "factor_in_hundredths::unchanged"
    )]
    #[schema(value_type = f64)]
    pub memory_factor_percent: u32,
    /// The most memory a retry is given, in MiB.
    #[serde(
        rename = "maxMemoryMiB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_mib: Option<u64>,
    #[serde(
        rename = "vcpuFactor",
        with = "factor_in_hundredths",
        default = "factor_in_hundredths::unchanged"
    )]
    #[schema(value_type = f64)]
    pub vcpu_factor_percent: u32,
    /// The most vCPUs a retry is given (kept in thousandths).
    #[serde(
        rename = "maxVcpus",
        with = "millis_as_units",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>)]
    pub max_vcpu_millis: Option<u64>,
}

impl ResourceAdjustments {
    /// The requirements of the attempt after one that ran with `ran_with`: each grown by its
    /// factor, rounded up, at most its maximum — and never below what it was (a maximum under
    /// the current size leaves it as it is). GPUs stay.
    pub fn apply(&self, ran_with: Resources) -> Resources {
        let grow = |value: u64, percent: u32, max: Option<u64>| {
            let grown = (value * u64::from(percent)).div_ceil(100);
            grown.min(max.unwrap_or(u64::MAX)).max(value)
        };
        Resources {
            vcpu_millis: grow(
                ran_with.vcpu_millis,
                self.vcpu_factor_percent,
                self.max_vcpu_millis,
            ),
            memory_mib: grow(
                ran_with.memory_mib,
                self.memory_factor_percent,
                self.max_memory_mib,
            ),
            gpus: ran_with.gpus,
        }
    }
}

/// A factor written as a number (`2.0`), kept in hundredths (`200`).
mod factor_in_hundredths {
    use serde::{Deserialize, Deserializer, Serializer};

    /// A factor of 1.
    pub fn unchanged() -> u32 {
        100
    }

    pub fn serialize<S: Serializer>(percent: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(f64::from(*percent) / 100.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let factor = f64::deserialize(deserializer)?;
        if !(1.0..=100.0).contains(&factor) {
            return Err(serde::de::Error::custom(format!(
                "{factor} is not a factor from 1 to 100"
            )));
        }
        Ok((factor * 100.0).round() as u32)
    }
}

/// An amount written in units (`2.5` vCPUs), kept in thousandths (`2500`).
mod millis_as_units {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        millis: &Option<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match millis {
            Some(millis) => serializer.serialize_f64(*millis as f64 / 1000.0),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        let units = Option::<f64>::deserialize(deserializer)?;
        units
            .map(|units| {
                if units > 0.0 && units <= 1_000_000.0 {
                    Ok((units * 1000.0).round() as u64)
                } else {
                    Err(serde::de::Error::custom(format!(
                        "{units} is not an amount above 0"
                    )))
                }
            })
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RetryAction {
    Retry,
    Exit,
    /// Retry without spending one of `attempts`, for an attempt lost to a disruption (an
    /// eviction, a preemption, an executor that vanished) rather than to the job's own failure:
    /// Kubernetes' podFailurePolicy `Ignore`, bounded by `maxDisruptions`.
    #[serde(rename = "RETRY_WITHOUT_COUNT")]
    RetryWithoutCount,
}

/// The wait before a retry: `initial × factor^(n-1)` after the n-th attempt, at most `max`, and
/// with jitter a random part of it taken off so retries of many jobs spread out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    pub initial_delay_seconds: u64,
    /// In hundredths, so the spec stays exact: 200 is a factor of 2.
    pub factor_percent: u64,
    pub max_delay_seconds: u64,
    pub jitter: bool,
}
