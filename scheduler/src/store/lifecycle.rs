//! Deleting: resources (AWS Batch's rules, judged by `core::lifecycle`), job definition revisions
//! (deregistered, not removed), finished jobs with their attempts and output, and the pruning of
//! jobs past their time to live, in bounded batches.
//!
//! Invariants:
//! - A check and the delete it allows run in one transaction, so nothing slips in between.
//! - An array parent goes last: its children (and their attempts and output) are deleted in
//!   batches before it, so a batch never holds more than its budget of jobs, and an interrupted
//!   delete leaves a finished parent that the next delete or pruning pass completes.
//! - No job that a waiting job depends on is deleted: that job would wait for ever.

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::events::write_audit;
use super::sql::{indexed_by, placeholders};
use super::{Dialect, Store, StoreError};
use crate::core::audit::{Caller, Change};
use crate::core::lifecycle::{
    check_environment_delete, check_job_delete, check_queue_delete, DeleteRefusal,
};
use crate::core::model::{JobId, JobStatus};
use crate::core::resource::Kind;

/// Jobs deleted per transaction: a pruning pass or a large array's delete holds the writer this
/// long at most, so dispatch goes on beside it.
pub const DELETE_BATCH: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] DeleteRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DeleteError {
    fn from(error: sqlx::Error) -> DeleteError {
        DeleteError::Store(error.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeletedAction {
    Deleted,
    /// A job definition revision made INACTIVE.
    Deregistered,
}

/// What a delete did to one thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    pub action: DeletedAction,
    /// For a job: how many jobs went (an array's children count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
}

impl Deleted {
    fn job(job_id: &JobId, jobs: u64) -> Deleted {
        Deleted {
            kind: "Job",
            name: job_id.0.clone(),
            revision: None,
            action: DeletedAction::Deleted,
            jobs: Some(jobs),
        }
    }

    /// The change as its audit event tells it.
    fn change(&self) -> Change {
        Change {
            action: match self.action {
                DeletedAction::Deleted => "deleted",
                DeletedAction::Deregistered => "deregistered",
            }
            .into(),
            kind: self.kind.into(),
            name: self.name.clone(),
            revision: self.revision,
            extra: Default::default(),
        }
    }

    fn resource(kind: Kind, name: &str) -> Deleted {
        Deleted {
            kind: kind.as_str(),
            name: name.to_string(),
            revision: None,
            action: DeletedAction::Deleted,
            jobs: None,
        }
    }
}

/// The tables of the kinds that are simply deleted, with what goes with them.
fn plain_table(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Schedule => Some("schedules"),
        Kind::EventRule => Some("event_rules"),
        Kind::WebhookTrigger => Some("webhook_triggers"),
        Kind::Notification => Some("notifications"),
        Kind::ConcurrencyLimit => Some("concurrency_limits"),
        Kind::ConsumableResource => Some("consumable_resources"),
        Kind::Secret => Some("secrets"),
        Kind::ComputeEnvironment | Kind::JobQueue | Kind::JobDefinition => None,
    }
}

impl Store {
    /// Deletes one resource, or deregisters job definition revisions (`revision`, or all of the
    /// name's ACTIVE ones). Refused, writing nothing, when `core::lifecycle` says it may not go.
    pub async fn delete_resource(
        &self,
        kind: Kind,
        name: &str,
        revision: Option<u32>,
        caller: Option<Caller>,
    ) -> Result<Vec<Deleted>, DeleteError> {
        let mut transaction = self.write.begin().await?;
        let deleted = match kind {
            Kind::JobDefinition => deregister(&mut transaction, name, revision).await?,
            Kind::JobQueue => {
                let queue = self.locked_queue(&mut transaction, name).await?;
                let unfinished = sqlx::query(&unfinished_in_queue(self.dialect))
                    .bind(name)
                    .fetch_optional(&mut *transaction)
                    .await?
                    .map(|row| job_and_status(&row))
                    .transpose()?;
                check_queue_delete(&queue, unfinished)?;
                delete_named(&mut transaction, "job_queues", name).await?;
                vec![Deleted::resource(kind, name)]
            }
            Kind::ComputeEnvironment => {
                let environment = self.locked_environment(&mut transaction, name).await?;
                let queues = self.job_queues_in(&mut transaction).await?;
                // Attempts on it are STARTING or RUNNING jobs, a handful: read through the
                // status index and filtered here.
                let running: Option<String> = sqlx::query_scalar(
                    "SELECT job_id FROM jobs WHERE status IN ('STARTING', 'RUNNING') \
                     AND attempt_environment = $1 LIMIT 1",
                )
                .bind(name)
                .fetch_optional(&mut *transaction)
                .await?;
                check_environment_delete(&environment, &queues, running.map(JobId))?;
                delete_named(&mut transaction, "compute_environments", name).await?;
                vec![Deleted::resource(kind, name)]
            }
            Kind::Notification => {
                if !delete_named(&mut transaction, "notifications", name).await? {
                    return Err(not_found(kind, name));
                }
                // What was still to be sent goes to the dead letters, which stay listable.
                sqlx::query(
                    "UPDATE notification_deliveries SET status = 'DEAD', \
                     last_error = 'the notification was deleted' \
                     WHERE notification = $1 AND status = 'PENDING'",
                )
                .bind(name)
                .execute(&mut *transaction)
                .await?;
                vec![Deleted::resource(kind, name)]
            }
            Kind::Schedule
            | Kind::EventRule
            | Kind::WebhookTrigger
            | Kind::ConcurrencyLimit
            | Kind::ConsumableResource
            | Kind::Secret => {
                let table = plain_table(kind).expect("a plain kind");
                if !delete_named(&mut transaction, table, name).await? {
                    return Err(not_found(kind, name));
                }
                if kind == Kind::Schedule {
                    // Its history goes with it: a schedule applied again under the name starts
                    // afresh rather than inheriting the old one's last tick.
                    sqlx::query("DELETE FROM schedule_firings WHERE schedule = $1")
                        .bind(name)
                        .execute(&mut *transaction)
                        .await?;
                }
                vec![Deleted::resource(kind, name)]
            }
        };
        let changes: Vec<Change> = deleted.iter().map(Deleted::change).collect();
        write_audit(&mut transaction, self.dialect, caller, &changes).await?;
        transaction.commit().await?;
        self.resource_cache.invalidate();
        Ok(deleted)
    }

    /// Deletes a finished job with its attempts and output (an array with its children).
    /// Refused while it runs or waits, or while a waiting job depends on it.
    pub async fn delete_job(
        &self,
        job_id: &JobId,
        caller: Option<Caller>,
    ) -> Result<Deleted, DeleteError> {
        let row = sqlx::query("SELECT status, array_parent FROM jobs WHERE job_id = $1")
            .bind(&job_id.0)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| DeleteError::NotFound(format!("job {job_id} does not exist")))?;
        if let Some(parent) = row.try_get::<Option<String>, _>(1)? {
            return Err(DeleteRefusal::ArrayChild {
                job_id: job_id.clone(),
                parent: JobId(parent),
            }
            .into());
        }
        let mut n = 0;
        loop {
            let mut transaction = self.write.begin().await?;
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM jobs WHERE job_id = $1")
                    .bind(&job_id.0)
                    .fetch_optional(&mut *transaction)
                    .await?;
            let Some(status) = status else {
                // Deleted meanwhile (by another delete or by pruning).
                break;
            };
            let status = JobStatus::parse(&status)
                .ok_or_else(|| StoreError::corrupt("job status", &status))?;
            let dependent = waiting_dependent(self.dialect, &mut transaction, job_id).await?;
            check_job_delete(job_id, status, dependent)?;
            let (deleted, done) =
                delete_finished_job(self.dialect, &mut transaction, job_id, DELETE_BATCH).await?;
            n += deleted;
            if done {
                // The audit event goes with the batch that deletes the job itself.
                let gone = Deleted::job(job_id, n);
                write_audit(&mut transaction, self.dialect, caller, &[gone.change()]).await?;
                transaction.commit().await?;
                return Ok(gone);
            }
            transaction.commit().await?;
        }
        Ok(Deleted::job(job_id, n))
    }

    /// One pruning batch: the finished top-level jobs of `queue` that ended with `status` before
    /// `cutoff`, oldest first, deleted with their children, attempts and output until `budget`
    /// jobs went. Jobs a waiting job depends on stay. Returns how many jobs were deleted.
    pub async fn prune_finished(
        &self,
        queue: &str,
        status: JobStatus,
        cutoff: i64,
        budget: u32,
    ) -> Result<u64, StoreError> {
        let status = match status {
            // Literal statuses, so that SQLite sees the partial index's condition is implied.
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Submitted
            | JobStatus::Pending
            | JobStatus::Runnable
            | JobStatus::Starting
            | JobStatus::Running => return Ok(0),
        };
        // How long each step holds the writer (SQLite has one): the figures behind
        // BENCHMARKS.md's "Time-ordered job ids", at debug level.
        let started = std::time::Instant::now();
        let mut transaction = self.begin_fenced().await?;
        let begun = started.elapsed();
        let candidates = sqlx::query(&format!(
            "SELECT job_id, array_size FROM jobs{} WHERE array_parent IS NULL AND job_queue = $1 \
             AND status = '{status}' AND stopped_at < $2 \
             AND NOT EXISTS (SELECT 1 {}) \
             ORDER BY stopped_at LIMIT $3",
            indexed_by(self.dialect, "jobs_finished_by_queue"),
            waiting_dependents_of(self.dialect, "jobs.job_id")
        ))
        .bind(queue)
        .bind(cutoff)
        .bind(i64::from(budget))
        .fetch_all(&mut *transaction)
        .await?;
        // Single jobs go together, a few statements for the whole batch; arrays one by one,
        // children first, within what is left of the budget.
        let mut singles = Vec::new();
        let mut arrays = Vec::new();
        for row in &candidates {
            let job_id: String = row.try_get(0)?;
            match row.try_get::<Option<i64>, _>(1)? {
                None => singles.push(job_id),
                Some(_) => arrays.push(JobId(job_id)),
            }
        }
        let chosen = started.elapsed();
        let deleted = delete_rows(self.dialect, &mut transaction, &singles).await?;
        let deleted =
            delete_in_turn(self.dialect, &mut transaction, arrays, deleted, budget).await?;
        let removed = started.elapsed();
        transaction.commit().await?;
        tracing::debug!(
            deleted,
            begin_ms = begun.as_secs_f64() * 1e3,
            choose_ms = (chosen - begun).as_secs_f64() * 1e3,
            delete_ms = (removed - chosen).as_secs_f64() * 1e3,
            commit_ms = (started.elapsed() - removed).as_secs_f64() * 1e3,
            "pruned a batch"
        );
        Ok(deleted)
    }

    /// One batch of a schedule's history limit: the jobs it fired that finished with `status`,
    /// beyond the newest `keep` of them, deleted until `budget` jobs went (those a waiting job
    /// depends on stay). Returns how many jobs were deleted.
    pub async fn prune_schedule_history(
        &self,
        schedule: &str,
        status: JobStatus,
        keep: u32,
        budget: u32,
    ) -> Result<u64, StoreError> {
        let mut transaction = self.begin_fenced().await?;
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT f.job_id FROM schedule_firings f JOIN jobs j ON j.job_id = f.job_id \
             WHERE f.schedule = $1 AND f.outcome = 'FIRED' AND j.status = $2 \
             ORDER BY f.scheduled_time DESC LIMIT $3 OFFSET $4",
        )
        .bind(schedule)
        .bind(status.as_str())
        .bind(i64::from(budget))
        .bind(i64::from(keep))
        .fetch_all(&mut *transaction)
        .await?;
        let candidates = candidates.into_iter().map(JobId).collect();
        let deleted = delete_in_turn(self.dialect, &mut transaction, candidates, 0, budget).await?;
        transaction.commit().await?;
        Ok(deleted)
    }

    /// Gives free pages back to the file system, up to `pages` of them: SQLite's incremental
    /// vacuum (a database made before 0.1's auto_vacuum setting reuses them instead; see
    /// docs/lifecycle.md). Postgres reclaims space by autovacuum, so nothing is done there.
    pub async fn reclaim_space(&self, pages: u32) -> Result<(), StoreError> {
        if self.dialect == Dialect::Sqlite {
            // The pragma returns a row per step; reading them all runs it to the end.
            sqlx::query(&format!("PRAGMA incremental_vacuum({pages})"))
                .fetch_all(&self.write)
                .await?;
        }
        Ok(())
    }

    /// How many free pages `reclaim_space` could give back: SQLite's free list, in a database
    /// made with incremental auto-vacuum (one made before it only reuses its free pages); 0 on
    /// Postgres, whose space autovacuum manages.
    pub async fn reclaimable_pages(&self) -> Result<u64, StoreError> {
        match self.dialect {
            Dialect::Sqlite => {
                // auto_vacuum 2 is INCREMENTAL.
                let pages: i64 = sqlx::query_scalar(
                    "SELECT CASE WHEN a.auto_vacuum = 2 THEN f.freelist_count ELSE 0 END \
                     FROM pragma_auto_vacuum() a, pragma_freelist_count() f",
                )
                .fetch_one(&self.read)
                .await?;
                Ok(pages.max(0) as u64)
            }
            Dialect::Postgres => Ok(0),
        }
    }

    /// SQLite: copies what the write-ahead log holds into the database file and empties the log
    /// (for a measurement of the file, or before copying it); nothing on Postgres.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_all(&self.write)
                .await?;
        }
        Ok(())
    }

    /// How many bytes the database takes: SQLite's pages (free ones included: the file's size
    /// once checkpointed), or Postgres's `pg_database_size`.
    pub async fn database_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 =
            match self.dialect {
                Dialect::Sqlite => sqlx::query_scalar(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                )
                .fetch_one(&self.read)
                .await?,
                Dialect::Postgres => {
                    sqlx::query_scalar("SELECT pg_database_size(current_database())")
                        .fetch_one(&self.read)
                        .await?
                }
            };
        Ok(bytes as u64)
    }

    async fn locked_queue(
        &self,
        transaction: &mut Transaction<'static, Any>,
        name: &str,
    ) -> Result<crate::core::model::JobQueue, DeleteError> {
        let model = self.locked_model(transaction, Kind::JobQueue, name).await?;
        Ok(super::resources::queue_from_model(name, model.as_deref())?)
    }

    async fn locked_environment(
        &self,
        transaction: &mut Transaction<'static, Any>,
        name: &str,
    ) -> Result<crate::core::model::ComputeEnvironment, DeleteError> {
        let model = self
            .locked_model(transaction, Kind::ComputeEnvironment, name)
            .await?;
        Ok(super::resources::environment_from_model(
            name,
            model.as_deref(),
        )?)
    }

    /// The stored model of a resource (`None` before the start-up upgrade gave it one), locked
    /// until the transaction ends.
    async fn locked_model(
        &self,
        transaction: &mut Transaction<'static, Any>,
        kind: Kind,
        name: &str,
    ) -> Result<Option<String>, DeleteError> {
        let row = sqlx::query(&format!(
            "SELECT model FROM {} WHERE name = $1{}",
            super::resources::table_of(kind),
            self.for_update()
        ))
        .bind(name)
        .fetch_optional(&mut **transaction)
        .await?;
        let row = row.ok_or_else(|| not_found(kind, name))?;
        Ok(row.try_get(0)?)
    }

    async fn job_queues_in(
        &self,
        transaction: &mut Transaction<'static, Any>,
    ) -> Result<Vec<crate::core::model::JobQueue>, StoreError> {
        let rows = sqlx::query("SELECT name, model FROM job_queues ORDER BY name")
            .fetch_all(&mut **transaction)
            .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let model: Option<String> = row.try_get(1)?;
                super::resources::queue_from_model(&name, model.as_deref())
            })
            .collect()
    }

    /// Postgres locks the row read, so an apply of the same resource waits for the delete; SQLite
    /// has one writer, which serialises them already.
    fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

