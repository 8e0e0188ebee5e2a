//! Jobs and their attempts: group-committed inserts, compare-and-set transitions, and the queries the
//! dispatcher and the API need, each served by an index (see the migrations).

mod capped_arrays;
mod moves;
mod reads;

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::events::{emit_admitted_at_submit, emit_moved, Emission};
use super::sql::{indexed_by, placeholders, ROWS_PER_STATEMENT};
pub use super::transitions::{Effect, Transition};
use super::{Dialect, Store, StoreError};
use crate::core::model::{
    ArrayRole, Attempt, CurrentAttempt, DependencyKind, EnvironmentName, Job, JobId, JobName,
    JobSpec, JobStatus, QueueName, Resources,
};
use crate::core::tags::TagRequirement;

/// An array child stores no spec; it runs its parent's.
const JOB_COLUMNS: &str = "seq, job_id, job_name, job_queue, status, status_reason, \
    CASE WHEN array_parent IS NULL THEN spec \
    ELSE (SELECT p.spec FROM jobs p WHERE p.job_id = jobs.array_parent) END AS spec, \
    created_at, started_at, stopped_at, n_attempts, attempt_number, attempt_environment, \
    attempt_handle, attempt_placed_at, attempt_started_at, stop_requested, idempotency_key, \
    runnable_after, array_size, array_parent, array_index, suspended, scheduling_priority, \
    disruptions, vcpu_millis, memory_mib, attempt_gpu_ids";

/// The statuses in which a job has not finished.
const UNFINISHED: &str = "('SUBMITTED', 'PENDING', 'RUNNABLE', 'STARTING', 'RUNNING')";

/// A job to insert, in status SUBMITTED.
pub type NewJob = Job;

/// An array job whose children have all finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedArray {
    pub job_id: JobId,
    pub size: u32,
    pub n_failed: u32,
    /// The reason given when the array was cancelled or terminated.
    pub stop_reason: Option<String>,
    /// When it succeeds although children failed (from the parent's spec).
    pub policy: crate::core::model::ArraySuccessPolicy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only the children of this array job; without it, children are left out, as AWS Batch's
    /// ListJobs does.
    pub array_parent: Option<JobId>,
    pub queue: Option<QueueName>,
    pub status: Option<JobStatus>,
    /// Only jobs whose name matches (AWS Batch's `JOB_NAME` filter).
    pub name: Option<JobNameFilter>,
    /// Only jobs whose tags meet every requirement (kubectl's `-l`); top-level jobs only.
    pub tags: crate::core::tags::TagSelector,
    /// Only jobs submitted before the one with this sequence number (the page cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

/// AWS Batch's `JOB_NAME` list filter: a name, or a prefix when it ends with `*`; ASCII letters
/// match in either case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobNameFilter {
    Exact(String),
    Prefix(String),
}

