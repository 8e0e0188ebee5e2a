//! Leader election among servers that share one Postgres database.
//!
//! Every server serves the API. Exactly one, the holder of the leader lease (see
//! `store::lease`), also runs the dispatcher and the schedule, rule and notification runners,
//! through a store fenced by its term. A follower tries to take the lease every
//! [`retry_interval`]; the leader renews it every [`renew_interval`]. A leader that cannot renew
//! before its lease runs out, or finds another term in place, stops leading by shutting its
//! server down (as Kubernetes controllers do): whatever it was doing in memory is dropped, the
//! process is restarted by its supervisor and comes back as a follower. Its writes were fenced
//! all along, so nothing it did after losing the lease reached the database.
//!
//! With SQLite there is one server per database file (the data directory's lock), so it leads
//! without a lease.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// How this server takes part in leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// This server's name in the lease (unique per process).
    pub holder: String,
    /// How long a lease lasts without renewal: a dead leader is replaced after at most this long
    /// (plus one [`retry_interval`]).
    pub ttl: Duration,
}

impl LeaseSettings {
    /// A holder name unique to this process: the host (the pod's name in Kubernetes), the pid and
    /// a random suffix, since pids repeat across restarts and PID namespaces.
    pub fn default_holder() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "batchctl".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &random[..8])
    }
}

/// How often a leader renews its lease: three times per TTL, so two renewals can fail in a row.
pub fn renew_interval(ttl: Duration) -> Duration {
    ttl / 3
}

/// How often a follower tries to take the lease.
pub fn retry_interval(ttl: Duration) -> Duration {
    (ttl / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// What this server is now, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleState {
    /// Waiting for the lease; serves the API only.
    Follower,
    /// Holds the lease at this term (Postgres), or leads alone (`None`, SQLite).
    Leader { term: Option<i64> },
}

#[derive(Debug, Clone)]
pub struct Role(Arc<Mutex<RoleState>>);

impl Default for Role {
    fn default() -> Self {
        Role(Arc::new(Mutex::new(RoleState::Follower)))
    }
}

impl Role {
    pub fn get(&self) -> RoleState {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, state: RoleState) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The server is shutting down; the lease was released.
    Shutdown,
    /// The lease was lost; the reason says how.
    Lost(String),
}

/// Waits until this server takes the lease and returns its term; `None` if `shutdown` fires first.
pub async fn campaign(
    store: &Store,
    settings: &LeaseSettings,
    shutdown: &CancellationToken,
) -> Option<i64> {
    let mut announced = false;
    loop {
        match store
            .try_acquire_lease(&settings.holder, settings.ttl)
            .await
        {
            Ok(Some(term)) => return Some(term),
            Ok(None) if !announced => {
                announced = true;
                if let Ok(Some(leader)) = store.lease_holder().await {
                    tracing::info!(leader = %leader.holder, term = leader.term, "following; another server leads");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot ask for the leader lease; trying again"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(retry_interval(settings.ttl)) => {}
        }
    }
}

/// Keeps renewing the lease taken at `taken_at` for `term` until it is lost or `shutdown` fires
/// (then the caller releases it once its work has stopped).
pub async fn hold(
    store: &Store,
    settings: &LeaseSettings,
    term: i64,
    taken_at: Instant,
    shutdown: &CancellationToken,
) -> Ended {
    // The lease runs out `ttl` after the last successful renewal was *asked*, at the latest.
    let mut valid_until = taken_at + settings.ttl;
    let interval = renew_interval(settings.ttl);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            () = tokio::time::sleep(interval) => {}
        }
        let asked = Instant::now();
        let renewed = tokio::time::timeout(
            interval,
            store.renew_lease(&settings.holder, term, settings.ttl),
        )
        .await;
        match renewed {
            Ok(Ok(true)) => valid_until = asked + settings.ttl,
            Ok(Ok(false)) => {
                return Ended::Lost(format!(
                    "term {term} ended: another server took the leader lease"
                ))
            }
            Ok(Err(error)) => {
                if let Some(ended) = expired(valid_until, &error.to_string()) {
                    return ended;
                }
                tracing::warn!(%error, "cannot renew the leader lease; trying again");
            }
            Err(_) => {
                if let Some(ended) = expired(valid_until, "the database did not answer in time") {
                    return ended;
                }
                tracing::warn!("renewing the leader lease timed out; trying again");
            }
        }
    }
}

fn expired(valid_until: Instant, why: &str) -> Option<Ended> {
    (Instant::now() + Duration::from_millis(100) >= valid_until).then(|| {
        Ended::Lost(format!(
            "the leader lease ran out before it could be renewed: {why}"
        ))
    })
}

/// Releases the lease after a clean stop, so a follower takes over without waiting for expiry.
pub async fn release(store: &Store, settings: &LeaseSettings, term: i64) {
    if let Err(error) = store.release_lease(&settings.holder, term).await {
        tracing::warn!(%error, "cannot release the leader lease; a follower takes over when it expires");
    }
}

/// Whether an error from a leader's task means its term ended.
pub fn is_fenced(error: &StoreError) -> bool {
    matches!(error, StoreError::Fenced { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_leave_room_for_two_failed_renewals() {
        let ttl = Duration::from_secs(15);
        assert_eq!(renew_interval(ttl), Duration::from_secs(5));
        assert!(renew_interval(ttl) * 2 < ttl);
        assert_eq!(retry_interval(ttl), Duration::from_secs(2));
        assert_eq!(
            retry_interval(Duration::from_millis(500)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn holders_differ_between_processes_and_restarts() {
        let a = LeaseSettings::default_holder();
        let b = LeaseSettings::default_holder();
        assert_ne!(a, b);
        assert!(a.contains(&std::process::id().to_string()));
    }
}
