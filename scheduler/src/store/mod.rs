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
mod finish_waits;
mod job_changes;
mod job_counts;
mod jobs;
mod lease;
mod lifecycle;
mod logs;
mod notifications;
mod resource_cache;
mod resources;
mod schedules;
mod secrets;
mod share_usage;
mod sql;
mod stored_form;
mod transitions;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

pub use finish_waits::FinishWait;
use finish_waits::FinishWaits;
pub use job_changes::{JobChange, JobChangeError};
pub use job_counts::{FinishedMinute, JobCount};
pub use resource_cache::FRESH_FOR;
use sqlx::{AnyPool, Executor};

pub use events::{BusEvent, StoredRule, WatchGuard};
pub use jobs::{
    ChildPage, ChildSummary, Effect, FinishedArray, JobFilter, JobNameFilter, JobPage, NewJob,
    Transition, MAX_PAGE_SPEC_BYTES, NAME_SCAN_WINDOW,
};
pub use lease::{Fence, LeaseHolder};
pub use lifecycle::{DeleteError, Deleted, DeletedAction, DELETE_BATCH};
pub use logs::{LogLine, NewLogChunk, StoredChunk};
pub use notifications::NotificationDelivery;
pub use resources::{
    table_of as resource_table, Applied, AppliedAction, ApplyError, StoredDefinition,
    UnmodelledRow, ValidDocument,
};
pub use schedules::{Firing, FiringOutcome, StoredSchedule};
pub use secrets::{Resealed, SecretListing};

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
    Database(sqlx::Error),
    /// The database cannot be reached for now: a connection refused or cut, a server shutting
    /// down or restarting, a pool without a free connection. Trying again later can succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The disk that holds the database is full (SQLite's `SQLITE_FULL`, Postgres' `53100`).
    /// Nothing of the failed transaction was written; writes succeed again once space returns.
    #[error("the database's disk is full: {0}")]
    StorageFull(sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: String, reason: String },
    /// Another replica took the leader lease after this one's term began: this replica must not
    /// move jobs any more.
    #[error("this server no longer leads (its term {term} has ended): another replica took the leader lease")]
    Fenced { term: i64 },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        match classify(&error) {
            Fault::StorageFull => {
                LAST_STORAGE_FULL_MILLIS.store(now_millis(), Ordering::Relaxed);
                StoreError::StorageFull(error)
            }
            Fault::Unavailable => StoreError::Unavailable(error),
            Fault::Other => StoreError::Database(error),
        }
    }
}

/// When a database operation last failed for want of space (epoch milliseconds; 0: never): by
/// any path — a submit, the dispatcher, a log write — since every store error is made here. One
/// per process, as a server has one store.
static LAST_STORAGE_FULL_MILLIS: AtomicI64 = AtomicI64::new(0);

/// How long after a failure for want of space the storage still counts as full.
const STORAGE_FULL_REMEMBERED_MILLIS: i64 = 10_000;

/// Whether a database operation failed for want of space in the last few seconds.
pub fn storage_full_recently() -> bool {
    let last = LAST_STORAGE_FULL_MILLIS.load(Ordering::Relaxed);
    last > 0 && now_millis() - last < STORAGE_FULL_REMEMBERED_MILLIS
}

enum Fault {
    StorageFull,
    Unavailable,
    Other,
}

