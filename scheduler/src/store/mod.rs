//! Durable state on SQLite (the embedded default) or Postgres, through sqlx.
//!
//! Invariants:
//! - The store never decides a transition: callers pass the `from` and `to` that
//!   `core::state_machine::transition` computed, and every status write is a compare-and-set
//!   (`UPDATE … WHERE job_id = $1 AND status = $2`). Zero rows changed means someone else moved the job.
//! - Everything a request writes happens in one transaction; a rejected `apply` writes nothing.
//! - One SQL text serves both databases (sqlx's `Any` driver, `$n` placeholders, BIGINT/TEXT/BLOB
//!   columns only). Dialect differences live in `migrations/sqlite` and `migrations/postgres`;
//!   what exists on Postgres only (the leader lease, its fence, `NOTIFY`) is in `lease.rs`.
//! - On SQLite all writes go through one connection (SQLite has one writer anyway), so writers queue
//!   in the pool instead of failing with SQLITE_BUSY; reads use their own connections (WAL mode).

mod events;
mod jobs;
mod lease;
mod logs;
mod notifications;
mod resources;
mod schedules;
mod transitions;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use events::{BusEvent, StoredRule, WatchGuard};
pub use jobs::{Effect, FinishedArray, JobFilter, JobPage, NewJob, Transition};
pub use lease::{Fence, LeaseHolder};
pub use logs::{LogLine, NewLogChunk};
pub use notifications::NotificationDelivery;
pub use resources::{Applied, AppliedAction, ApplyError, StoredDefinition, ValidDocument};
pub use schedules::{Firing, FiringOutcome, StoredSchedule};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A database file, created if missing.
    Sqlite { path: PathBuf },
    /// A `postgres://` URL.
    Postgres { url: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: String, reason: String },
    /// Another replica took the leader lease after this one's term began: this replica must not
    /// move jobs any more.
    #[error("this server no longer leads (its term {term} has ended): another replica took the leader lease")]
    Fenced { term: i64 },
}

impl StoreError {
    pub fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
        StoreError::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Whether trying the same thing again later could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(error) => matches!(
                error,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ),
            StoreError::Migration(_) | StoreError::Corrupt { .. } | StoreError::Fenced { .. } => {
                false
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    dialect: Dialect,
    write: AnyPool,
    read: AnyPool,
    /// Whether some enabled event rule could match a Job State Change event: while none can,
    /// those events are not stored (nothing could receive them, and each costs every
    /// transition a row). See `refresh_job_event_interest`.
    job_events_wanted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Open event streams on this server: while any is open, job events are stored too.
    watchers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// On a leader's store, the term its job-moving writes are fenced by (see `lease`).
    fence: Option<std::sync::Arc<Fence>>,
}

impl Store {
    /// Connects, applies pending migrations, and returns a store ready for use.
    pub async fn open(location: &StoreLocation) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let store = match location {
            StoreLocation::Sqlite { path } => open_sqlite(path).await?,
            StoreLocation::Postgres { url } => {
                let options = AnyConnectOptions::from_str(url)?;
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            // A server frozen inside a transaction (a pause, a partition) must not
                            // hold its locks — the leader lease row's among them — for ever: the
                            // database ends such a session, and a takeover proceeds.
                            connection
                                .execute("SET idle_in_transaction_session_timeout = '10s'")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?;
                Store {
                    dialect: Dialect::Postgres,
                    write: pool.clone(),
                    read: pool,
                    job_events_wanted: Default::default(),
                    watchers: Default::default(),
                    fence: None,
                }
            }
        };
        match store.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&store.write).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&store.write).await?,
        }
        store.refresh_job_event_interest().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = |connections: u32| {
        AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(|connection, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer. synchronous=NORMAL keeps every commit
                    // across a process crash (kill -9); only a power loss can take the last ones.
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY;",
                        )
                        .await?;
                    Ok(())
                })
            })
    };
    let options = AnyConnectOptions::from_str(&url)?;
    let write = pool(1).connect_with(options.clone()).await?;
    let read = pool(4).connect_with(options).await?;
    Ok(Store {
        dialect: Dialect::Sqlite,
        write,
        read,
        job_events_wanted: Default::default(),
        watchers: Default::default(),
        fence: None,
    })
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
