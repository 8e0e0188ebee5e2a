//! The end of things: whether a resource or a job may be deleted (AWS Batch's rules), and when a
//! finished job's time to live is over. Pure: the store reads the facts, these functions judge
//! them, and the store deletes only what they allow.

use crate::model::{
    ComputeEnvironment, EnvironmentName, JobId, JobQueue, JobStatus, QueueName, ResourceState,
};

/// Why something may not be deleted yet, worded to say what to do about it (a 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteRefusal {
    #[error("job queue \"{0}\" is ENABLED: disable it first (apply it with `state: DISABLED`), wait for its jobs to finish, then delete it")]
    QueueEnabled(QueueName),
    #[error("job queue \"{queue}\" still has unfinished jobs (job {example} is {status}): cancel or terminate them, or wait for them to finish, then delete it")]
    QueueHasUnfinishedJobs {
        queue: QueueName,
        example: JobId,
        status: JobStatus,
    },
    #[error("compute environment \"{0}\" is ENABLED: disable it first (apply it with `state: DISABLED`), then delete it")]
    EnvironmentEnabled(EnvironmentName),
    #[error("compute environment \"{environment}\" is named by job queue(s) {}: remove it from their computeEnvironmentOrder (or delete them) first", quoted(.queues))]
    EnvironmentNamedByQueues {
        environment: EnvironmentName,
        queues: Vec<QueueName>,
    },
    #[error("compute environment \"{environment}\" still runs job {example}: wait for it to finish or terminate it, then delete the environment")]
    EnvironmentRunsJobs {
        environment: EnvironmentName,
        example: JobId,
    },
    #[error("job {job_id} is {status}: only finished jobs (SUCCEEDED or FAILED) can be deleted; cancel or terminate it first")]
    JobUnfinished { job_id: JobId, status: JobStatus },
    #[error("job {job_id} is needed by job {dependent}, which waits on it: delete it once that job has moved on")]
    JobNeeded { job_id: JobId, dependent: JobId },
    #[error("job {job_id} is a child of array job {parent}: delete the array job to delete its children")]
    ArrayChild { job_id: JobId, parent: JobId },
}

fn quoted(names: &[QueueName]) -> String {
    names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a job's wait cannot be changed (suspended, resumed, reprioritised): it no longer waits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job_id} is {status}: only waiting jobs (SUBMITTED, PENDING, RUNNABLE) can be {action}{}", advice(*.status))]
pub struct NotWaiting {
    pub job_id: JobId,
    pub status: JobStatus,
    /// What was asked: "suspended", "resumed", "given a new scheduling priority".
    pub action: &'static str,
}

fn advice(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Starting | JobStatus::Running => "; terminate it to stop it",
        JobStatus::Submitted
        | JobStatus::Pending
        | JobStatus::Runnable
        | JobStatus::Succeeded
        | JobStatus::Failed => "",
    }
}

/// Whether a job in `status` still waits, so that its hold or priority may change.
pub fn check_waiting(
    job_id: &JobId,
    status: JobStatus,
    action: &'static str,
) -> Result<(), NotWaiting> {
    match status {
        JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable => Ok(()),
        JobStatus::Starting | JobStatus::Running | JobStatus::Succeeded | JobStatus::Failed => {
            Err(NotWaiting {
                job_id: job_id.clone(),
                status,
                action,
            })
        }
    }
}

/// A queue may go when it is DISABLED and holds no unfinished job (`unfinished` is one of them,
/// if any, with its status).
pub fn check_queue_delete(
    queue: &JobQueue,
    unfinished: Option<(JobId, JobStatus)>,
) -> Result<(), DeleteRefusal> {
    if queue.state != ResourceState::Disabled {
        return Err(DeleteRefusal::QueueEnabled(queue.name.clone()));
    }
    match unfinished {
        Some((example, status)) => Err(DeleteRefusal::QueueHasUnfinishedJobs {
            queue: queue.name.clone(),
            example,
            status,
        }),
        None => Ok(()),
    }
}

