//! Each hold as the sentence a person reads, the same in `batchctl why` and the console.

use super::Hold;

/// Each hold as a sentence, the same in `batchctl why` and the console.
impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::NotWaiting { .. } => write!(f, "it is not waiting"),
            Hold::Suspended => write!(
                f,
                "it is suspended: it keeps its place but is not placed until `batchctl resume`"
            ),
            Hold::QueueHeld {
                job_queue,
                stop_policy,
            } => write!(
                f,
                "its queue {job_queue} is held (stopPolicy: {stop_policy}): nothing is placed from it until the policy is None"
            ),
            Hold::QueueAtMaxRunning {
                job_queue,
                max_running_jobs,
                running,
            } => write!(
                f,
                "its queue {job_queue} runs {running} jobs, its maxRunningJobs is {max_running_jobs}: the next starts when one ends"
            ),
            Hold::ConcurrencyLimited {
                concurrency_limit,
                key,
                value,
                max,
                holding,
            } => write!(
                f,
                "concurrency limit {concurrency_limit} lets {max} jobs with {key} = {value} run at once; running: {}",
                if holding.is_empty() { "none".to_string() } else { holding.join(", ") }
            ),
            Hold::ConsumableResourceShort {
                consumable_resource,
                needs,
                available: Some(available),
            } => write!(
                f,
                "it asks for {needs} of consumable resource {consumable_resource}, which has {available} left now"
            ),
            Hold::ConsumableResourceShort {
                consumable_resource,
                available: None,
                ..
            } => write!(
                f,
                "consumable resource {consumable_resource} does not exist (deleted since the job was submitted?)"
            ),
            Hold::NotYetAdmitted => write!(f, "it has not been admitted by the dispatcher yet"),
            Hold::WaitingForDependencies { jobs } => {
                let jobs: Vec<String> = jobs
                    .iter()
                    .map(|job| format!("{} ({})", job.job_id, job.status.as_str()))
                    .collect();
                write!(f, "it waits for {} to succeed: {}", jobs.len(), jobs.join(", "))
            }
            Hold::FairShare {
                share_identifier,
                weight_factor,
                usage_vcpu_seconds,
                shares_ahead,
            } => {
                let ahead: Vec<String> = shares_ahead
                    .iter()
                    .map(|share| {
                        format!(
                            "{} (weight {}, {:.1} vCPU-s)",
                            share.share_identifier, share.weight_factor, share.usage_vcpu_seconds
                        )
                    })
                    .collect();
                write!(
                    f,
                    "its share {share_identifier} (weight {weight_factor}) has used {usage_vcpu_seconds:.1} vCPU-seconds; shares ahead of it by weighted usage: {}",
                    if ahead.is_empty() { "none".to_string() } else { ahead.join(", ") }
                )
            }
            Hold::WaitingForArrayChildren { size, unfinished } => write!(
                f,
                "it is an array job: {unfinished} of its {size} children have not finished"
            ),
            Hold::ArrayAtMaxConcurrency {
                array_job_id,
                max_concurrency,
                in_flight,
            } => write!(
                f,
                "its array job {array_job_id} runs at most {max_concurrency} children at once (maxConcurrency); {in_flight} are RUNNABLE, STARTING or RUNNING: the next is released when one ends"
            ),
            Hold::BackingOff { seconds_left, .. } => {
                write!(f, "it waits out its retry backoff: {seconds_left}s left")
            }
            Hold::QueuePosition {
                runnable_ahead,
                at_least,
            } => write!(
                f,
                "{}{runnable_ahead} runnable jobs of its queue are ahead of it",
                if *at_least { "at least " } else { "" }
            ),
            Hold::EnvironmentDisabled {
                compute_environment,
            } => write!(f, "compute environment {compute_environment} is DISABLED"),
            Hold::EnvironmentUnavailable {
                compute_environment,
                reason,
            } => write!(
                f,
                "compute environment {compute_environment} is unavailable: {reason}"
            ),
            Hold::EnvironmentTooSmall {
                compute_environment,
                needs,
                capacity,
            } => write!(
                f,
                "compute environment {compute_environment} is too small: the job needs {needs}, it has {capacity} in all"
            ),
            Hold::EnvironmentFull {
                compute_environment,
                needs,
                free,
            } => write!(
                f,
                "compute environment {compute_environment} is full: the job needs {needs}, {free} are free"
            ),
            Hold::UnknownEnvironment {
                compute_environment,
            } => write!(f, "compute environment {compute_environment} does not exist"),
            Hold::UnknownQueue { job_queue } => write!(f, "queue {job_queue} does not exist"),
        }
    }
}
