//! SQLite's write-ahead log is copied back into the database file by a connection of its own,
//! beside the writer, instead of by the writer after its commits.
//!
//! SQLite's default checkpoints after any commit that leaves the log over 1,000 pages, on the
//! committing connection: here that is the one writer every transition queues behind, and a
//! profile of a churn with retention had 10.8% of the process in those checkpoints (BENCHMARKS.md,
//! "Checkpoints beside the writer"). A checkpoint needs no write lock, so a second connection can
//! do the copying while the writer goes on appending.
//!
//! The writer keeps a checkpoint threshold of its own as a safety net. The log starts over only
//! when everything in it has been copied before the writer's next transaction; under a steady
//! stream of commits the background copy may never quite catch up, and the log would grow. When
//! the writer's threshold is reached, nearly all of it has been copied already, so what is left for
//! the writer is small.
//!
//! A checkpoint that fails (a full disk) loses nothing: the log still holds every commit, and the
//! next period tries again.

use std::time::Duration;

use sqlx::AnyPool;

/// How often the background connection copies the log into the database file.
const PERIOD: Duration = Duration::from_millis(250);

/// The writer's own checkpoint threshold, in pages (SQLite's default is 1,000): four times the
/// default, so it fires only when the background copy has fallen behind a steady stream.
pub(super) const WRITER_THRESHOLD_PAGES: u32 = 4_000;

/// The running background checkpoint; it stops when the last clone of the store is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    pool: AnyPool,
    task: tokio::task::AbortHandle,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checkpointer {
    /// Starts checkpointing through `pool` (one connection of its own) every period.
    pub(super) fn start(pool: AnyPool) -> Checkpointer {
        let connection = pool.clone();
        let task = tokio::spawn(async move {
            let pool = connection;
            let mut ticks = tokio::time::interval(PERIOD);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                ticks.tick().await;
                if pool.is_closed() {
                    return;
                }
                // PASSIVE copies what it can without waiting on the writer or on readers.
                match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_all(&pool)
                    .await
                {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("background checkpoints succeed again");
                    }
                    Ok(_) => {}
                    // Said once per failing stretch: a full disk would otherwise say it 4× a second.
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "a background checkpoint failed; the write-ahead log keeps every commit, and it is tried again");
                    }
                    Err(_) => {}
                }
            }
        });
        Checkpointer {
            pool,
            task: task.abort_handle(),
        }
    }

    /// Stops checkpointing and closes the connection (the store is closing).
    pub(super) async fn close(&self) {
        self.task.abort();
        self.pool.close().await;
    }
}
