//! Jobs and their attempts: group-committed inserts, compare-and-set transitions, and the queries the
//! dispatcher and the API need, each served by an index (see the migrations).

use std::collections::{BTreeMap, HashMap};

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::events::{emit_moved, Emission};
use super::{Store, StoreError};
use crate::core::model::{
    ArrayRole, Attempt, CurrentAttempt, DependencyKind, EnvironmentName, Job, JobId, JobName,
    JobSpec, JobStatus, QueueName,
};

/// An array child stores no spec; it runs its parent's.
const JOB_COLUMNS: &str = "seq, job_id, job_name, job_queue, status, status_reason, \
    CASE WHEN array_parent IS NULL THEN spec \
    ELSE (SELECT p.spec FROM jobs p WHERE p.job_id = jobs.array_parent) END AS spec, \
    created_at, started_at, stopped_at, n_attempts, attempt_number, attempt_environment, \
    attempt_handle, attempt_placed_at, attempt_started_at, stop_requested, idempotency_key, \
    runnable_after, array_size, array_parent, array_index";

/// The statuses in which a job has not finished.
const UNFINISHED: &str = "('SUBMITTED', 'PENDING', 'RUNNABLE', 'STARTING', 'RUNNING')";

/// A job to insert, in status SUBMITTED.
pub type NewJob = Job;

/// A move of one job, computed by `core::state_machine::transition`, with what it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub job_id: JobId,
    pub from: JobStatus,
    pub to: JobStatus,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Capacity was reserved for this attempt.
    Placed {
        attempt: CurrentAttempt,
    },
    /// The executor confirmed the attempt runs.
    Started {
        at: i64,
    },
    /// The attempt was not handed over; the job waits in its queue again.
    Deferred {
        reason: String,
    },
    /// The attempt ended; `attempt` is its record. A retried job waiting out a backoff is not placed
    /// before `runnable_after`.
    AttemptEnded {
        attempt: Attempt,
        runnable_after: Option<i64>,
    },
    Cancelled {
        reason: String,
        at: i64,
    },
    /// Every child of the array job has finished.
    ArrayEnded {
        reason: String,
        at: i64,
    },
}

/// An array job whose children have all finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedArray {
    pub job_id: JobId,
    pub size: u32,
    pub n_failed: u32,
    /// The reason given when the array was cancelled or terminated.
    pub stop_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only the children of this array job; without it, children are left out, as AWS Batch's
    /// ListJobs does.
    pub array_parent: Option<JobId>,
    pub queue: Option<QueueName>,
    pub status: Option<JobStatus>,
    /// Only jobs submitted before the one with this sequence number (the page cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

/// The most bytes of job specs one page of `jobs` reads: a page holds fewer jobs than asked
/// when their specs are large (at least one), so a list costs bounded memory whatever was
/// submitted.
pub const MAX_PAGE_SPEC_BYTES: i64 = 4 * 1024 * 1024;

/// Binds the values of `jobs`' conditions for `filter`, in their placeholders' order.
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    filter: &'q JobFilter,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut query = query.bind(filter.before.unwrap_or(i64::MAX));
    if let Some(parent) = &filter.array_parent {
        query = query.bind(parent.0.as_str());
    }
    if let Some(queue) = &filter.queue {
        query = query.bind(queue.as_str());
    }
    if let Some(status) = filter.status {
        query = query.bind(status.as_str());
    }
    query
}

/// How many placeholders the conditions of `jobs` for `filter` use (`seq < $1`, then one each
/// for the array parent, the queue and the status when given).
fn bound_parameters(filter: &JobFilter) -> usize {
    1 + usize::from(filter.array_parent.is_some())
        + usize::from(filter.queue.is_some())
        + usize::from(filter.status.is_some())
}

/// An array child as lists show it: without the spec, which is its parent's.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSummary {
    pub job_id: JobId,
    pub job_name: String,
    pub queue: String,
    pub status: JobStatus,
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub array_index: Option<u32>,
    /// Attempts started, the one under way included.
    pub n_attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChildPage {
    pub children: Vec<ChildSummary>,
    /// Pass as `before` to read the next page; `None` on the last page.
    pub next: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `before` to read the next page; `None` on the last page.
    pub next: Option<i64>,
}

impl Store {
    /// Inserts jobs in one transaction, many rows per statement. A job whose idempotency key is
    /// already taken is not inserted; the job that holds the key is returned in its place.
    pub async fn insert_jobs(&self, jobs: &[NewJob]) -> Result<Vec<Job>, StoreError> {
        let mut transaction = self.write.begin().await?;
        let stored = self.insert_jobs_in(&mut transaction, jobs).await?;
        transaction.commit().await?;
        Ok(stored)
    }

