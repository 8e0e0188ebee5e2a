//! Fair-share usage kept across restarts and leader changes: the dispatcher saves the ledger of a
//! queue whose usage changed after each batch of attempt ends, and loads them all when it starts.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError};
use crate::core::fair_share::ShareLedger;
use crate::core::model::QueueName;

impl Store {
    /// Every queue's stored ledger.
    pub async fn share_ledgers(&self) -> Result<HashMap<QueueName, ShareLedger>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_queue, share_identifier, used, mean_seconds, finished, as_of \
             FROM share_usage ORDER BY job_queue, share_identifier",
        )
        .fetch_all(&self.read)
        .await?;
        let mut ledgers: HashMap<QueueName, ShareLedger> = HashMap::new();
        for row in rows {
            let queue: String = row.try_get(0)?;
            let queue = QueueName::try_from(queue)
                .map_err(|error| StoreError::corrupt("share usage queue", error))?;
            let share: String = row.try_get(1)?;
            let ledger = ledgers.entry(queue).or_default();
            ledger.used.insert(share.clone(), row.try_get(2)?);
            let finished: i64 = row.try_get(4)?;
            ledger
                .mean_seconds
                .insert(share, (row.try_get(3)?, finished.max(0) as u64));
            // Every share of a ledger is saved with the ledger's one `as_of`.
            ledger.as_of = row.try_get(5)?;
        }
        Ok(ledgers)
    }

    /// Saves one queue's ledger (as the leader: fenced on Postgres).
    pub async fn save_share_ledger(
        &self,
        queue: &QueueName,
        ledger: &ShareLedger,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_fenced().await?;
        for (share, used) in &ledger.used {
            let (mean, finished) = ledger.mean_seconds.get(share).copied().unwrap_or_default();
            sqlx::query(
                "INSERT INTO share_usage (job_queue, share_identifier, used, mean_seconds, \
                 finished, as_of) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (job_queue, share_identifier) DO UPDATE SET used = excluded.used, \
                 mean_seconds = excluded.mean_seconds, finished = excluded.finished, \
                 as_of = excluded.as_of",
            )
            .bind(queue.as_str())
            .bind(share.as_str())
            .bind(*used)
            .bind(mean)
            .bind(finished as i64)
            .bind(ledger.as_of)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}