impl JobNameFilter {
    /// Reads `name` or `prefix*` (1 to 128 characters, `*` only at the end).
    pub fn parse(text: &str) -> Result<JobNameFilter, String> {
        let (stem, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if stem.is_empty() || stem.chars().count() > 128 || stem.contains('*') {
            return Err(format!(
                "{text:?} is not a job name filter: give a name, or a prefix ending in * (1 to 128 characters, * only at the end)"
            ));
        }
        let stem = stem.to_ascii_lowercase();
        Ok(if prefix {
            JobNameFilter::Prefix(stem)
        } else {
            JobNameFilter::Exact(stem)
        })
    }

    /// The condition on `job_name` with its one placeholder.
    fn condition(&self, placeholder: &str) -> String {
        match self {
            JobNameFilter::Exact(_) => format!("LOWER(job_name) = {placeholder}"),
            // The length is a number this code counted, never text from the request.
            JobNameFilter::Prefix(stem) => format!(
                "LOWER(SUBSTR(job_name, 1, {})) = {placeholder}",
                stem.chars().count()
            ),
        }
    }

    fn value(&self) -> &str {
        match self {
            JobNameFilter::Exact(stem) | JobNameFilter::Prefix(stem) => stem,
        }
    }
}

/// How many sequence numbers (jobs submitted, array children included) one page filtered by
/// name looks through below its cursor. A page finding fewer matches than asked gives a cursor
/// to the rest, so a request costs at most this many rows whatever the history holds.
pub const NAME_SCAN_WINDOW: i64 = 100_000;

/// The most bytes of job specs one page of `jobs` reads: a page holds fewer jobs than asked
/// when their specs are large (at least one), so a list costs bounded memory whatever was
/// submitted.
pub const MAX_PAGE_SPEC_BYTES: i64 = 4 * 1024 * 1024;

/// Binds the values of `jobs`' conditions for `filter`, in their placeholders' order.
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    filter: &'q JobFilter,
    dialect: Dialect,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut query = query.bind(filter.before.unwrap_or(i64::MAX));
    if let Some(parent) = &filter.array_parent {
        query = query.bind(parent.0.as_str());
    }
    if let Some(queue) = &filter.queue {
        query = query.bind(queue.as_str());
    }
    if let Some(name) = &filter.name {
        query = query.bind(name.value());
    }
    for requirement in &filter.tags.0 {
        query = query.bind(tag_operand(dialect, requirement.key()));
        match requirement {
            TagRequirement::Equals { value, .. } | TagRequirement::NotEquals { value, .. } => {
                query = query.bind(value.as_str());
            }
            TagRequirement::Exists { .. } | TagRequirement::Absent { .. } => {}
        }
    }
    query
}

/// What a tag requirement's first placeholder holds: SQLite's JSON path to the tag, or the key
/// itself for Postgres' `->>` (the selector's keys hold no quote or backslash).
fn tag_operand(dialect: Dialect, key: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("$.tags.\"{key}\""),
        Dialect::Postgres => key.to_string(),
    }
}

/// The condition of one tag requirement, on the job's spec, with its placeholders.
fn tag_condition(
    dialect: Dialect,
    requirement: &TagRequirement,
    next_parameter: &mut impl FnMut() -> String,
) -> String {
    let tag = match dialect {
        Dialect::Sqlite => format!("json_extract(spec, {})", next_parameter()),
        Dialect::Postgres => format!("((spec::jsonb) -> 'tags' ->> {})", next_parameter()),
    };
    let null_safe_differs = match dialect {
        Dialect::Sqlite => "IS NOT",
        Dialect::Postgres => "IS DISTINCT FROM",
    };
    match requirement {
        TagRequirement::Equals { .. } => format!("{tag} = {}", next_parameter()),
        TagRequirement::NotEquals { .. } => {
            format!("{tag} {null_safe_differs} {}", next_parameter())
        }
        TagRequirement::Exists { .. } => format!("{tag} IS NOT NULL"),
        TagRequirement::Absent { .. } => format!("{tag} IS NULL"),
    }
}

/// How a page of `jobs` is read: the index SQLite is to use, if the query names one, then the
/// conditions and the order.
struct ListingPlan {
    index: Option<&'static str>,
    conditions: Vec<String>,
    order: String,
}

/// Whether the top-level listing indexes (`jobs_top_level_by_status`,
/// `jobs_top_level_by_queue_status`) hold jobs in `status`. Since migration 0034 they leave out
/// the statuses a job holds an attempt in, so that placing a job writes no entry into them; lists
/// of those read `jobs_by_status`, where a capacity bounds how many there are.
pub(in crate::store) fn in_top_level_indexes(status: JobStatus) -> bool {
    match status {
        JobStatus::Starting | JobStatus::Running => false,
        JobStatus::Submitted
        | JobStatus::Pending
        | JobStatus::Runnable
        | JobStatus::Succeeded
        | JobStatus::Failed => true,
    }
}

