//! How a long-running loop rides out a database that is away for a while (a restart, a failover,
//! a full disk): it waits with a bounded backoff and tries again, logging once when the outage
//! starts and once when it ends, instead of an error per attempt or a stopped server.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// The first wait after a failure; each further failure doubles it, up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// One loop's view of the database's availability.
#[derive(Debug)]
pub struct Outage {
    /// The loop's name, for the log.
    what: &'static str,
    /// When the current outage began; `None` while the database answers.
    since: Option<Instant>,
    delay: Duration,
}

/// What the loop should do after `Outage::wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterWait {
    TryAgain,
    /// The loop was told to stop while waiting.
    Stop,
}

impl Outage {
    pub fn new(what: &'static str) -> Outage {
        Outage {
            what,
            since: None,
            delay: FIRST_DELAY,
        }
    }

    /// Notes a failed store call that may succeed later and waits before the next try. The first
    /// failure of an outage is logged (a full disk as such); later ones are not.
    pub async fn wait(&mut self, error: &StoreError, cancel: &CancellationToken) -> AfterWait {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            if error.is_storage_full() {
                tracing::error!(%error, "{}: the database's disk is full; waiting for space, nothing is lost", self.what);
            } else {
                tracing::warn!(%error, "{}: the database is unavailable; retrying until it answers", self.what);
            }
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        tokio::select! {
            () = cancel.cancelled() => AfterWait::Stop,
            () = tokio::time::sleep(delay) => AfterWait::TryAgain,
        }
    }

    /// Notes a store call that succeeded, ending an outage if one was going on.
    pub fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                seconds = since.elapsed().as_secs_f64(),
                "{}: the database answers again; resuming",
                self.what
            );
        }
        self.delay = FIRST_DELAY;
    }

    #[cfg(test)]
    fn is_ongoing(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_grow_to_a_bound_and_reset_on_recovery() {
        let cancel = CancellationToken::new();
        let error = StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        let mut outage = Outage::new("test");
        let mut waited = Vec::new();
        for _ in 0..8 {
            let before = Instant::now();
            assert_eq!(outage.wait(&error, &cancel).await, AfterWait::TryAgain);
            waited.push(before.elapsed().as_millis());
        }
        assert_eq!(waited, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(outage.is_ongoing());
        outage.recovered();
        assert!(!outage.is_ongoing());
        let before = Instant::now();
        outage.wait(&error, &cancel).await;
        assert_eq!(before.elapsed().as_millis(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_loop_stops_waiting() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut outage = Outage::new("test");
        let error = StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        assert_eq!(outage.wait(&error, &cancel).await, AfterWait::Stop);
    }
}