fn not_found(kind: Kind, name: &str) -> DeleteError {
    DeleteError::NotFound(format!(
        "{} \"{name}\" does not exist; see `batchctl get {}`",
        kind.as_str(),
        kind.plural()
    ))
}

fn job_and_status(row: &sqlx::any::AnyRow) -> Result<(JobId, JobStatus), StoreError> {
    let job_id: String = row.try_get(0)?;
    let status: String = row.try_get(1)?;
    let status =
        JobStatus::parse(&status).ok_or_else(|| StoreError::corrupt("job status", &status))?;
    Ok((JobId(job_id), status))
}

/// Deletes the row `name` of `table`; false if there was none.
async fn delete_named(
    transaction: &mut Transaction<'static, Any>,
    table: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(&format!("DELETE FROM {table} WHERE name = $1"))
        .bind(name)
        .execute(&mut **transaction)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

/// Makes `revision` of definition `name` INACTIVE, or every ACTIVE revision when none is named.
async fn deregister(
    transaction: &mut Transaction<'static, Any>,
    name: &str,
    revision: Option<u32>,
) -> Result<Vec<Deleted>, DeleteError> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(revision) FROM job_definitions WHERE name = $1 AND ($2 = 0 OR revision = $2)",
    )
    .bind(name)
    .bind(i64::from(revision.unwrap_or(0)))
    .fetch_one(&mut **transaction)
    .await?;
    if exists.is_none() {
        return Err(DeleteError::NotFound(match revision {
            Some(revision) => format!(
                "job definition \"{name}\" has no revision {revision}; see `batchctl get definitions`"
            ),
            None => format!(
                "job definition \"{name}\" does not exist; see `batchctl get definitions`"
            ),
        }));
    }
    let revisions: Vec<i64> = sqlx::query_scalar(
        "UPDATE job_definitions SET status = 'INACTIVE' WHERE name = $1 \
         AND ($2 = 0 OR revision = $2) AND status = 'ACTIVE' RETURNING revision",
    )
    .bind(name)
    .bind(i64::from(revision.unwrap_or(0)))
    .fetch_all(&mut **transaction)
    .await?;
    let mut revisions: Vec<u32> = revisions.into_iter().map(|r| r as u32).collect();
    revisions.sort_unstable();
    Ok(revisions
        .into_iter()
        .map(|revision| Deleted {
            kind: Kind::JobDefinition.as_str(),
            name: name.to_string(),
            revision: Some(revision),
            action: DeletedAction::Deregistered,
            jobs: None,
        })
        .collect())
}