/// The conditions and order of a page of `jobs` for `filter`, spelled out per filter so that each
/// query has its index, with only the placeholders it uses (Postgres refuses untyped unused ones):
/// `$1` is the seq to start before, then the array parent and the queue when given. The status
/// is written as a literal: a partial index serves a query only where the planner can prove the
/// index's condition from the query's, which neither SQLite nor Postgres's generic plans can do
/// from a placeholder.
///
/// On Postgres a top-level list filtered by queue or status is written as a row comparison in
/// the order of its index, `(job_queue, status, seq) < ($q, 'S', $1)`: written as `status = 'S' …
/// ORDER BY seq DESC`, the planner, taking RUNNABLE jobs to be spread through the table, walked
/// a million finished top-level jobs backwards by seq to find none (480 ms). SQLite picks these
/// indexes by itself, except for the statuses they leave out (`in_top_level_indexes`), where it
/// is told to read `jobs_by_status`.
///
/// On Postgres a top-level list without a status is the newest of one such range per status
/// (`merged_by_status`): the table keeps no index of top-level jobs by seq alone, or by queue
/// and seq, because every status change writes an entry into each index of `jobs` (a move is
/// never a HOT update), and those two cost the dispatch about a sixth (BENCHMARKS.md).
///
/// `floor` bounds a list filtered by name or tag to the sequence numbers at or above it.
fn listing_plan(dialect: Dialect, filter: &JobFilter, floor: Option<i64>) -> ListingPlan {
    let mut n_parameters = 1;
    let mut next_parameter = || {
        n_parameters += 1;
        format!("${n_parameters}")
    };
    let parent = filter.array_parent.as_ref().map(|_| next_parameter());
    // The queue's key; the status is written as a literal (`status_is`).
    let mut keys = Vec::new();
    if filter.queue.is_some() {
        keys.push(("job_queue", next_parameter()));
    }
    let status_condition = filter.status.map(status_is);
    // Not keys of any index: checked on the rows the keys lead to.
    let mut name: Vec<String> = filter
        .name
        .as_ref()
        .map(|name| name.condition(&next_parameter()))
        .into_iter()
        .collect();
    name.extend(
        filter
            .tags
            .0
            .iter()
            .map(|requirement| tag_condition(dialect, requirement, &mut next_parameter)),
    );
    // A number this code computed, never text from the request.
    name.extend(floor.map(|floor| format!("seq >= {floor}")));
    if let Some(parent) = parent {
        let mut conditions = vec!["seq < $1".to_string(), format!("array_parent = {parent}")];
        conditions.extend(keys.iter().map(|(column, p)| format!("{column} = {p}")));
        conditions.extend(status_condition);
        conditions.extend(name);
        return ListingPlan {
            index: None,
            conditions,
            order: "seq DESC".into(),
        };
    }
    let (index, mut conditions, order) = match (dialect, filter.status) {
        (Dialect::Postgres, None) => (
            None,
            vec![
                "seq < $1".to_string(),
                "array_parent IS NULL".into(),
                merged_by_status(&keys, &name, bound_parameters(filter) + 1),
            ],
            "seq DESC".into(),
        ),
        (Dialect::Postgres, Some(status)) => {
            let (conditions, order) = status_range(&keys, status);
            (None, conditions, order)
        }
        (Dialect::Sqlite, status) => {
            let mut conditions = vec!["seq < $1".to_string(), "array_parent IS NULL".into()];
            conditions.extend(keys.iter().map(|(column, p)| format!("{column} = {p}")));
            conditions.extend(status_condition);
            let index = status
                .filter(|status| !in_top_level_indexes(*status))
                .map(|_| "jobs_by_status");
            (index, conditions, "seq DESC".into())
        }
    };
    conditions.extend(name);
    ListingPlan {
        index,
        conditions,
        order,
    }
}