/// An environment may go when it is DISABLED, no queue names it and no attempt runs on it.
pub fn check_environment_delete(
    environment: &ComputeEnvironment,
    queues: &[JobQueue],
    running: Option<JobId>,
) -> Result<(), DeleteRefusal> {
    if environment.state != ResourceState::Disabled {
        return Err(DeleteRefusal::EnvironmentEnabled(environment.name.clone()));
    }
    let naming: Vec<QueueName> = queues
        .iter()
        .filter(|queue| queue.compute_environments.contains(&environment.name))
        .map(|queue| queue.name.clone())
        .collect();
    if !naming.is_empty() {
        return Err(DeleteRefusal::EnvironmentNamedByQueues {
            environment: environment.name.clone(),
            queues: naming,
        });
    }
    match running {
        Some(example) => Err(DeleteRefusal::EnvironmentRunsJobs {
            environment: environment.name.clone(),
            example,
        }),
        None => Ok(()),
    }
}

/// A job may go when it has finished and no waiting job depends on it (`dependent`, if any):
/// deleting it would leave that job waiting for ever.
pub fn check_job_delete(
    job_id: &JobId,
    status: JobStatus,
    dependent: Option<JobId>,
) -> Result<(), DeleteRefusal> {
    if !status.is_terminal() {
        return Err(DeleteRefusal::JobUnfinished {
            job_id: job_id.clone(),
            status,
        });
    }
    match dependent {
        Some(dependent) => Err(DeleteRefusal::JobNeeded {
            job_id: job_id.clone(),
            dependent,
        }),
        None => Ok(()),
    }
}

/// How long finished jobs are kept, in seconds, by how they ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub succeeded_seconds: u64,
    pub failed_seconds: u64,
}

impl Retention {
    /// Both outcomes kept for `seconds`.
    pub fn uniform(seconds: u64) -> Retention {
        Retention {
            succeeded_seconds: seconds,
            failed_seconds: seconds,
        }
    }

    /// The queue's own retention where it sets one, this (the server's default) elsewhere.
    pub fn for_queue(self, queue: &JobQueue) -> Retention {
        let own = queue.job_retention;
        Retention {
            succeeded_seconds: own.succeeded_seconds.unwrap_or(self.succeeded_seconds),
            failed_seconds: own.failed_seconds.unwrap_or(self.failed_seconds),
        }
    }

    /// Jobs that ended with `status` before the returned time (milliseconds) have outlived it.
    pub fn cutoff(&self, status: JobStatus, now: i64) -> Option<i64> {
        let seconds = match status {
            JobStatus::Succeeded => self.succeeded_seconds,
            JobStatus::Failed => self.failed_seconds,
            JobStatus::Submitted
            | JobStatus::Pending
            | JobStatus::Runnable
            | JobStatus::Starting
            | JobStatus::Running => return None,
        };
        let millis = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        Some(now.saturating_sub(millis))
    }
}

