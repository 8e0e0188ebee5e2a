//! What the store suites do by hand: place a job, end its attempt, admit and resolve, and read
//! statuses back.

use batchctl_scheduler::core::model::{ArrayRole, Dependency, Job};
use batchctl_scheduler::core::model::{
    Attempt, CurrentAttempt, EnvironmentName, JobId, JobStatus, QueueName,
};
use batchctl_scheduler::store::{Effect, Store, Transition};

use super::job;

pub fn queue_name(name: &str) -> QueueName {
    QueueName::try_from(name.to_string()).unwrap()
}

pub fn env_name(name: &str) -> EnvironmentName {
    EnvironmentName::try_from(name.to_string()).unwrap()
}

pub fn placed(job_id: &str, number: u32) -> Transition {
    Transition {
        job_id: JobId(job_id.into()),
        from: JobStatus::Runnable,
        to: JobStatus::Starting,
        effect: Effect::Placed {
            attempt: CurrentAttempt {
                number,
                compute_environment: env_name("local"),
                executor_handle: format!("{job_id}-{number}"),
                placed_at: 10,
                started_at: None,
                gpu_ids: vec![],
            },
            used_up: Vec::new(),
        },
    }
}

pub fn ended(job_id: &str, number: u32, from: JobStatus, to: JobStatus) -> Transition {
    Transition {
        job_id: JobId(job_id.into()),
        from,
        to,
        effect: Effect::AttemptEnded {
            attempt: Attempt {
                number,
                compute_environment: env_name("local"),
                exit_code: Some(3),
                status_reason: "Essential container in task exited with code 3".into(),
                started_at: Some(11),
                stopped_at: 20,
                resources: None,
            },
            runnable_after: None,
            disruption: false,
            next_resources: None,
        },
    }
}

pub fn array_job(id: &str, size: u32, depends_on: Vec<Dependency>) -> Job {
    let mut job = job(id, None);
    job.spec.array_size = Some(size);
    job.spec.depends_on = depends_on;
    job.array = ArrayRole::Parent { size };
    job
}

pub async fn statuses(store: &Store, ids: &[&str]) -> Vec<JobStatus> {
    let mut statuses = Vec::new();
    for id in ids {
        statuses.push(
            store
                .job(&JobId(id.to_string()))
                .await
                .unwrap()
                .unwrap()
                .status,
        );
    }
    statuses
}

pub async fn admit_and_resolve(store: &Store) {
    store
        .admit_submitted(
            &queue_name("q"),
            JobStatus::Runnable,
            JobStatus::Pending,
            1000,
            3,
        )
        .await
        .unwrap();
    store
        .resolve_dependencies(JobStatus::Failed, JobStatus::Runnable, 4)
        .await
        .unwrap();
}

pub async fn succeed(store: &Store, id: &str) {
    let mut done = ended(id, 1, JobStatus::Starting, JobStatus::Succeeded);
    if let Effect::AttemptEnded { attempt, .. } = &mut done.effect {
        attempt.exit_code = Some(0);
    }
    let applied = store
        .apply_transitions(&[placed(id, 1), done], 5)
        .await
        .unwrap();
    assert_eq!(applied, [true, true], "{id} was not RUNNABLE");
}
