//! In-process notice of jobs finishing, for answers that wait for a job's end (`submit --wait`):
//! a waiter registers for a job, then reads it, then waits, so no end committed after the read is
//! missed. Only ends committed through this process's store are announced (the dispatcher's
//! attempt ends on a single server or the leader); waiters also look again on a slow timer for
//! the rest (another replica, bulk moves).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::core::model::JobId;

#[derive(Clone, Default)]
pub struct FinishWaits {
    waiting: Arc<Mutex<HashMap<JobId, Registered>>>,
}

struct Registered {
    notify: Arc<Notify>,
    waiters: usize,
}

/// A registration for one job's end; dropping it unregisters.
pub struct FinishWait {
    waits: FinishWaits,
    job_id: JobId,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for FinishWaits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = self.waiting.lock().map_or(0, |waiting| waiting.len());
        f.debug_struct("FinishWaits")
            .field("jobs_waited_for", &waiting)
            .finish()
    }
}

impl FinishWaits {
    pub fn register(&self, job_id: &JobId) -> FinishWait {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let registered = waiting.entry(job_id.clone()).or_insert_with(|| Registered {
            notify: Arc::new(Notify::new()),
            waiters: 0,
        });
        registered.waiters += 1;
        FinishWait {
            waits: self.clone(),
            job_id: job_id.clone(),
            notify: Arc::clone(&registered.notify),
        }
    }

    /// Wakes the waiters of each of `finished`.
    pub fn announce<'a>(&self, finished: impl IntoIterator<Item = &'a JobId>) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() {
            return;
        }
        for job_id in finished {
            if let Some(registered) = waiting.get(job_id) {
                registered.notify.notify_waiters();
            }
        }
    }
}

impl FinishWait {
    /// Resolves at the next announcement of the job's end made after this call. Callers call it
    /// *before* reading the job, so an end committed between the read and the wait still wakes
    /// them (a `Notified` receives `notify_waiters` from its creation on).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for FinishWait {
    fn drop(&mut self) {
        let mut waiting = self.waits.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(registered) = waiting.get_mut(&self.job_id) {
            registered.waiters -= 1;
            if registered.waiters == 0 {
                waiting.remove(&self.job_id);
            }
        }
    }
}
