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
/// At most this many SQLite pages (4 KiB) are given back to the file system per pass.
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
/// limits, then the space that stayed unused since the last pass given back (see
/// `pages_to_reclaim`). Returns how many jobs were deleted.
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
    // Pages free now were freed before this pass and not reused since the last one.
    let stale_pages = store.reclaimable_pages().await?;
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
    let reclaim = pages_to_reclaim(stale_pages);
    if reclaim > 0 {
        let started = std::time::Instant::now();
        store.reclaim_space(reclaim).await?;
        tracing::debug!(
            pages = reclaim,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "gave free pages back"
        );
    }
    Ok(deleted)
}

/// How many free pages a pass gives back: those that were already free when it began (at most
/// `RECLAIM_PAGES`). Pages a pass frees are left for the next interval's writes, which take free
/// pages before they grow the file: under steady churn each pass frees about what the writes
/// until the next one take, and giving them back only to grow the file again would hold the one
/// writer for nothing (87–140 ms a pass; BENCHMARKS.md, "Pruning at an offered load, and space
/// given back only when unused"). Once the churn stops, the next pass gives them back.
fn pages_to_reclaim(free_at_start: u64) -> u32 {
    u32::try_from(free_at_start)
        .unwrap_or(u32::MAX)
        .min(RECLAIM_PAGES)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_free_since_the_last_pass_go_back_and_at_most_a_passs_worth() {
        assert_eq!(pages_to_reclaim(0), 0);
        assert_eq!(pages_to_reclaim(10), 10);
        assert_eq!(
            pages_to_reclaim(u64::from(RECLAIM_PAGES) + 1),
            RECLAIM_PAGES
        );
        assert_eq!(pages_to_reclaim(u64::MAX), RECLAIM_PAGES);
    }
}
