//! Jobs per queue and status, for `/metrics`, read from counters the database keeps by triggers
//! (migration 0014) instead of counting the jobs table. On SQLite the triggers add to one row per
//! queue and status; on Postgres each writing statement appends its own rows, which a reader sums
//! and `fold_job_counts` compacts (see the migration for why).

use sqlx::Row;

use super::{Dialect, Store, StoreError};

/// How many jobs one queue holds in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub queue: String,
    pub status: String,
    pub n: i64,
}

impl Store {
    /// Jobs per queue and status, without the pairs that hold none.
    pub async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError> {
        let sql = match self.dialect {
            Dialect::Sqlite => "SELECT job_queue, status, n FROM job_counts WHERE n <> 0",
            Dialect::Postgres => {
                "SELECT job_queue, status, SUM(n)::BIGINT AS n FROM job_count_deltas \
                 GROUP BY job_queue, status HAVING SUM(n) <> 0"
            }
        };
        let rows = sqlx::query(sql).fetch_all(&self.read).await?;
        rows.iter()
            .map(|row| {
                Ok(JobCount {
                    queue: row.try_get(0)?,
                    status: row.try_get(1)?,
                    n: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Replaces the Postgres counters' rows with one per queue and status, so reading them stays
    /// cheap however many statements wrote since. Safe to run from several servers at once: a
    /// second fold waits on the rows the first deletes and then finds them gone. Nothing to do on
    /// SQLite. Returns how many rows it folded.
    pub async fn fold_job_counts(&self) -> Result<u64, StoreError> {
        if self.dialect != Dialect::Postgres {
            return Ok(0);
        }
        let folded: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM job_count_deltas RETURNING job_queue, status, n), \
             kept AS (INSERT INTO job_count_deltas (job_queue, status, n) \
             SELECT job_queue, status, SUM(n) FROM gone GROUP BY job_queue, status \
             HAVING SUM(n) <> 0 RETURNING 1) \
             SELECT COUNT(*) FROM gone",
        )
        .fetch_one(&self.write)
        .await?;
        Ok(folded as u64)
    }
}