    /// Runs `record` (an `INSERT … ON CONFLICT DO NOTHING` of the row that makes an action happen
    /// once) and inserts `job` in the same transaction. False, and no job, if the row was there.
    pub(super) async fn record_once_with_job<'q>(
        &self,
        record: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        job: &Job,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_fenced().await?;
        let inserted = record.execute(&mut *transaction).await?.rows_affected();
        if inserted == 0 {
            transaction.rollback().await?;
            return Ok(false);
        }
        self.insert_jobs_in(&mut transaction, std::slice::from_ref(job))
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// `insert_jobs` inside a transaction the caller commits.
    pub(super) async fn insert_jobs_in(
        &self,
        transaction: &mut Transaction<'static, Any>,
        jobs: &[NewJob],
    ) -> Result<Vec<Job>, StoreError> {
        const COLUMNS: usize = 14;
        let mut inserted = std::collections::HashSet::new();
        for chunk in jobs.chunks(super::transitions::ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO jobs (job_id, job_name, job_queue, status, spec, vcpu_millis, \
                 memory_mib, gpus, created_at, idempotency_key, updated_at, array_size, \
                 share_identifier, scheduling_priority) VALUES {} \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING job_id",
                super::transitions::placeholders(self.dialect, chunk.len(), COLUMNS, 1)
            );
            let mut query = sqlx::query(&sql);
            for job in chunk {
                let spec = serde_json::to_string(&job.spec)
                    .map_err(|e| StoreError::corrupt("job spec", e))?;
                let resources = &job.spec.container.resources;
                query = query
                    .bind(job.job_id.0.clone())
                    .bind(job.job_name.to_string())
                    .bind(job.queue.to_string())
                    .bind(job.status.as_str())
                    .bind(spec)
                    .bind(resources.vcpu_millis as i64)
                    .bind(resources.memory_mib as i64)
                    .bind(resources.gpus as i64)
                    .bind(job.created_at)
                    .bind(job.idempotency_key.clone())
                    .bind(job.created_at)
                    .bind(job.spec.array_size.map(i64::from))
                    .bind(job.spec.share_identifier.clone())
                    .bind(job.spec.scheduling_priority);
            }
            for row in query.fetch_all(&mut **transaction).await? {
                inserted.insert(row.try_get::<String, _>(0)?);
            }
        }
        let new_jobs: Vec<&Job> = jobs
            .iter()
            .filter(|job| inserted.contains(&job.job_id.0))
            .collect();
        for job in &new_jobs {
            if let Some(size) = job.spec.array_size {
                insert_array_children(transaction, job, size).await?;
            }
        }
        // Whole-job dependencies are rows of the job itself (an array's children wait on their
        // parent's rows too); N_TO_N and SEQUENTIAL ones are rows of the children.
        let dependencies: Vec<(&str, &str)> = new_jobs
            .iter()
            .flat_map(|job| {
                job.spec.depends_on.iter().filter_map(|dependency| {
                    match (dependency.kind, &dependency.job_id) {
                        (DependencyKind::Whole, Some(parent)) => {
                            Some((job.job_id.0.as_str(), parent.0.as_str()))
                        }
                        (DependencyKind::Whole, None)
                        | (DependencyKind::NToN | DependencyKind::Sequential, _) => None,
                    }
                })
            })
            .collect();
        for chunk in dependencies.chunks(super::transitions::ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO job_dependencies (job_id, depends_on) VALUES {}",
                super::transitions::placeholders(self.dialect, chunk.len(), 2, 1)
            );
            let mut query = sqlx::query(&sql);
            for (job_id, parent) in chunk {
                query = query.bind(job_id.to_string()).bind(parent.to_string());
            }
            query.execute(&mut **transaction).await?;
        }
        let mut stored = Vec::with_capacity(jobs.len());
        for job in jobs {
            if inserted.contains(&job.job_id.0) {
                stored.push(job.clone());
                continue;
            }
            let row = sqlx::query(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"
            ))
            .bind(job.idempotency_key.as_deref())
            .fetch_one(&mut **transaction)
            .await?;
            stored.push(job_from_row(&row)?);
        }
        Ok(stored)
    }

    /// Each array job's children by status (`arrayProperties.statusSummary`).
    pub async fn array_status_summaries(
        &self,
        parents: &[JobId],
    ) -> Result<HashMap<JobId, BTreeMap<JobStatus, u64>>, StoreError> {
        let mut summaries: HashMap<JobId, BTreeMap<JobStatus, u64>> = HashMap::new();
        for chunk in parents.chunks(super::transitions::ROWS_PER_STATEMENT) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT array_parent, status, COUNT(*) FROM jobs WHERE array_parent IN ({}) \
                 GROUP BY array_parent, status",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for parent in chunk {
                query = query.bind(parent.0.clone());
            }
            for row in query.fetch_all(&self.read).await? {
                let status: String = row.try_get(1)?;
                let status = JobStatus::parse(&status)
                    .ok_or_else(|| StoreError::corrupt("job status", status))?;
                summaries
                    .entry(JobId(row.try_get(0)?))
                    .or_default()
                    .insert(status, row.try_get::<i64, _>(2)? as u64);
            }
        }
        Ok(summaries)
    }

    /// The job with its finished attempts.
    pub async fn job(&self, job_id: &JobId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1"))
            .bind(&job_id.0)
            .fetch_optional(&self.read)
            .await?;
        let Some(mut job) = row.as_ref().map(job_from_row).transpose()? else {
            return Ok(None);
        };
        self.load_attempts(std::slice::from_mut(&mut job)).await?;
        Ok(Some(job))
    }

    /// Fills in the finished attempts of each job, with one query.
    async fn load_attempts(&self, jobs: &mut [Job]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=jobs.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT job_id, attempt_number, compute_environment, exit_code, status_reason, \
             started_at, stopped_at FROM attempts WHERE job_id IN ({}) \
             ORDER BY job_id, attempt_number",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for job in jobs.iter() {
            query = query.bind(&job.job_id.0);
        }
        let rows = query.fetch_all(&self.read).await?;
        let mut by_job: std::collections::HashMap<String, Vec<Attempt>> =
            std::collections::HashMap::new();
        for row in &rows {
            by_job
                .entry(row.try_get("job_id")?)
                .or_default()
                .push(attempt_from_row(row)?);
        }
        for job in jobs {
            job.attempts = by_job.remove(&job.job_id.0).unwrap_or_default();
        }
        Ok(())
    }

    /// Jobs newest first, with their finished attempts.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        // The conditions are spelled out per filter so that each query can use its index, and only
        // the placeholders a query uses are bound (Postgres refuses untyped unused ones).
        let mut conditions = vec!["seq < $1".to_string()];
        let mut n_parameters = 1;
        let mut next_parameter = || {
            n_parameters += 1;
            format!("${n_parameters}")
        };
        match &filter.array_parent {
            Some(_) => conditions.push(format!("array_parent = {}", next_parameter())),
            None => conditions.push("array_parent IS NULL".to_string()),
        }
        if filter.queue.is_some() {
            conditions.push(format!("job_queue = {}", next_parameter()));
        }
        if filter.status.is_some() {
            conditions.push(format!("status = {}", next_parameter()));
        }
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE {} ORDER BY seq DESC LIMIT {}",
            conditions.join(" AND "),
            next_parameter()
        );
        let limit = self.limit_by_spec_bytes(filter, &conditions).await?;
        let query = bind_filter(sqlx::query(&sql), filter);
        let rows = query
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.read)
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows.iter().take(limit as usize) {
            last_seq = Some(row.try_get::<i64, _>("seq")?);
            jobs.push(job_from_row(row)?);
        }
        let next = if rows.len() > limit as usize {
            last_seq
        } else {
            None
        };
        self.load_attempts(&mut jobs).await?;
        Ok(JobPage { jobs, next })
    }

    /// How many of the `filter.limit` jobs `jobs` may read within `MAX_PAGE_SPEC_BYTES` of specs
    /// (at least one): their sizes are read first, without the specs.
    async fn limit_by_spec_bytes(
        &self,
        filter: &JobFilter,
        conditions: &[String],
    ) -> Result<u32, StoreError> {
        let limit = filter.limit.max(1);
        let sql = format!(
            "SELECT CASE WHEN array_parent IS NULL THEN LENGTH(spec) \
             ELSE (SELECT LENGTH(p.spec) FROM jobs p WHERE p.job_id = jobs.array_parent) END AS spec_bytes \
             FROM jobs WHERE {} ORDER BY seq DESC LIMIT {}",
            conditions.join(" AND "),
            format_args!("${}", bound_parameters(filter) + 1)
        );
        let query = bind_filter(sqlx::query(&sql), filter);
        let rows = query.bind(i64::from(limit)).fetch_all(&self.read).await?;
        let mut total = 0i64;
        let mut fitting = 0u32;
        for row in &rows {
            total += row.try_get::<Option<i64>, _>("spec_bytes")?.unwrap_or(0);
            if total > MAX_PAGE_SPEC_BYTES && fitting > 0 {
                break;
            }
            fitting += 1;
        }
        Ok(fitting.clamp(1, limit))
    }

    /// A page of an array's children, newest first, without their spec (it is the parent's).
    pub async fn array_children(
        &self,
        parent: &JobId,
        status: Option<JobStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<ChildPage, StoreError> {
        let limit = limit.max(1);
        let status_condition = if status.is_some() {
            "AND status = $3 "
        } else {
            ""
        };
        let limit_parameter = if status.is_some() { "$4" } else { "$3" };
        let sql = format!(
            "SELECT seq, job_id, job_name, job_queue, status, status_reason, created_at, started_at, \
             stopped_at, n_attempts, attempt_number, array_index FROM jobs \
             WHERE seq < $1 AND array_parent = $2 {status_condition}\
             ORDER BY seq DESC LIMIT {limit_parameter}"
        );
        let mut query = sqlx::query(&sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(parent.0.as_str());
        if let Some(status) = status {
            query = query.bind(status.as_str());
        }
        let rows = query
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.read)
            .await?;
        let mut children = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows.iter().take(limit as usize) {
            last_seq = Some(row.try_get::<i64, _>("seq")?);
            let job_id: String = row.try_get("job_id")?;
            let status: String = row.try_get("status")?;
            let status = JobStatus::parse(&status).ok_or_else(|| {
                StoreError::corrupt(format!("job {job_id}"), format!("unknown status {status}"))
            })?;
            let n_attempts = row.try_get::<i64, _>("n_attempts")?;
            let current = row.try_get::<Option<i64>, _>("attempt_number")?;
            children.push(ChildSummary {
                job_id: JobId(job_id),
                job_name: row.try_get("job_name")?,
                queue: row.try_get("job_queue")?,
                status,
                status_reason: row.try_get("status_reason")?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                stopped_at: row.try_get("stopped_at")?,
                array_index: row
                    .try_get::<Option<i64>, _>("array_index")?
                    .map(|index| index as u32),
                n_attempts: n_attempts.max(current.unwrap_or(0)) as u32,
            });
        }
        let next = if rows.len() > limit as usize {
            last_seq
        } else {
            None
        };
        Ok(ChildPage { children, next })
    }

    /// Moves up to `limit` of the oldest jobs in `from` to `to` (a bulk compare-and-set); returns
    /// how many moved.
    pub async fn advance_oldest(
        &self,
        from: JobStatus,
        to: JobStatus,
        limit: u32,
        now: i64,
    ) -> Result<u64, StoreError> {
        let emission = self.emission();
        let returning = emission.returning();
        let mut transaction = self.begin_fenced().await?;
        let rows = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, updated_at = $2 WHERE status = $3 AND seq IN \
             (SELECT seq FROM jobs WHERE status = $3 ORDER BY status, seq LIMIT $4) \
             {returning}"
        ))
        .bind(to.as_str())
        .bind(now)
        .bind(from.as_str())
        .bind(i64::from(limit))
        .fetch_all(&mut *transaction)
        .await?;
        let moved = emit_moved_rows(emission, &mut transaction, &rows, now).await?;
        transaction.commit().await?;
        Ok(moved)
    }

    /// Admits up to `limit` of the oldest SUBMITTED jobs in one transaction: those without
    /// dependencies to `ready` (they have nothing to wait for), the others, and array parents
    /// (which wait for their children), to `waiting`. Returns how
    /// many moved to each.
    pub async fn admit_submitted(
        &self,
        queue: &QueueName,
        ready: JobStatus,
        waiting: JobStatus,
        limit: u32,
        now: i64,
    ) -> Result<(u64, u64), StoreError> {
        let emission = self.emission();
        let returning = emission.returning();
        let mut transaction = self.begin_fenced().await?;
        // The oldest `limit` SUBMITTED jobs are those with a seq up to the limit-th one's: one
        // scalar subquery (an InitPlan, run once) and an index range on (status, seq), a plan no
        // statistics can spoil. Written as a join or `seq IN (subquery)`, Postgres with statistics
        // taken while the table was small looped over every pair: seconds per pass.
        // Per queue (index jobs_submitted_by_queue), so no queue's backlog holds up another's.
        let oldest = "status = 'SUBMITTED' AND job_queue = $4 AND seq <= (SELECT MAX(seq) FROM \
             (SELECT seq FROM jobs WHERE status = 'SUBMITTED' AND job_queue = $4 \
             ORDER BY job_queue, seq LIMIT $3) AS oldest)";
        let ready_count = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, updated_at = $2 WHERE {oldest} AND array_size IS NULL \
             AND NOT EXISTS (SELECT 1 FROM job_dependencies d WHERE d.job_id = jobs.job_id) \
             AND (array_parent IS NULL OR NOT EXISTS \
             (SELECT 1 FROM job_dependencies d WHERE d.job_id = jobs.array_parent)) \
             {returning}"
        ))
        .bind(ready.as_str())
        .bind(now)
        .bind(i64::from(limit))
        .bind(queue.as_str())
        .fetch_all(&mut *transaction)
        .await?;
        let ready_count = emit_moved_rows(emission, &mut transaction, &ready_count, now).await?;
        let waiting_limit = i64::from(limit).saturating_sub(ready_count as i64);
        let waiting_count = if waiting_limit > 0 {
            let rows = sqlx::query(&format!(
                "UPDATE jobs SET status = $1, updated_at = $2 WHERE {oldest} \
                 {returning}"
            ))
            .bind(waiting.as_str())
            .bind(now)
            .bind(waiting_limit)
            .bind(queue.as_str())
            .fetch_all(&mut *transaction)
            .await?;
            emit_moved_rows(emission, &mut transaction, &rows, now).await?
        } else {
            0
        };
        transaction.commit().await?;
        Ok((ready_count, waiting_count))
    }

    /// RUNNABLE jobs of the same queue submitted before this one.
    pub async fn runnable_ahead(&self, job_id: &JobId) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE status = 'RUNNABLE' \
             AND job_queue = (SELECT job_queue FROM jobs WHERE job_id = $1) \
             AND seq < (SELECT seq FROM jobs WHERE job_id = $1)",
        )
        .bind(&job_id.0)
        .fetch_one(&self.read)
        .await?;
        Ok(count as u64)
    }

    /// The jobs this one depends on that have not SUCCEEDED, with their status; for an array child,
    /// with those its parent depends on.
    pub async fn unfinished_dependencies(
        &self,
        job_id: &JobId,
    ) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.job_id, p.status FROM job_dependencies d JOIN jobs p ON p.job_id = d.depends_on \
             WHERE d.job_id IN ($1, (SELECT array_parent FROM jobs WHERE job_id = $1)) \
             AND p.status <> 'SUCCEEDED' ORDER BY p.seq",
        )
        .bind(&job_id.0)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get(1)?;
                let status = JobStatus::parse(&status)
                    .ok_or_else(|| StoreError::corrupt("job status", status))?;
                Ok((JobId(row.try_get(0)?), status))
            })
            .collect()
    }

    /// What STARTING and RUNNING attempts hold, per compute environment.
    pub async fn capacity_in_use(
        &self,
    ) -> Result<std::collections::HashMap<EnvironmentName, crate::core::model::Resources>, StoreError>
    {
        let rows = sqlx::query(
            "SELECT attempt_environment, CAST(SUM(vcpu_millis) AS BIGINT), \
             CAST(SUM(memory_mib) AS BIGINT), CAST(SUM(gpus) AS BIGINT) FROM jobs \
             WHERE status IN ('STARTING', 'RUNNING') AND attempt_environment IS NOT NULL \
             GROUP BY attempt_environment",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let name = EnvironmentName::try_from(name)
                    .map_err(|e| StoreError::corrupt("environment name", e))?;
                let resources = crate::core::model::Resources {
                    vcpu_millis: row.try_get::<i64, _>(1)? as u64,
                    memory_mib: row.try_get::<i64, _>(2)? as u64,
                    gpus: row.try_get::<i64, _>(3)? as u64,
                };
                Ok((name, resources))
            })
            .collect()
    }

    /// Of `ids`, those that name a job, each with its array size (`None` for a job that is not an
    /// array parent).
    pub async fn existing_jobs(
        &self,
        ids: &[JobId],
    ) -> Result<HashMap<JobId, Option<u32>>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(super::transitions::ROWS_PER_STATEMENT) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT job_id, array_size FROM jobs WHERE job_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.0.clone());
            }
            for row in query.fetch_all(&self.read).await? {
                let size: Option<i64> = row.try_get(1)?;
                found.insert(JobId(row.try_get(0)?), size.map(|size| size as u32));
            }
        }
        Ok(found)
    }

    /// Moves PENDING jobs on: to FAILED (`failed`, with a reason naming the first failed
    /// dependency) when a job they depend on FAILED, then to RUNNABLE (`runnable`) when every job
    /// they depend on SUCCEEDED. An array child also waits on what its parent depends on; an array
    /// parent never becomes RUNNABLE (see `finished_arrays`). Both are bulk compare-and-sets from
    /// PENDING. Returns how many moved.
    pub async fn resolve_dependencies(
        &self,
        failed: JobStatus,
        runnable: JobStatus,
        now: i64,
    ) -> Result<u64, StoreError> {
        let emission = self.emission();
        let returning = emission.returning();
        const DEPENDENCY_OF_THIS_JOB: &str = "FROM job_dependencies d \
             JOIN jobs p ON p.job_id = d.depends_on \
             WHERE d.job_id IN (jobs.job_id, jobs.array_parent)";
        let mut transaction = self.begin_fenced().await?;
        // A SEQUENTIAL array breaks at its first failed child: every later child fails in this
        // one statement, each naming its predecessor, instead of one link per pass (which made
        // a long chain quadratic). A child is in a SEQUENTIAL chain when it depends on the child
        // before it.
        let broken_chain = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, stopped_at = $2, updated_at = $2, status_reason = \
             'Dependency ' || array_parent || ':' || CAST(array_index - 1 AS TEXT) || ' failed' \
             WHERE status = 'PENDING' AND array_parent IS NOT NULL \
             AND EXISTS (SELECT 1 FROM job_dependencies d WHERE d.job_id = jobs.job_id \
             AND d.depends_on = jobs.array_parent || ':' || CAST(jobs.array_index - 1 AS TEXT)) \
             AND EXISTS (SELECT 1 FROM jobs s WHERE s.array_parent = jobs.array_parent \
             AND s.status = 'FAILED' AND s.array_index < jobs.array_index) {returning}"
        ))
        .bind(failed.as_str())
        .bind(now)
        .fetch_all(&mut *transaction)
        .await?;
        let broken_count = emit_moved_rows(emission, &mut transaction, &broken_chain, now).await?;
        let failed_count = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, stopped_at = $2, updated_at = $2, status_reason = \
             'Dependency ' || (SELECT d.depends_on {DEPENDENCY_OF_THIS_JOB} \
             AND p.status = 'FAILED' LIMIT 1) || ' failed' \
             WHERE status = 'PENDING' AND EXISTS (SELECT 1 {DEPENDENCY_OF_THIS_JOB} \
             AND p.status = 'FAILED') {returning}"
        ))
        .bind(failed.as_str())
        .bind(now)
        .fetch_all(&mut *transaction)
        .await?;
        let failed_count = emit_moved_rows(emission, &mut transaction, &failed_count, now).await?;
        let runnable_count = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, updated_at = $2 WHERE status = 'PENDING' \
             AND array_size IS NULL \
             AND NOT EXISTS (SELECT 1 {DEPENDENCY_OF_THIS_JOB} AND p.status <> 'SUCCEEDED') \
             {returning}"
        ))
        .bind(runnable.as_str())
        .bind(now)
        .fetch_all(&mut *transaction)
        .await?;
        let runnable_count =
            emit_moved_rows(emission, &mut transaction, &runnable_count, now).await?;
        transaction.commit().await?;
        Ok(broken_count + failed_count + runnable_count)
    }

    /// PENDING array parents all of whose children have finished, with how many children failed
    /// and any cancel or terminate reason given to the parent.
    pub async fn finished_arrays(&self) -> Result<Vec<FinishedArray>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT p.job_id, p.array_size, p.stop_requested, \
             (SELECT COUNT(*) FROM jobs c WHERE c.array_parent = p.job_id AND c.status = 'FAILED') \
             FROM jobs p WHERE p.status = 'PENDING' AND p.array_size IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.array_parent = p.job_id \
             AND c.status IN {UNFINISHED})"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FinishedArray {
                    job_id: JobId(row.try_get(0)?),
                    size: row.try_get::<i64, _>(1)? as u32,
                    stop_reason: row.try_get(2)?,
                    n_failed: row.try_get::<i64, _>(3)? as u32,
                })
            })
            .collect()
    }

    /// Cancels an array job: moves its children that are in each `from` to `to` (compare-and-set
    /// per status), and keeps `reason` on the parent to end with once its children have. Returns
    /// how many children moved.
    pub async fn cancel_array_children(
        &self,
        parent: &JobId,
        moves: &[(JobStatus, JobStatus)],
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let emission = self.emission();
        let returning = emission.returning();
        let mut transaction = self.begin_fenced().await?;
        sqlx::query(
            "UPDATE jobs SET stop_requested = $2, updated_at = $3 \
             WHERE job_id = $1 AND status IN ('SUBMITTED', 'PENDING')",
        )
        .bind(&parent.0)
        .bind(reason)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        let mut changed = 0;
        for (from, to) in moves {
            let rows = sqlx::query(&format!(
                "UPDATE jobs SET status = $3, status_reason = $4, stopped_at = $5, updated_at = $5 \
                 WHERE array_parent = $1 AND status = $2 {returning}"
            ))
            .bind(&parent.0)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(reason)
            .bind(now)
            .fetch_all(&mut *transaction)
            .await?;
            changed += emit_moved_rows(emission, &mut transaction, &rows, now).await?;
        }
        transaction.commit().await?;
        Ok(changed)
    }

    /// Records a terminate request on every STARTING or RUNNING child of an array job; returns
    /// how many.
    pub async fn request_stop_of_array_children(
        &self,
        parent: &JobId,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let changed = sqlx::query(
            "UPDATE jobs SET stop_requested = $2 \
             WHERE array_parent = $1 AND status IN ('STARTING', 'RUNNING')",
        )
        .bind(&parent.0)
        .bind(reason)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(changed)
    }

    /// Cancels (`from` RUNNABLE `to` what the state machine says) the jobs of a queue that became
    /// RUNNABLE at or before `cutoff` and whose backoff, if any, ended by then; returns how many.
    pub async fn cancel_runnable_since(
        &self,
        queue: &QueueName,
        cutoff: i64,
        to: JobStatus,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let emission = self.emission();
        let returning = emission.returning();
        let mut transaction = self.begin_fenced().await?;
        let rows = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, status_reason = $2, stopped_at = $3, updated_at = $3 \
             WHERE status = 'RUNNABLE' AND job_queue = $4 AND updated_at <= $5 \
             AND (runnable_after IS NULL OR runnable_after <= $5) {returning}"
        ))
        .bind(to.as_str())
        .bind(reason)
        .bind(now)
        .bind(queue.as_str())
        .bind(cutoff)
        .fetch_all(&mut *transaction)
        .await?;
        let changed = emit_moved_rows(emission, &mut transaction, &rows, now).await?;
        transaction.commit().await?;
        Ok(changed)
    }

    /// The oldest RUNNABLE jobs of a queue that may be placed at `now`, in submission order.
    pub async fn runnable_jobs(
        &self,
        queue: &QueueName,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'RUNNABLE' AND job_queue = $1 \
             AND (runnable_after IS NULL OR runnable_after <= $3) ORDER BY seq LIMIT $2"
        ))
        .bind(queue.as_str())
        .bind(i64::from(limit))
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The shares with RUNNABLE jobs in a queue; `None` for jobs submitted without one (before
    /// the queue had a fair-share policy).
    pub async fn runnable_shares(
        &self,
        queue: &QueueName,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT share_identifier FROM jobs WHERE status = 'RUNNABLE' \
             AND job_queue = $1",
        )
        .bind(queue.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// The RUNNABLE jobs of one share of a queue that may be placed at `now`: highest
    /// `schedulingPriority` first, then in submission order.
    pub async fn runnable_jobs_of_share(
        &self,
        queue: &QueueName,
        share: Option<&str>,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let share_condition = match share {
            Some(_) => "share_identifier = $4",
            None => "share_identifier IS NULL",
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'RUNNABLE' AND job_queue = $1 \
             AND (runnable_after IS NULL OR runnable_after <= $3) AND {share_condition} \
             ORDER BY scheduling_priority DESC, seq LIMIT $2"
        );
        let mut query = sqlx::query(&sql)
            .bind(queue.as_str())
            .bind(i64::from(limit))
            .bind(now);
        if let Some(share) = share {
            query = query.bind(share);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every job holding capacity: STARTING or RUNNING.
    pub async fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('STARTING', 'RUNNING') ORDER BY seq"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// How many jobs are in `status`.
    pub async fn count_jobs(&self, status: JobStatus) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.read)
            .await?;
        Ok(count as u64)
    }

    /// Terminate requests of STARTING and RUNNING jobs, with their reasons.
    pub async fn stop_requests(&self) -> Result<Vec<(JobId, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_id, stop_requested FROM jobs \
             WHERE status IN ('STARTING', 'RUNNING') AND stop_requested IS NOT NULL",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    JobId(row.try_get("job_id")?),
                    row.try_get("stop_requested")?,
                ))
            })
            .collect()
    }

    /// How many jobs are in each status (statuses without jobs are left out).
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
            .collect()
    }

    /// Records a terminate request for a STARTING or RUNNING job; false if it is in neither state.
    pub async fn request_stop(&self, job_id: &JobId, reason: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE jobs SET stop_requested = $2 \
             WHERE job_id = $1 AND status IN ('STARTING', 'RUNNING')",
        )
        .bind(&job_id.0)
        .bind(reason)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Says why a STARTING job's attempt is not running yet (a pod that cannot be scheduled);
    /// false if the job is no longer STARTING at that attempt.
    pub async fn set_starting_reason(
        &self,
        job_id: &JobId,
        attempt_number: u32,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_fenced().await?;
        let changed = sqlx::query(
            "UPDATE jobs SET status_reason = $1, updated_at = $2 \
             WHERE job_id = $3 AND status = 'STARTING' AND attempt_number = $4",
        )
        .bind(reason)
        .bind(now)
        .bind(&job_id.0)
        .bind(i64::from(attempt_number))
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(changed == 1)
    }
}