/// Parses a human duration: a whole number followed by `s`, `m`, `h` or `d` (`90s`, `12h`,
/// `30d`); a bare number is seconds. Returns seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write a whole number with s, m, h or d, such as 90s, 12h or 30d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} has the unit {unit:?}; use s, m, h or d, such as 90s, 12h or 30d"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, JobRetention, Resources};

    fn queue(state: ResourceState, environments: &[&str]) -> JobQueue {
        JobQueue {
            name: QueueName::try_from("q".to_string()).unwrap(),
            priority: 1,
            state,
            compute_environments: environments
                .iter()
                .map(|name| EnvironmentName::try_from(name.to_string()).unwrap())
                .collect(),
            runnable_time_limits: Vec::new(),
            fair_share: None,
            job_retention: JobRetention::default(),
            held: false,
            drain: false,
            max_running_jobs: None,
        }
    }

    fn environment(state: ResourceState) -> ComputeEnvironment {
        ComputeEnvironment {
            name: EnvironmentName::try_from("ce".to_string()).unwrap(),
            backend: Backend::Process,
            state,
            capacity: Resources::default(),
        }
    }

    fn job(id: &str) -> JobId {
        JobId(id.to_string())
    }

    #[test]
    fn a_queue_goes_only_disabled_and_empty() {
        let enabled = queue(ResourceState::Enabled, &["ce"]);
        assert!(matches!(
            check_queue_delete(&enabled, None),
            Err(DeleteRefusal::QueueEnabled(_))
        ));
        let disabled = queue(ResourceState::Disabled, &["ce"]);
        let refusal =
            check_queue_delete(&disabled, Some((job("j1"), JobStatus::Running))).unwrap_err();
        assert!(
            refusal.to_string().contains("job j1 is RUNNING"),
            "{refusal}"
        );
        assert_eq!(check_queue_delete(&disabled, None), Ok(()));
    }

    #[test]
    fn an_environment_goes_only_disabled_unnamed_and_idle() {
        let queues = [queue(ResourceState::Disabled, &["other", "ce"])];
        assert!(matches!(
            check_environment_delete(&environment(ResourceState::Enabled), &[], None),
            Err(DeleteRefusal::EnvironmentEnabled(_))
        ));
        let disabled = environment(ResourceState::Disabled);
        let refusal = check_environment_delete(&disabled, &queues, None).unwrap_err();
        assert!(
            refusal.to_string().contains("job queue(s) \"q\""),
            "{refusal}"
        );
        assert!(matches!(
            check_environment_delete(&disabled, &[], Some(job("j2"))),
            Err(DeleteRefusal::EnvironmentRunsJobs { .. })
        ));
        assert_eq!(check_environment_delete(&disabled, &[], None), Ok(()));
    }

    #[test]
    fn a_job_goes_only_finished_and_unneeded() {
        for status in [JobStatus::Runnable, JobStatus::Running, JobStatus::Pending] {
            assert!(check_job_delete(&job("a"), status, None).is_err());
        }
        assert!(matches!(
            check_job_delete(&job("a"), JobStatus::Failed, Some(job("b"))),
            Err(DeleteRefusal::JobNeeded { .. })
        ));
        assert_eq!(
            check_job_delete(&job("a"), JobStatus::Succeeded, None),
            Ok(())
        );
    }

    #[test]
    fn only_waiting_jobs_change_their_wait() {
        for status in [
            JobStatus::Submitted,
            JobStatus::Pending,
            JobStatus::Runnable,
        ] {
            assert_eq!(check_waiting(&job("a"), status, "suspended"), Ok(()));
        }
        let refusal = check_waiting(&job("a"), JobStatus::Running, "suspended").unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "job a is RUNNING: only waiting jobs (SUBMITTED, PENDING, RUNNABLE) can be suspended; terminate it to stop it"
        );
        assert!(check_waiting(&job("a"), JobStatus::Succeeded, "resumed").is_err());
    }

    #[test]
    fn a_queue_overrides_the_default_retention_per_outcome() {
        let default = Retention::uniform(30 * 86_400);
        let mut own = queue(ResourceState::Enabled, &["ce"]);
        assert_eq!(default.for_queue(&own), default);
        own.job_retention.failed_seconds = Some(60);
        let retention = default.for_queue(&own);
        assert_eq!(retention.succeeded_seconds, 30 * 86_400);
        let now = 1_000_000_000;
        assert_eq!(retention.cutoff(JobStatus::Failed, now), Some(now - 60_000));
        assert_eq!(retention.cutoff(JobStatus::Running, now), None);
        assert_eq!(
            Retention::uniform(u64::MAX).cutoff(JobStatus::Succeeded, now),
            Some(now - i64::MAX)
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("30d"), Ok(2_592_000));
        assert!(parse_duration("3w")
            .unwrap_err()
            .contains("use s, m, h or d"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
