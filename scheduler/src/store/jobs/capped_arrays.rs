//! `arrayProperties.maxConcurrency`: a capped array's children wait PENDING, and each pass moves
//! on as many as the cap leaves room for, lowest index first.
//!
//! The cap is kept by admission, not by placement: at most `maxConcurrency` of an array's children
//! are ever RUNNABLE, STARTING or RUNNING together, so a queue's head holds no more of them than
//! could start, and a capped array of 100,000 children in front of other jobs costs a head read
//! nothing (placement would otherwise read and pass over its waiting children on every pass).

use super::moves::{dependency_sql, DEPENDENCY_OF_THIS_JOB};
use super::*;
use crate::core::model::DependencyCondition;

/// Children released in one statement at most, however large a cap is; the rest follow in the
/// next passes (a released child makes a pass progress, so they follow at once).
const MOST_PER_RELEASE: i64 = 512;

impl Store {
    /// Moves the next PENDING children of every capped array to `runnable`, as many as its
    /// `maxConcurrency` leaves room for beside the children already RUNNABLE, STARTING or RUNNING,
    /// lowest index first, skipping those whose dependencies are not met yet. One transaction,
    /// so the counts it reads are those it moves against. Returns how many moved.
    pub async fn release_capped_children(
        &self,
        runnable: JobStatus,
        now: i64,
    ) -> Result<u64, StoreError> {
        let emission = self.emission();
        let returning = emission.returning();
        let capped = indexed_by(self.dialect, "jobs_capped_arrays");
        let children = indexed_by(self.dialect, "jobs_capped_children");
        let in_flight = match self.dialect {
            Dialect::Sqlite => {
                "SELECT SUM(c.n) FROM array_counts c WHERE c.array_parent = p.job_id \
                 AND c.status IN ('RUNNABLE', 'STARTING', 'RUNNING')"
            }
            Dialect::Postgres => {
                "SELECT SUM(c.n) FROM array_count_deltas c WHERE c.array_parent = p.job_id \
                 AND c.status IN ('RUNNABLE', 'STARTING', 'RUNNING')"
            }
        };
        let mut transaction = self.begin_fenced().await?;
        let free: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT p.job_id, p.array_max_concurrency - CAST(COALESCE(({in_flight}), 0) AS BIGINT) \
             FROM jobs p{capped} WHERE p.array_max_concurrency IS NOT NULL \
             AND p.array_size IS NOT NULL AND p.status = 'PENDING' ORDER BY p.seq"
        ))
        .fetch_all(&mut *transaction)
        .await?;
        let met = dependency_sql(DependencyCondition::met_by);
        let mut moved = 0;
        for (parent, free) in free {
            if free <= 0 {
                continue;
            }
            // `jobs` in the inner query is the child (DEPENDENCY_OF_THIS_JOB names it so).
            let rows = sqlx::query(&format!(
                "UPDATE jobs SET status = $1, updated_at = $2 WHERE status = 'PENDING' \
                 AND job_id IN (SELECT job_id FROM jobs{children} WHERE array_parent = $3 \
                 AND array_max_concurrency IS NOT NULL AND status = 'PENDING' \
                 AND NOT EXISTS (SELECT 1 {DEPENDENCY_OF_THIS_JOB} AND NOT {met}) \
                 ORDER BY array_parent, array_index LIMIT $4) {returning}"
            ))
            .bind(runnable.as_str())
            .bind(now)
            .bind(&parent)
            .bind(free.min(MOST_PER_RELEASE))
            .fetch_all(&mut *transaction)
            .await?;
            moved += emit_moved_rows(emission, &mut transaction, &rows, now).await?;
        }
        transaction.commit().await?;
        Ok(moved)
    }
}
