//! `kind: ConcurrencyLimit`: at most `max` jobs per value of a key running at once
//! (`core::concurrency`).

use super::*;
use crate::core::concurrency::{ConcurrencyLimit, LimitKey, MAX_LIMIT};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConcurrencyLimitSpec {
    /// `Ref::PARAMETER`, `jobDefinition` or `shareIdentifier`.
    pub key: String,
    pub max: i64,
    /// The queues whose jobs it counts and holds; every queue when absent.
    #[serde(default)]
    pub job_queues: Vec<String>,
}

pub fn concurrency_limit(
    name: String,
    spec: &ConcurrencyLimitSpec,
) -> Result<ConcurrencyLimit, FieldError> {
    let key = LimitKey::parse(&spec.key).map_err(|message| FieldError::new("key", message))?;
    let max = u32::try_from(spec.max)
        .ok()
        .filter(|max| *max <= MAX_LIMIT)
        .ok_or_else(|| {
            FieldError::new(
                "max",
                format!(
                    "is {}; give 0 (hold every such job) to {MAX_LIMIT}",
                    spec.max
                ),
            )
        })?;
    let mut job_queues = Vec::with_capacity(spec.job_queues.len());
    for (index, queue) in spec.job_queues.iter().enumerate() {
        let queue = QueueName::try_from(queue.clone())
            .map_err(|message| FieldError::new(format!("jobQueues[{index}]"), message))?;
        if job_queues.contains(&queue) {
            return Err(FieldError::new(
                format!("jobQueues[{index}]"),
                format!("{queue} is listed twice"),
            ));
        }
        job_queues.push(queue);
    }
    Ok(ConcurrencyLimit {
        name,
        key,
        max,
        job_queues,
    })
}
