//! The leader lease (Postgres only) and the fence that every job-moving write checks.
//!
//! Invariants:
//! - A term is held by one replica at a time: taking the lease is one statement that succeeds only
//!   on an expired row and increments its term; renewing succeeds only for the current holder and
//!   term.
//! - A fenced transaction begins by share-locking the lease row *of its own term*
//!   (`SELECT … FOR SHARE`). A takeover must update that row, so it waits for fenced transactions
//!   in flight to commit, and every fenced transaction after it finds a newer term and writes
//!   nothing. Lease times come from the database's clock.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Row, Transaction};

use super::{Dialect, Store, StoreError};

/// The lease's row.
const LEASE: &str = "leader";
/// Milliseconds since the epoch by the database's clock (Postgres).
const DB_NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// The term a fenced store writes under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub term: i64,
}

/// Who holds the lease, as the database says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    pub term: i64,
    /// Milliseconds until it expires; negative once expired.
    pub remaining_ms: i64,
}

impl Store {
    /// A store whose job-moving writes fail with [`StoreError::Fenced`] once `term` is no longer
    /// the lease's current term.
    pub fn fenced(&self, fence: Fence) -> Store {
        Store {
            fence: Some(Arc::new(fence)),
            ..self.clone()
        }
    }

    /// Begins a write transaction; on a fenced store it first checks (and share-locks) the lease
    /// at the fence's term, and fails if another replica has taken the lease since.
    pub(super) async fn begin_fenced(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut transaction = self.write.begin().await?;
        if let (Some(fence), Dialect::Postgres) = (&self.fence, self.dialect) {
            let held = sqlx::query(
                "SELECT term FROM leases WHERE name = $1 AND holder = $2 AND term = $3 FOR SHARE",
            )
            .bind(LEASE)
            .bind(&fence.holder)
            .bind(fence.term)
            .fetch_optional(&mut *transaction)
            .await?;
            if held.is_none() {
                transaction.rollback().await?;
                return Err(StoreError::Fenced { term: fence.term });
            }
        }
        Ok(transaction)
    }

    /// Takes the lease for `holder` if it is free or expired, for `ttl`; returns the new term.
    pub async fn try_acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        self.require_postgres()?;
        let row = sqlx::query(&format!(
            "INSERT INTO leases (name, holder, term, acquired_at, expires_at) \
             VALUES ($1, $2, 1, {DB_NOW}, {DB_NOW} + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, term = leases.term + 1, \
             acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
             WHERE leases.expires_at <= {DB_NOW} RETURNING term"
        ))
        .bind(LEASE)
        .bind(holder)
        .bind(ttl.as_millis() as i64)
        .fetch_optional(&self.write)
        .await?;
        Ok(row.map(|row| row.try_get("term")).transpose()?)
    }

    /// Extends the lease by `ttl` from now; false if `holder` no longer holds `term`.
    pub async fn renew_lease(
        &self,
        holder: &str,
        term: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.require_postgres()?;
        let renewed = sqlx::query(&format!(
            "UPDATE leases SET expires_at = {DB_NOW} + $4 \
             WHERE name = $1 AND holder = $2 AND term = $3"
        ))
        .bind(LEASE)
        .bind(holder)
        .bind(term)
        .bind(ttl.as_millis() as i64)
        .execute(&self.write)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Lets the lease go at once (a clean shutdown), so a follower need not wait for it to expire.
    pub async fn release_lease(&self, holder: &str, term: i64) -> Result<(), StoreError> {
        self.require_postgres()?;
        sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND term = $3",
        )
        .bind(LEASE)
        .bind(holder)
        .bind(term)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The lease as it stands, if it was ever taken.
    pub async fn lease_holder(&self) -> Result<Option<LeaseHolder>, StoreError> {
        self.require_postgres()?;
        let row = sqlx::query(&format!(
            "SELECT holder, term, expires_at - {DB_NOW} AS remaining FROM leases WHERE name = $1"
        ))
        .bind(LEASE)
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            Ok(LeaseHolder {
                holder: row.try_get("holder")?,
                term: row.try_get("term")?,
                remaining_ms: row.try_get("remaining")?,
            })
        })
        .transpose()
    }

    /// `NOTIFY channel, payload` (Postgres only): a wake-up for the other servers.
    pub async fn notify_peers(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.require_postgres()?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    fn require_postgres(&self) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Postgres => Ok(()),
            Dialect::Sqlite => Err(StoreError::corrupt(
                "leader lease",
                "a lease exists only on Postgres; a SQLite store has exactly one server",
            )),
        }
    }
}