/// Writes an array job's children (`PARENT:0` … `PARENT:size-1`, SUBMITTED, in index order) and
/// their N_TO_N and SEQUENTIAL dependency rows, each with one statement that generates the rows in
/// the database: 100,000 children cost one round trip, not 100,000 bound rows.
async fn insert_array_children(
    transaction: &mut Transaction<'static, Any>,
    parent: &Job,
    size: u32,
) -> Result<(), StoreError> {
    let resources = &parent.spec.container.resources;
    sqlx::query(
        "WITH RECURSIVE array_index(i) AS (SELECT 0 UNION ALL \
         SELECT i + 1 FROM array_index WHERE i + 1 < $1) \
         INSERT INTO jobs (job_id, job_name, job_queue, status, spec, vcpu_millis, memory_mib, \
         gpus, created_at, updated_at, array_parent, array_index, share_identifier, \
         scheduling_priority) \
         SELECT $2 || ':' || CAST(i AS TEXT), $3, $4, 'SUBMITTED', '', $5, $6, $7, $8, $8, $2, i, \
         $9, $10 FROM array_index",
    )
    .bind(i64::from(size))
    .bind(parent.job_id.0.clone())
    .bind(parent.job_name.to_string())
    .bind(parent.queue.to_string())
    .bind(resources.vcpu_millis as i64)
    .bind(resources.memory_mib as i64)
    .bind(resources.gpus as i64)
    .bind(parent.created_at)
    .bind(parent.spec.share_identifier.clone())
    .bind(parent.spec.scheduling_priority)
    .execute(&mut **transaction)
    .await?;
    for dependency in &parent.spec.depends_on {
        // Child i depends on child (i - offset) of `other`, for i from `first`.
        let (other, first, offset) = match (dependency.kind, &dependency.job_id) {
            (DependencyKind::NToN, Some(other)) => (other, 0, 0),
            (DependencyKind::Sequential, _) => (&parent.job_id, 1, 1),
            (DependencyKind::Whole, _) | (DependencyKind::NToN, None) => continue,
        };
        sqlx::query(
            "WITH RECURSIVE array_index(i) AS (SELECT $1 UNION ALL \
             SELECT i + 1 FROM array_index WHERE i + 1 < $2) \
             INSERT INTO job_dependencies (job_id, depends_on) \
             SELECT $3 || ':' || CAST(i AS TEXT), $4 || ':' || CAST(i - $5 AS TEXT) \
             FROM array_index",
        )
        .bind(first)
        .bind(i64::from(size))
        .bind(parent.job_id.0.clone())
        .bind(other.0.clone())
        .bind(offset)
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}

fn job_from_row(row: &AnyRow) -> Result<Job, StoreError> {
    let job_id: String = row.try_get("job_id")?;
    let corrupt = |reason: String| StoreError::corrupt(format!("job {job_id}"), reason);
    let status: String = row.try_get("status")?;
    let status =
        JobStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status}")))?;
    let spec: String = row.try_get("spec")?;
    let spec: JobSpec = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
    let current_attempt = match (
        row.try_get::<Option<i64>, _>("attempt_number")?,
        row.try_get::<Option<String>, _>("attempt_environment")?,
        row.try_get::<Option<String>, _>("attempt_handle")?,
    ) {
        (Some(number), Some(environment), Some(handle)) => Some(CurrentAttempt {
            number: number as u32,
            compute_environment: EnvironmentName::try_from(environment).map_err(corrupt)?,
            executor_handle: handle,
            placed_at: row
                .try_get::<Option<i64>, _>("attempt_placed_at")?
                .unwrap_or(0),
            started_at: row.try_get("attempt_started_at")?,
        }),
        _ => None,
    };
    Ok(Job {
        job_id: JobId(job_id.clone()),
        job_name: JobName::try_from(row.try_get::<String, _>("job_name")?).map_err(corrupt)?,
        queue: QueueName::try_from(row.try_get::<String, _>("job_queue")?).map_err(corrupt)?,
        status,
        status_reason: row.try_get("status_reason")?,
        spec,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        stopped_at: row.try_get("stopped_at")?,
        n_attempts: row.try_get::<i64, _>("n_attempts")? as u32,
        attempts: Vec::new(),
        current_attempt,
        stop_requested: row.try_get("stop_requested")?,
        idempotency_key: row.try_get("idempotency_key")?,
        runnable_after: row.try_get("runnable_after")?,
        array: match (
            row.try_get::<Option<i64>, _>("array_size")?,
            row.try_get::<Option<String>, _>("array_parent")?,
            row.try_get::<Option<i64>, _>("array_index")?,
        ) {
            (Some(size), None, None) => ArrayRole::Parent { size: size as u32 },
            (None, Some(parent), Some(index)) => ArrayRole::Child {
                parent: JobId(parent),
                index: index as u32,
            },
            (None, None, None) => ArrayRole::Single,
            other => return Err(corrupt(format!("inconsistent array columns {other:?}"))),
        },
    })
}

fn attempt_from_row(row: &AnyRow) -> Result<Attempt, StoreError> {
    let environment: String = row.try_get("compute_environment")?;
    Ok(Attempt {
        number: row.try_get::<i64, _>("attempt_number")? as u32,
        compute_environment: EnvironmentName::try_from(environment)
            .map_err(|e| StoreError::corrupt("attempt", e))?,
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")?
            .map(|c| c as i32),
        status_reason: row.try_get("status_reason")?,
        started_at: row.try_get("started_at")?,
        stopped_at: row.try_get("stopped_at")?,
    })
}

/// `emit_moved` for statements whose transitions carry no exit code.
async fn emit_moved_rows(
    emission: Emission,
    transaction: &mut Transaction<'static, Any>,
    rows: &[AnyRow],
    now: i64,
) -> Result<u64, StoreError> {
    emit_moved(emission, transaction, rows, |_| None, now).await
}