/// A SUBMITTED or PENDING job that depends on `job_id` or on one of its children, if any.
///
/// The dependency rows are found by what they depend on (`job_dependencies_by_parent`, named on
/// SQLite): SQLite, planning without statistics, otherwise began from every SUBMITTED and
/// PENDING job (`jobs_by_status`) — 22 ms a call, and 10.8 s for a prune batch of 500, with
/// 200,000 jobs PENDING elsewhere (BENCHMARKS.md, "Retention beside a waiting backlog").
async fn waiting_dependent(
    dialect: Dialect,
    transaction: &mut Transaction<'static, Any>,
    job_id: &JobId,
) -> Result<Option<JobId>, StoreError> {
    let dependent: Option<String> = sqlx::query_scalar(&format!(
        "SELECT w.job_id {} LIMIT 1",
        waiting_dependents_of(dialect, "$1")
    ))
    .bind(&job_id.0)
    .fetch_optional(&mut **transaction)
    .await?;
    Ok(dependent.map(JobId))
}

/// `FROM … WHERE …` of the SUBMITTED or PENDING jobs (`w`) that depend on the job whose id is
/// the SQL expression `job` or on one of its children (ids `JOB:index`, between `JOB:` and
/// `JOB;`): what keeps a finished job from being deleted. Shared by `waiting_dependent` and the
/// prune batch's choice.
fn waiting_dependents_of(dialect: Dialect, job: &str) -> String {
    format!(
        "FROM job_dependencies d{} JOIN jobs w ON w.job_id = d.job_id \
         WHERE (d.depends_on = {job} OR (d.depends_on > {job} || ':' \
         AND d.depends_on < {job} || ';')) AND w.status IN ('SUBMITTED', 'PENDING')",
        indexed_by(dialect, "job_dependencies_by_parent")
    )
}

