//! Retention: the leader deletes finished jobs (with their attempts and output) past their time to
//! live — the server's `--job-retention`, or a queue's own `jobRetention` — and beyond their
//! schedule's history limits, in small batches beside dispatch, then gives the space back.
//!
//! Invariants:
//! - Each batch is one transaction of at most `DELETE_BATCH` jobs, and a pause follows it, so the
//!   dispatcher's writes (SQLite has one writer) wait at most one batch.
//! - Only finished jobs go, and none that a waiting job depends on (see `store::lifecycle`).
//! - Which jobs have outlived their retention is `core::lifecycle::Retention`'s decision.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::lifecycle::Retention;
use crate::core::model::JobStatus;
use crate::store::{now_millis, Store, StoreError, DELETE_BATCH};

/// How often a pruning pass starts.
pub const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// The pause after each full batch, which lets the dispatcher's writes in.
const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// SQLite pages (4 KiB) given back to the file system after a pass that deleted something.
const RECLAIM_PAGES: u32 = 4096;

/// Prunes every `PRUNE_EVERY` until `cancel`; failures are logged and tried again next time.
pub async fn prune_jobs_periodically(store: Store, default: Retention, cancel: CancellationToken) {
    loop {
        match prune_once(&store, default, &cancel).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned finished jobs past their retention"),
            Err(error) => tracing::warn!(%error, "pruning finished jobs failed; trying again"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// One pass: each queue's expired finished jobs, then each schedule's history beyond its
/// limits, then space given back. Returns how many jobs were deleted.
pub async fn prune_once(
    store: &Store,
    default: Retention,
    cancel: &CancellationToken,
) -> Result<u64, StoreError> {
    let queues: HashMap<String, _> = store
        .job_queues()
        .await?
        .into_iter()
        .map(|queue| (queue.name.to_string(), queue))
        .collect();
    let mut deleted = 0;
    // The counters say which queues hold finished jobs (deleted queues' jobs among them, under
    // the server's default).
    for count in store.job_counts().await? {
        let Some(status) = JobStatus::parse(&count.status).filter(JobStatus::is_terminal) else {
            continue;
        };
        let retention = queues
            .get(&count.queue)
            .map_or(default, |queue| default.for_queue(queue));
        let Some(cutoff) = retention.cutoff(status, now_millis()) else {
            continue;
        };
        deleted += in_batches(cancel, || {
            store.prune_finished(&count.queue, status, cutoff, DELETE_BATCH)
        })
        .await?;
    }
    for stored in store.schedules().await? {
        let history = stored.schedule.history;
        for (status, keep) in [
            (JobStatus::Succeeded, history.succeeded),
            (JobStatus::Failed, history.failed),
        ] {
            let Some(keep) = keep else { continue };
            deleted += in_batches(cancel, || {
                store.prune_schedule_history(&stored.schedule.name, status, keep, DELETE_BATCH)
            })
            .await?;
        }
    }
    if deleted > 0 {
        store.reclaim_space(RECLAIM_PAGES).await?;
    }
    Ok(deleted)
}

/// Runs `batch` until one deletes less than a full batch, pausing after each full one.
async fn in_batches<F, Fut>(cancel: &CancellationToken, batch: F) -> Result<u64, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut deleted = 0;
    loop {
        let n = batch().await?;
        deleted += n;
        if n < u64::from(DELETE_BATCH) || cancel.is_cancelled() {
            return Ok(deleted);
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}
