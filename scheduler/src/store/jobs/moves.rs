//! Moving jobs in bulk (admission per queue, dependency resolution, array ends, cancels), each a
//! compare-and-set from the status core gives.

use super::*;
use crate::core::dependencies::REASON_PREFIX;
use crate::core::model::DependencyCondition;

/// The dependency rows of the job `jobs` (an array child also waits on its parent's), each
/// joined to the job it names as `p`: the body of the statements that resolve dependencies.
pub(super) const DEPENDENCY_OF_THIS_JOB: &str = "FROM job_dependencies d \
     JOIN jobs p ON p.job_id = d.depends_on \
     WHERE d.job_id IN (jobs.job_id, jobs.array_parent)";

impl Store {
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
    /// dependencies to `ready` (they have nothing to wait for), the others, array parents
    /// (which wait for their children) and the children of a capped array (which wait for a
    /// slot, `release_capped_children`), to `waiting`. Returns how many moved to each.
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
        let by_queue = indexed_by(self.dialect, "jobs_submitted_by_queue");
        let oldest = format!(
            "status = 'SUBMITTED' AND job_queue = $4 AND seq <= (SELECT MAX(seq) FROM \
             (SELECT seq FROM jobs{by_queue} WHERE status = 'SUBMITTED' AND job_queue = $4 \
             ORDER BY job_queue, seq LIMIT $3) AS oldest)"
        );
        let ready_count = sqlx::query(&format!(
            "UPDATE jobs{by_queue} SET status = $1, updated_at = $2 WHERE {oldest} AND array_size IS NULL \
             AND NOT EXISTS (SELECT 1 FROM job_dependencies d WHERE d.job_id = jobs.job_id) \
             AND (array_parent IS NULL OR NOT EXISTS \
             (SELECT 1 FROM job_dependencies d WHERE d.job_id = jobs.array_parent)) \
             AND array_max_concurrency IS NULL {returning}"
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
                "UPDATE jobs{by_queue} SET status = $1, updated_at = $2 WHERE {oldest} \
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

    /// Moves PENDING jobs on, as `core::dependencies` decides: to FAILED (`failed`, with a
    /// reason naming the first dependency that can no longer be met) when a job they depend on
    /// ended in a way that breaks its condition, then to RUNNABLE (`runnable`) when every
    /// dependency's condition is met. The statements are built from core's table of conditions
    /// (`dependency_sql`). An array child also waits on what its parent depends on; an array
    /// parent never becomes RUNNABLE (see `finished_arrays`), nor does a capped array's child
    /// here (see `release_capped_children`). Both are bulk compare-and-sets from
    /// PENDING. Returns how many moved.
    pub async fn resolve_dependencies(
        &self,
        failed: JobStatus,
        runnable: JobStatus,
        now: i64,
    ) -> Result<u64, StoreError> {
        let emission = self.emission();
        let returning = emission.returning();
        let mut transaction = self.begin_fenced().await?;
        // A SEQUENTIAL array breaks at its first failed child: every later child fails in this
        // one statement, each naming its predecessor, instead of one link per pass (which made
        // a long chain quadratic). A child is in a SEQUENTIAL chain when it depends on the child
        // before it; SEQUENTIAL is always afterok, broken by a FAILED predecessor.
        let sequential = DependencyCondition::AfterOk;
        let (condition, prefix, suffix) = (
            sql_literal(sequential.as_str()),
            sql_literal(REASON_PREFIX),
            sql_literal(sequential.broken_suffix()),
        );
        let broken_chain = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, stopped_at = $2, updated_at = $2, status_reason = \
             {prefix} || array_parent || ':' || CAST(array_index - 1 AS TEXT) || {suffix} \
             WHERE status = 'PENDING' AND array_parent IS NOT NULL \
             AND EXISTS (SELECT 1 FROM job_dependencies d WHERE d.job_id = jobs.job_id \
             AND d.condition = {condition} \
             AND d.depends_on = jobs.array_parent || ':' || CAST(jobs.array_index - 1 AS TEXT)) \
             AND EXISTS (SELECT 1 FROM jobs s WHERE s.array_parent = jobs.array_parent \
             AND s.status = 'FAILED' AND s.array_index < jobs.array_index) {returning}"
        ))
        .bind(failed.as_str())
        .bind(now)
        .fetch_all(&mut *transaction)
        .await?;
        let broken_count = emit_moved_rows(emission, &mut transaction, &broken_chain, now).await?;
        let broken = dependency_sql(DependencyCondition::broken_by);
        let met = dependency_sql(DependencyCondition::met_by);
        let reason = broken_reason_sql();
        let failed_count = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, stopped_at = $2, updated_at = $2, status_reason = \
             (SELECT {reason} {DEPENDENCY_OF_THIS_JOB} AND {broken} ORDER BY p.seq LIMIT 1) \
             WHERE status = 'PENDING' AND EXISTS (SELECT 1 {DEPENDENCY_OF_THIS_JOB} \
             AND {broken}) {returning}"
        ))
        .bind(failed.as_str())
        .bind(now)
        .fetch_all(&mut *transaction)
        .await?;
        let failed_count = emit_moved_rows(emission, &mut transaction, &failed_count, now).await?;
        let runnable_count = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, updated_at = $2 WHERE status = 'PENDING' \
             AND array_size IS NULL AND array_max_concurrency IS NULL \
             AND NOT EXISTS (SELECT 1 {DEPENDENCY_OF_THIS_JOB} AND NOT {met}) \
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
    /// and any cancel or terminate reason given to the parent. Read from the children's counters
    /// (migration 0016), not from the children: before a vacuum, Postgres looked through the
    /// index entries a 100,000-child array's admission left behind, once taking a second per
    /// dispatcher pass.
    pub async fn finished_arrays(&self) -> Result<Vec<FinishedArray>, StoreError> {
        let (failed, unfinished) = match self.dialect {
            Dialect::Sqlite => (
                "SELECT c.n FROM array_counts c WHERE c.array_parent = p.job_id \
                 AND c.status = 'FAILED'",
                format!(
                    "SELECT 1 FROM array_counts c WHERE c.array_parent = p.job_id \
                     AND c.status IN {UNFINISHED} AND c.n > 0"
                ),
            ),
            Dialect::Postgres => (
                "SELECT SUM(c.n) FROM array_count_deltas c WHERE c.array_parent = p.job_id \
                 AND c.status = 'FAILED'",
                format!(
                    "SELECT 1 FROM array_count_deltas c WHERE c.array_parent = p.job_id \
                     AND c.status IN {UNFINISHED} GROUP BY c.status HAVING SUM(c.n) > 0"
                ),
            ),
        };
        let rows = sqlx::query(&format!(
            "SELECT p.job_id, p.array_size, p.stop_requested, \
             CAST(COALESCE(({failed}), 0) AS BIGINT), p.spec \
             FROM jobs p WHERE p.status = 'PENDING' AND p.array_size IS NOT NULL \
             AND NOT EXISTS ({unfinished})"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let job_id = JobId(row.try_get(0)?);
                let spec: String = row.try_get(4)?;
                let spec: JobSpec = serde_json::from_str(&spec)
                    .map_err(|error| StoreError::corrupt(format!("job {job_id}"), error))?;
                Ok(FinishedArray {
                    job_id,
                    size: row.try_get::<i64, _>(1)? as u32,
                    stop_reason: row.try_get(2)?,
                    n_failed: row.try_get::<i64, _>(3)? as u32,
                    policy: spec.array_success_policy,
                })
            })
            .collect()
    }

    /// How many of an array's children in the inclusive index `ranges` did not succeed (its
    /// success policy's `succeededIndexes`; at most `core::array::MAX_INDEX_RANGES` ranges).
    pub async fn failed_children_in(
        &self,
        parent: &JobId,
        ranges: &[(u32, u32)],
    ) -> Result<u32, StoreError> {
        let within: Vec<String> = (0..ranges.len())
            .map(|i| format!("array_index BETWEEN ${} AND ${}", 2 * i + 2, 2 * i + 3))
            .collect();
        let within = if within.is_empty() {
            "1 = 0".to_string()
        } else {
            within.join(" OR ")
        };
        let sql = format!(
            "SELECT COUNT(*) FROM jobs WHERE array_parent = $1 AND status <> 'SUCCEEDED' \
             AND ({within})"
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(&parent.0);
        for (first, last) in ranges {
            query = query.bind(i64::from(*first)).bind(i64::from(*last));
        }
        Ok(query.fetch_one(&self.read).await? as u32)
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
        let by_queue = indexed_by(self.dialect, "jobs_runnable_by_queue");
        let rows = sqlx::query(&format!(
            "UPDATE jobs{by_queue} SET status = $1, status_reason = $2, stopped_at = $3, updated_at = $3 \
             WHERE status = 'RUNNABLE' AND suspended = 0 AND job_queue = $4 AND updated_at <= $5 \
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

/// SQL, over a dependency row `d` joined to the job it names `p`, that is true when `p`'s status
/// is one of `ends(d.condition)`: `met_by` or `broken_by` of `core::dependencies`, so the
/// statements above carry out core's table rather than a copy of it.
pub(super) fn dependency_sql(ends: fn(DependencyCondition) -> &'static [JobStatus]) -> String {
    let arms: Vec<String> = DependencyCondition::ALL
        .into_iter()
        .filter(|condition| !ends(*condition).is_empty())
        .map(|condition| {
            let statuses: Vec<String> = ends(condition)
                .iter()
                .map(|status| sql_literal(status.as_str()))
                .collect();
            format!(
                "(d.condition = {} AND p.status IN ({}))",
                sql_literal(condition.as_str()),
                statuses.join(", ")
            )
        })
        .collect();
    if arms.is_empty() {
        "(1 = 0)".into()
    } else {
        format!("({})", arms.join(" OR "))
    }
}

/// The reason a dependent fails with, for the dependency row `d` that broke:
/// `core::dependencies::unmet_reason`, as SQL.
fn broken_reason_sql() -> String {
    let arms: String = DependencyCondition::ALL
        .into_iter()
        .filter(|condition| !condition.broken_by().is_empty())
        .map(|condition| {
            format!(
                " WHEN {} THEN {} || d.depends_on || {}",
                sql_literal(condition.as_str()),
                sql_literal(REASON_PREFIX),
                sql_literal(condition.broken_suffix())
            )
        })
        .collect();
    format!("CASE d.condition{arms} END")
}

/// A constant as an SQL string literal.
pub(super) fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