/// The conditions and order that read the top-level jobs with the values `keys` give their
/// columns, below seq `$1`, as one range of the index on (those columns, seq), newest first.
fn index_range(keys: &[(&str, String)]) -> (Vec<String>, String) {
    let columns: Vec<&str> = keys.iter().map(|(column, _)| *column).collect();
    let values: Vec<&str> = keys.iter().map(|(_, p)| p.as_str()).collect();
    let order: Vec<String> = columns.iter().map(|c| format!("{c} DESC")).collect();
    (
        vec![
            "array_parent IS NULL".into(),
            format!(
                "({}, seq) < ({}, $1)",
                columns.join(", "),
                values.join(", ")
            ),
            format!("({}) >= ({})", columns.join(", "), values.join(", ")),
        ],
        format!("{}, seq DESC", order.join(", ")),
    )
}

/// `status = 'S'`: a status as a literal, from which a planner can prove a partial index's
/// condition (it cannot from a placeholder).
pub(in crate::store) fn status_is(status: JobStatus) -> String {
    format!("status = {}", moves::sql_literal(status.as_str()))
}

/// On Postgres, the conditions and order that read the top-level jobs in `status` with the
/// values `keys` give their columns (the queue's, if any), below seq `$1`, newest first: a
/// range of the top-level index by (queue,) status and seq where that index holds the status,
/// with the status's equality spelled out so the planner can prove the index's condition; else
/// the status's range of `jobs_by_status`, the queue checked on its rows.
fn status_range(keys: &[(&str, String)], status: JobStatus) -> (Vec<String>, String) {
    match in_top_level_indexes(status) {
        true => {
            let mut keys = keys.to_vec();
            keys.push(("status", moves::sql_literal(status.as_str())));
            let (mut conditions, order) = index_range(&keys);
            conditions.push(status_is(status));
            (conditions, order)
        }
        false => {
            let mut conditions = vec![
                status_is(status),
                "seq < $1".to_string(),
                "array_parent IS NULL".into(),
            ];
            conditions.extend(keys.iter().map(|(column, p)| format!("{column} = {p}")));
            (conditions, "seq DESC".into())
        }
    }
}

/// `seq IN` the newest top-level jobs of every status, each status's read as a range of the
/// index that holds it (`status_range`), with the unindexed conditions `unindexed` inside each
/// range and at most `$limit` of each.
fn merged_by_status(keys: &[(&str, String)], unindexed: &[String], limit: usize) -> String {
    let ranges: Vec<String> = JobStatus::ALL
        .iter()
        .map(|status| {
            let (mut range, order) = status_range(keys, *status);
            range.extend(unindexed.iter().cloned());
            format!(
                "(SELECT seq FROM jobs WHERE {} ORDER BY {order} LIMIT ${limit})",
                range.join(" AND ")
            )
        })
        .collect();
    format!("seq IN ({})", ranges.join(" UNION ALL "))
}