/// Which database errors are conditions of the environment rather than bugs: SQLite's
/// `SQLITE_FULL` (13) and Postgres' `disk_full` (53100) mean no space; a lost or refused
/// connection, and Postgres' shutdown, recovery and connection classes (`57P01`–`57P03`, `08…`,
/// `53300` too many connections) mean the database is away for now.
fn classify(error: &sqlx::Error) -> Fault {
    match error {
        sqlx::Error::Database(database) => match database.code().as_deref() {
            Some("13") | Some("53100") => Fault::StorageFull,
            Some(code)
                if matches!(code, "57P01" | "57P02" | "57P03" | "53300")
                    || code.starts_with("08") =>
            {
                Fault::Unavailable
            }
            _ => Fault::Other,
        },
        sqlx::Error::Io(io) if io.raw_os_error() == Some(28) => Fault::StorageFull,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Fault::Unavailable,
        _ => Fault::Other,
    }
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
            StoreError::Unavailable(_) | StoreError::StorageFull(_) => true,
            StoreError::Database(_)
            | StoreError::Migration(_)
            | StoreError::Corrupt { .. }
            | StoreError::Fenced { .. } => false,
        }
    }

    /// Whether the disk holding the database is full.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, StoreError::StorageFull(_))
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
    /// Who waits here for jobs to finish; told after each commit that finishes jobs.
    finish_waits: FinishWaits,
    /// What submits read, kept briefly; emptied by every apply (see `resource_cache`).
    resource_cache: resource_cache::ResourceCache,
    /// Seals and unseals secret values (`secrets`); without one, no secret can be stored.
    keyring: Option<std::sync::Arc<crate::sealing::Keyring>>,
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
                    .after_release(|connection, _| Box::pin(released_cleanly(connection)))
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
                    finish_waits: FinishWaits::default(),
                    resource_cache: Default::default(),
                    keyring: None,
                }
            }
        };
        match store.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&store.write).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&store.write).await?,
        }
        match store.refresh_job_event_interest().await {
            Ok(_) => {}
            // A rule or notification saved before models were stored cannot be read until the
            // start-up upgrade (`crate::upgrade`) has run, which refreshes this again: until
            // then, job events are written as if one wanted them.
            Err(StoreError::Corrupt { .. }) => {
                store.job_events_wanted.store(true, Ordering::Release);
            }
            Err(error) => return Err(error),
        }
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// SQLite's `PRAGMA integrity_check` ("ok" when the file is sound); "ok" on Postgres, which
    /// keeps its own checksums.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        match self.dialect {
            Dialect::Sqlite => {
                let row = sqlx::query("PRAGMA integrity_check")
                    .fetch_one(&self.read)
                    .await?;
                Ok(sqlx::Row::try_get::<String, _>(&row, 0)?)
            }
            Dialect::Postgres => Ok("ok".into()),
        }
    }

    /// Registers for the end of `job_id` as this process commits it (see `finish_waits`).
    pub fn wait_for_finish(&self, job_id: &crate::core::model::JobId) -> FinishWait {
        self.finish_waits.register(job_id)
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    // `first` runs before the rest on each new connection.
    let pool = |connections: u32, role: ConnectionRole| {
        AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(60))
            // A connection to a local file cannot go stale; the round trip sqlx makes to check
            // one before lending it would only cost every query.
            .test_before_acquire(false)
            .after_release(|connection, _| Box::pin(released_cleanly(connection)))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    connection.execute("PRAGMA busy_timeout = 10000;").await?;
                    // Incremental auto-vacuum takes effect only in an empty database, set before
                    // anything else (WAL mode included): pages freed by retention can then be
                    // given back (`reclaim_space`). Asked only of an empty one: on a database
                    // with pages the pragma wants the write lock for nothing, and a writer
                    // reconnecting after a full disk waited on it until the pool timed out.
                    if role == ConnectionRole::Writer {
                        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                            .fetch_one(&mut *connection)
                            .await?;
                        if pages == 0 {
                            connection
                                .execute("PRAGMA auto_vacuum = INCREMENTAL;")
                                .await?;
                        }
                    }
                    // WAL lets readers run beside the writer. synchronous=NORMAL keeps every commit
                    // across a process crash (kill -9); only a power loss can take the last ones.
                    connection
                        .execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA temp_store = MEMORY;",
                        )
                        .await?;
                    Ok(())
                })
            })
    };
    let options = AnyConnectOptions::from_str(&url)?;
    let write = pool(1, ConnectionRole::Writer)
        .connect_with(options.clone())
        .await?;
    let auto_vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&write)
        .await?;
    if auto_vacuum != 2 {
        tracing::warn!(
            path = %path.display(),
            "this SQLite database was made without incremental auto-vacuum: space freed by job retention is reused but the file does not shrink; see docs/lifecycle.md to convert it"
        );
    }
    let read = pool(4, ConnectionRole::Reader)
        .connect_with(options)
        .await?;
    Ok(Store {
        dialect: Dialect::Sqlite,
        write,
        read,
        job_events_wanted: Default::default(),
        watchers: Default::default(),
        fence: None,
        finish_waits: FinishWaits::default(),
        resource_cache: Default::default(),
        keyring: None,
    })
}

/// Whether a connection going back to its pool is outside any transaction; one that is not is
/// closed instead (closing rolls its transaction back).
///
/// This is what keeps a failed commit from losing later ones. When SQLite's COMMIT fails with
/// `SQLITE_FULL` it rolls the transaction back itself, so the `ROLLBACK` sqlx sends when the
/// transaction is dropped fails and sqlx still counts one open transaction on the connection. Its
/// next transaction is then a `SAVEPOINT`; if that savepoint's `RELEASE` fails too (the disk is
/// still full), SQLite leaves a transaction open, and from then on every transaction on the
/// connection is a savepoint inside one that never commits: acknowledged, readable on that
/// connection, invisible to others and gone at restart.
///
/// sqlx's count is what drifts, and it only ever drifts upwards (a COMMIT, RELEASE or ROLLBACK that
/// fails leaves it as it was), so a count of zero is a connection outside any transaction as long
/// as transactions are opened only through sqlx's API — which the store does: it never sends
/// `BEGIN` itself. Asking SQLite too (a `BEGIN`/`ROLLBACK` probe per release) was tried and cost
/// about 10% of the group-commit submit rate and 25% of one-commit-per-job writes (BENCHMARKS.md).
/// What a SQLite connection is for: the one that writes (see the module's invariants), or one of
/// those that read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionRole {
    Writer,
    Reader,
}

async fn released_cleanly(connection: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    if sqlx::Connection::is_in_transaction(connection) {
        tracing::warn!("a database connection was left inside a transaction; closing it");
        return Ok(false);
    }
    Ok(true)
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
