//! Cancel and terminate, as AWS Batch: cancel stops a job that has not been placed; terminate does
//! that too, and also stops the work of a STARTING or RUNNING job (the dispatcher kills it and the
//! job ends FAILED with the given reason, without retries).

use crate::core::model::{ArrayRole, Job, JobId, JobStatus};
pub use crate::core::stop::StopMode;
use crate::core::stop::{cancellable_moves, stop_action, StopAction};
use crate::dispatcher::DispatcherHandle;
use crate::store::{now_millis, Effect, Store, StoreError, Transition};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {job_id} is already {status}; there is nothing to stop")]
    AlreadyFinished { job_id: JobId, status: JobStatus },
    #[error("job {job_id} is {status}: cancel only stops jobs that have not started; use terminate to stop its work")]
    AlreadyStarted { job_id: JobId, status: JobStatus },
    #[error("job {0} kept changing state; try again")]
    Contended(JobId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stops a job; returns it as it is after the request (FAILED, or still running with a stop
/// requested that the dispatcher carries out).
pub async fn stop_job(
    store: &Store,
    dispatcher: &DispatcherHandle,
    job_id: &JobId,
    reason: &str,
    mode: StopMode,
) -> Result<Job, ControlError> {
    // Each round reads the job and moves it with compare-and-set; losing means the dispatcher moved
    // it meanwhile, and the next round sees where it went.
    for _ in 0..5 {
        let job = store
            .job(job_id)
            .await?
            .ok_or_else(|| ControlError::NotFound(job_id.clone()))?;
        let status = job.status;
        if let (ArrayRole::Parent { .. }, false) = (&job.array, status.is_terminal()) {
            return stop_array(store, dispatcher, &job, reason, mode).await;
        }
        match stop_action(status, mode) {
            StopAction::AlreadyFinished => {
                return Err(ControlError::AlreadyFinished {
                    job_id: job_id.clone(),
                    status,
                })
            }
            StopAction::AlreadyStarted => {
                return Err(ControlError::AlreadyStarted {
                    job_id: job_id.clone(),
                    status,
                })
            }
            StopAction::RequestStop => {
                if store.request_stop(job_id, reason).await? {
                    dispatcher.notify_stop_requested();
                    return reread(store, job_id).await;
                }
            }
            StopAction::Cancel { from, to } => {
                let now = now_millis();
                let cancelled = Transition {
                    job_id: job_id.clone(),
                    from,
                    to,
                    effect: Effect::Cancelled {
                        reason: reason.to_string(),
                        at: now,
                    },
                };
                if store.apply_transitions(&[cancelled], now).await? == [true] {
                    // Jobs that depend on this one fail next; wake the dispatcher to see to it.
                    dispatcher.notify_work();
                    return reread(store, job_id).await;
                }
            }
        }
    }
    Err(ControlError::Contended(job_id.clone()))
}

/// Cancels an array job's children that have not started and, for terminate, stops the work of
/// those that have. The parent ends with `reason` once all its children have, as in AWS Batch.
async fn stop_array(
    store: &Store,
    dispatcher: &DispatcherHandle,
    parent: &Job,
    reason: &str,
    mode: StopMode,
) -> Result<Job, ControlError> {
    let moves = cancellable_moves();
    let now = now_millis();
    store
        .cancel_array_children(&parent.job_id, &moves, reason, now)
        .await?;
    match mode {
        StopMode::Cancel => {}
        StopMode::Terminate => {
            if store
                .request_stop_of_array_children(&parent.job_id, reason)
                .await?
                > 0
            {
                dispatcher.notify_stop_requested();
            }
        }
    }
    dispatcher.notify_work();
    reread(store, &parent.job_id).await
}

async fn reread(store: &Store, job_id: &JobId) -> Result<Job, ControlError> {
    store
        .job(job_id)
        .await?
        .ok_or_else(|| ControlError::NotFound(job_id.clone()))
}