/// How many placeholders the conditions of `jobs` for `filter` use (`seq < $1`, then one each
/// for the array parent and the queue when given, then the name's and the tags').
fn bound_parameters(filter: &JobFilter) -> usize {
    1 + usize::from(filter.array_parent.is_some())
        + usize::from(filter.queue.is_some())
        + usize::from(filter.name.is_some())
        + filter
            .tags
            .0
            .iter()
            .map(|requirement| match requirement {
                TagRequirement::Equals { .. } | TagRequirement::NotEquals { .. } => 2,
                TagRequirement::Exists { .. } | TagRequirement::Absent { .. } => 1,
            })
            .sum::<usize>()
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
        // Plain jobs that fit one statement need no transaction: the statement is atomic by
        // itself, and the two round trips of BEGIN and COMMIT were most of a submit's write.
        // Jobs stored already admitted need their events in the same transaction, when events
        // are wanted.
        let emission = self.emission();
        let plain = jobs.len() <= ROWS_PER_STATEMENT
            && jobs
                .iter()
                .all(|job| job.spec.array_size.is_none() && job.spec.depends_on.is_empty())
            && !(emission.wanted && jobs.iter().any(|job| job.status != JobStatus::Submitted));
        let inserted = if plain {
            self.insert_rows(&self.write, jobs).await?
        } else {
            let mut transaction = self.write.begin().await?;
            let inserted = self.insert_jobs_in(&mut transaction, jobs).await?;
            transaction.commit().await?;
            inserted
        };
        let mut stored = Vec::with_capacity(jobs.len());
        for job in jobs {
            if inserted.contains(&job.job_id.0) {
                stored.push(job.clone());
            } else {
                // The key's holder is committed: a conflict is only ever with a committed row.
                let row = sqlx::query(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"
                ))
                .bind(job.idempotency_key.as_deref())
                .fetch_one(&self.write)
                .await?;
                stored.push(job_from_row(&row)?);
            }
        }
        Ok(stored)
    }

    /// One `INSERT` of `jobs` (at most `ROWS_PER_STATEMENT`); the ids of those inserted (the
    /// others' idempotency keys were taken).
    async fn insert_rows<'e, E>(
        &self,
        executor: E,
        jobs: &[NewJob],
    ) -> Result<HashSet<String>, StoreError>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        let sql = insert_sql(self.dialect, jobs.len());
        bind_jobs(sqlx::query(&sql), jobs)?
            .fetch_all(executor)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Runs `record` (an `INSERT … ON CONFLICT DO NOTHING` of the row that makes an action happen
    /// once) and inserts `job` in the same transaction, while the resource that acts (`owner`:
    /// its table and name, a schedule or a rule) still exists. False, and no job, if the row was
    /// there or the owner is gone.
    ///
    /// The owner's row is written first, so it is locked until the commit: a delete of the owner
    /// waits for an action in flight, and an action after the delete finds no owner. A deleted
    /// schedule or rule acts no more, and never half.
    pub(super) async fn record_once_with_job<'q>(
        &self,
        owner: (&str, &str),
        record: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        job: &Job,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_fenced().await?;
        let (table, name) = owner;
        let owned = sqlx::query(&format!(
            "UPDATE {table} SET updated_at = updated_at WHERE name = $1"
        ))
        .bind(name)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if owned == 0 {
            transaction.rollback().await?;
            return Ok(false);
        }
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

    /// The writes of `insert_jobs` (rows, array children, dependency rows) inside a transaction
    /// the caller commits; the ids of the jobs inserted.
    pub(super) async fn insert_jobs_in(
        &self,
        transaction: &mut Transaction<'static, Any>,
        jobs: &[NewJob],
    ) -> Result<HashSet<String>, StoreError> {
        let mut inserted = HashSet::new();
        for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
            inserted.extend(self.insert_rows(&mut **transaction, chunk).await?);
        }
        let new_jobs: Vec<&Job> = jobs
            .iter()
            .filter(|job| inserted.contains(&job.job_id.0))
            .collect();
        let now = new_jobs.first().map_or(0, |job| job.created_at);
        emit_admitted_at_submit(self.emission(), transaction, &new_jobs, now).await?;
        for job in &new_jobs {
            if let Some(size) = job.spec.array_size {
                insert_array_children(transaction, job, size).await?;
            }
        }
        // Whole-job dependencies are rows of the job itself (an array's children wait on their
        // parent's rows too); N_TO_N and SEQUENTIAL ones are rows of the children.
        let dependencies: Vec<(&str, &str, &str)> = new_jobs
            .iter()
            .flat_map(|job| {
                job.spec.depends_on.iter().filter_map(|dependency| {
                    match (dependency.kind, &dependency.job_id) {
                        (DependencyKind::Whole, Some(parent)) => Some((
                            job.job_id.0.as_str(),
                            parent.0.as_str(),
                            dependency.condition.as_str(),
                        )),
                        (DependencyKind::Whole, None)
                        | (DependencyKind::NToN | DependencyKind::Sequential, _) => None,
                    }
                })
            })
            .collect();
        for chunk in dependencies.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO job_dependencies (job_id, depends_on, condition) VALUES {}",
                placeholders(self.dialect, chunk.len(), 3, 1)
            );
            let mut query = sqlx::query(&sql);
            for (job_id, parent, condition) in chunk {
                query = query
                    .bind(job_id.to_string())
                    .bind(parent.to_string())
                    .bind(condition.to_string());
            }
            query.execute(&mut **transaction).await?;
        }
        Ok(inserted)
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
         scheduling_priority, chain_depth, array_max_concurrency) \
         SELECT $2 || ':' || CAST(i AS TEXT), $3, $4, 'SUBMITTED', '', $5, $6, $7, $8, $8, $2, i, \
         $9, $10, $11, $12 FROM array_index",
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
    .bind(i64::from(parent.spec.chain_depth))
    .bind(parent.spec.array_max_concurrency.map(i64::from))
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
             INSERT INTO job_dependencies (job_id, depends_on, condition) \
             SELECT $3 || ':' || CAST(i AS TEXT), $4 || ':' || CAST(i - $5 AS TEXT), $6 \
             FROM array_index",
        )
        .bind(first)
        .bind(i64::from(size))
        .bind(parent.job_id.0.clone())
        .bind(other.0.clone())
        .bind(offset)
        .bind(dependency.condition.as_str())
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}

