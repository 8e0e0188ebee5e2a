//! Jobs per queue and status, for `/metrics`, and each array's children per status, read from counters the database keeps by triggers
//! (migrations 0014 and 0016) instead of counting the jobs table. On SQLite the triggers add to one row per
//! queue and status; on Postgres each writing statement appends its own rows, which a reader sums
//! and `fold_job_counts` compacts (see the migration for why).

use std::collections::HashSet;

use sqlx::Row;

use super::{Dialect, Store, StoreError};
use crate::core::model::JobStatus;

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

    /// The queues holding at least one job in `status`, from the counters: admission asks only
    /// those, so a queue whose SUBMITTED jobs all left costs nothing (on Postgres, looking for
    /// SUBMITTED jobs walks the index entries of every job that left SUBMITTED until a vacuum:
    /// a million after a large array was admitted).
    pub async fn queues_with(&self, status: JobStatus) -> Result<HashSet<String>, StoreError> {
        let sql = match self.dialect {
            Dialect::Sqlite => "SELECT job_queue FROM job_counts WHERE status = $1 AND n > 0",
            Dialect::Postgres => {
                "SELECT job_queue FROM job_count_deltas WHERE status = $1 \
                 GROUP BY job_queue HAVING SUM(n) > 0"
            }
        };
        let rows = sqlx::query(sql)
            .bind(status.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// Replaces the Postgres counters' rows (jobs per queue and status, children per array and
    /// status) with one per group, so reading them stays cheap however many statements wrote since.
    /// Only groups with more than one row are rewritten, so a history of finished arrays is not
    /// rewritten at every fold. Safe to run from several servers at once: a second fold waits on
    /// the rows the first deletes and then finds them gone. Nothing to do on SQLite. Returns how
    /// many rows it folded.
    pub async fn fold_job_counts(&self) -> Result<u64, StoreError> {
        if self.dialect != Dialect::Postgres {
            return Ok(0);
        }
        let mut folded = 0;
        for (table, group) in [
            ("job_count_deltas", "job_queue, status"),
            ("array_count_deltas", "array_parent, status"),
        ] {
            let n: i64 = sqlx::query_scalar(&format!(
                "WITH gone AS (DELETE FROM {table} WHERE ({group}) IN \
                 (SELECT {group} FROM {table} GROUP BY {group} HAVING COUNT(*) > 1) \
                 RETURNING {group}, n), \
                 kept AS (INSERT INTO {table} ({group}, n) \
                 SELECT {group}, SUM(n) FROM gone GROUP BY {group} HAVING SUM(n) <> 0 RETURNING 1) \
                 SELECT COUNT(*) FROM gone"
            ))
            .fetch_one(&self.write)
            .await?;
            folded += n as u64;
        }
        Ok(folded)
    }
}

/// Top-level jobs of one queue that finished in one minute, for the console's charts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedMinute {
    pub queue: String,
    /// Minutes since the epoch.
    pub minute: i64,
    pub finished: u64,
    /// Of those, how many had started, and the sum of their waits from submit to start.
    pub started: u64,
    pub wait_millis: i64,
}

impl Store {
    /// Per queue and minute, the top-level jobs (an array counts once) that finished since
    /// `since` (epoch milliseconds). Each queue and outcome reads its own range of the
    /// `jobs_finished_by_queue` index, so the cost follows the jobs in the window, not the table.
    pub async fn finished_by_minute(
        &self,
        queues: &[String],
        since: i64,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        let sql = "SELECT stopped_at / 60000 AS minute, COUNT(*) AS finished, \
             CAST(SUM(CASE WHEN started_at IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS started, \
             CAST(SUM(CASE WHEN started_at IS NULL THEN 0 ELSE started_at - created_at END) AS BIGINT) AS waits \
             FROM jobs WHERE job_queue = $1 AND status = $2 AND stopped_at >= $3 \
             AND array_parent IS NULL AND (status = 'SUCCEEDED' OR status = 'FAILED') \
             GROUP BY stopped_at / 60000";
        let mut minutes: std::collections::BTreeMap<(String, i64), FinishedMinute> =
            std::collections::BTreeMap::new();
        for queue in queues {
            for status in [JobStatus::Succeeded, JobStatus::Failed] {
                let rows = sqlx::query(sql)
                    .bind(queue.as_str())
                    .bind(status.as_str())
                    .bind(since)
                    .fetch_all(&self.read)
                    .await?;
                for row in &rows {
                    let minute: i64 = row.try_get("minute")?;
                    let entry =
                        minutes
                            .entry((queue.clone(), minute))
                            .or_insert_with(|| FinishedMinute {
                                queue: queue.clone(),
                                minute,
                                finished: 0,
                                started: 0,
                                wait_millis: 0,
                            });
                    entry.finished += row.try_get::<i64, _>("finished")?.max(0) as u64;
                    entry.started += row
                        .try_get::<Option<i64>, _>("started")?
                        .unwrap_or(0)
                        .max(0) as u64;
                    entry.wait_millis += row.try_get::<Option<i64>, _>("waits")?.unwrap_or(0);
                }
            }
        }
        Ok(minutes.into_values().collect())
    }
}