/// Deletes finished top-level jobs one after another (an array's children first) until `budget`
/// jobs in all went, `deleted` of them already; those a waiting job depends on are passed over.
/// Returns how many went in all.
async fn delete_in_turn(
    dialect: Dialect,
    transaction: &mut Transaction<'static, Any>,
    jobs: Vec<JobId>,
    mut deleted: u64,
    budget: u32,
) -> Result<u64, StoreError> {
    for job_id in jobs {
        let left = u32::try_from(u64::from(budget).saturating_sub(deleted)).unwrap_or(0);
        if left == 0 {
            break;
        }
        if waiting_dependent(dialect, transaction, &job_id)
            .await?
            .is_some()
        {
            continue;
        }
        let (n, done) = delete_finished_job(dialect, transaction, &job_id, left).await?;
        deleted += n;
        if !done {
            break;
        }
    }
    Ok(deleted)
}

/// Deletes up to `budget` of a finished top-level job's children, then, once none is left, the
/// job itself; with their attempts, output and dependency rows. Returns how many jobs went and
/// whether the job is gone.
async fn delete_finished_job(
    dialect: Dialect,
    transaction: &mut Transaction<'static, Any>,
    job_id: &JobId,
    budget: u32,
) -> Result<(u64, bool), StoreError> {
    let children: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT job_id FROM jobs{} WHERE array_parent = $1 LIMIT $2",
        indexed_by(dialect, "jobs_by_array_parent")
    ))
    .bind(&job_id.0)
    .bind(i64::from(budget))
    .fetch_all(&mut **transaction)
    .await?;
    let mut deleted = delete_rows(dialect, transaction, &children).await?;
    if children.len() as u64 >= u64::from(budget) {
        return Ok((deleted, false));
    }
    deleted += delete_rows(dialect, transaction, std::slice::from_ref(&job_id.0)).await?;
    let array_counts = match dialect {
        Dialect::Sqlite => "array_counts",
        Dialect::Postgres => "array_count_deltas",
    };
    sqlx::query(&format!(
        "DELETE FROM {array_counts} WHERE array_parent = $1"
    ))
    .bind(&job_id.0)
    .execute(&mut **transaction)
    .await?;
    Ok((deleted, true))
}