/// `INSERT` of `rows` jobs (bound by `bind_jobs`), returning the ids of those inserted.
fn insert_sql(dialect: super::Dialect, rows: usize) -> String {
    const COLUMNS: usize = 16;
    format!(
        "INSERT INTO jobs (job_id, job_name, job_queue, status, spec, vcpu_millis, \
         memory_mib, gpus, created_at, idempotency_key, updated_at, array_size, \
         share_identifier, scheduling_priority, chain_depth, array_max_concurrency) VALUES {} \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING job_id",
        placeholders(dialect, rows, COLUMNS, 1)
    )
}

fn bind_jobs<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    jobs: &[NewJob],
) -> Result<sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>, StoreError> {
    for job in jobs {
        let spec =
            serde_json::to_string(&job.spec).map_err(|e| StoreError::corrupt("job spec", e))?;
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
            .bind(job.spec.scheduling_priority)
            .bind(i64::from(job.spec.chain_depth))
            .bind(job.spec.array_max_concurrency.map(i64::from));
    }
    Ok(query)
}

fn job_from_row(row: &AnyRow) -> Result<Job, StoreError> {
    let job_id: String = row.try_get("job_id")?;
    let corrupt = |reason: String| StoreError::corrupt(format!("job {job_id}"), reason);
    let status: String = row.try_get("status")?;
    let status =
        JobStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status}")))?;
    let spec: String = row.try_get("spec")?;
    let mut spec: JobSpec = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
    // The column is the truth: `batchctl update job` changes it (and a child shares its
    // parent's spec).
    spec.scheduling_priority = row.try_get("scheduling_priority")?;
    // So are its requirements: a retry's may have grown (`ResourceAdjustments`).
    spec.container.resources.vcpu_millis = row.try_get::<i64, _>("vcpu_millis")? as u64;
    spec.container.resources.memory_mib = row.try_get::<i64, _>("memory_mib")? as u64;
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
            gpu_ids: row
                .try_get::<Option<String>, _>("attempt_gpu_ids")?
                .filter(|ids| !ids.is_empty())
                .map(|ids| ids.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
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
        disruptions: row.try_get::<i64, _>("disruptions")? as u32,
        attempts: Vec::new(),
        current_attempt,
        stop_requested: row.try_get("stop_requested")?,
        idempotency_key: row.try_get("idempotency_key")?,
        runnable_after: row.try_get("runnable_after")?,
        suspended: row.try_get::<i64, _>("suspended")? != 0,
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
        resources: match (
            row.try_get::<Option<i64>, _>("vcpu_millis")?,
            row.try_get::<Option<i64>, _>("memory_mib")?,
            row.try_get::<Option<i64>, _>("gpus")?,
        ) {
            (Some(vcpu_millis), Some(memory_mib), Some(gpus)) => Some(Resources {
                vcpu_millis: vcpu_millis as u64,
                memory_mib: memory_mib as u64,
                gpus: gpus as u64,
            }),
            _ => None,
        },
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
