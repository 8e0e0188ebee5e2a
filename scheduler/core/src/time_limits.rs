//! Queue `jobStateTimeLimitActions`: when a RUNNABLE job has waited too long. Pure: the dispatcher
//! asks at each poll and the store carries the answer out.

use super::model::{JobQueue, RunnableTimeLimit};

/// The limit that acts first on a queue's RUNNABLE jobs (the shortest), and the time at or before
/// which a job must have become RUNNABLE to be over it. A job waiting out a retry backoff counts as
/// RUNNABLE from the end of its backoff.
pub fn runnable_cutoff(queue: &JobQueue, now: i64) -> Option<(&RunnableTimeLimit, i64)> {
    let limit = queue
        .runnable_time_limits
        .iter()
        .min_by_key(|limit| limit.max_seconds)?;
    let max_millis = i64::try_from(limit.max_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    Some((limit, now.saturating_sub(max_millis)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{QueueName, ResourceState};

    fn queue(limits: &[(u64, &str)]) -> JobQueue {
        JobQueue {
            name: QueueName::try_from("q".to_string()).unwrap(),
            priority: 1,
            state: ResourceState::Enabled,
            compute_environments: vec![],
            runnable_time_limits: limits
                .iter()
                .map(|(max_seconds, reason)| RunnableTimeLimit {
                    max_seconds: *max_seconds,
                    reason: reason.to_string(),
                })
                .collect(),
            fair_share: None,
            job_retention: Default::default(),
            held: false,
            drain: false,
            max_running_jobs: None,
        }
    }

    #[test]
    fn the_shortest_limit_acts_first() {
        type Limits<'a> = &'a [(u64, &'a str)];
        let cases: [(Limits, Option<(&str, i64)>); 4] = [
            (&[], None),
            (&[(600, "stuck")], Some(("stuck", 1_000_000 - 600_000))),
            (
                &[(900, "late"), (60, "soon")],
                Some(("soon", 1_000_000 - 60_000)),
            ),
            (&[(86_400, "day")], Some(("day", 1_000_000 - 86_400_000))),
        ];
        for (limits, expected) in cases {
            let queue = queue(limits);
            let got = runnable_cutoff(&queue, 1_000_000)
                .map(|(limit, cutoff)| (limit.reason.as_str(), cutoff));
            assert_eq!(got, expected, "{limits:?}");
        }
    }
}