/// A query for one unfinished top-level job of the queue `$1` (its id and status): one probe per
/// unfinished status, each through the index that holds that status (migration 0034 left STARTING
/// and RUNNING out of the top-level ones; a capacity bounds how many jobs hold those).
fn unfinished_in_queue(dialect: Dialect) -> String {
    let probes: Vec<String> = JobStatus::ALL
        .into_iter()
        .filter(|status| !status.is_terminal())
        .map(|status| {
            let index = match super::jobs::in_top_level_indexes(status) {
                true => "jobs_top_level_by_queue_status",
                false => "jobs_by_status",
            };
            format!(
                "SELECT job_id, status FROM jobs{} WHERE array_parent IS NULL AND job_queue = $1 \
                 AND {}",
                indexed_by(dialect, index),
                super::jobs::status_is(status)
            )
        })
        .collect();
    format!("{} LIMIT 1", probes.join(" UNION ALL "))
}

/// Deletes the jobs `ids` with their attempts, output and dependency rows; how many jobs went.
async fn delete_rows(
    dialect: Dialect,
    transaction: &mut Transaction<'static, Any>,
    ids: &[String],
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for chunk in ids.chunks(super::sql::ROWS_PER_STATEMENT) {
        let list = placeholders(dialect, chunk.len(), 1, 1);
        for table in ["log_chunks", "attempts", "job_dependencies", "jobs"] {
            let sql = format!("DELETE FROM {table} WHERE job_id IN ({list})");
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            let n = query.execute(&mut **transaction).await?.rows_affected();
            if table == "jobs" {
                deleted += n;
            }
        }
    }
    Ok(deleted)
}
