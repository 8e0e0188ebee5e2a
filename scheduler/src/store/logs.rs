//! Each attempt's output, stored in chunks as it is read from the executor, with the executor's
//! cursor so collection resumes exactly after the last stored chunk following a restart.

use batchctl_executor::OutputStream;
use sqlx::Row;

use super::{Store, StoreError};
use crate::core::model::JobId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogChunk {
    pub job_id: JobId,
    pub attempt_number: u32,
    /// The node of a multi-node job that wrote it; 0 for every other job.
    pub node: u32,
    pub stream: OutputStream,
    pub data: Vec<u8>,
    pub cursor: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Increasing within an attempt; read on after it to follow.
    pub id: i64,
    pub stream: OutputStream,
    pub data: Vec<u8>,
}

impl Store {
    /// Stores chunks of output as they are (no limit applied: see `store_output`).
    pub async fn append_logs(&self, chunks: &[NewLogChunk]) -> Result<(), StoreError> {
        self.store_output(chunks, None, &[], &[]).await?;
        Ok(())
    }

    /// Stores a flush of an attempt's output as `core::output_limit` planned it, in one
    /// transaction: `head` chunks, then the marker (inserted when `marker` has no key yet,
    /// rewritten otherwise), then `tail` chunks, and the stored tail chunks `drop` deleted.
    /// Returns the marker's key and the keys of the tail chunks, in order.
    pub async fn store_output(
        &self,
        head: &[NewLogChunk],
        marker: Option<(Option<i64>, &NewLogChunk)>,
        tail: &[NewLogChunk],
        drop: &[i64],
    ) -> Result<(Option<i64>, Vec<i64>), StoreError> {
        let mut transaction = self.write.begin().await?;
        let insert = |chunk: &NewLogChunk, stream: &'static str| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO log_chunks (job_id, attempt_number, stream, data, cursor, node) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(chunk.job_id.0.clone())
            .bind(i64::from(chunk.attempt_number))
            .bind(stream)
            .bind(chunk.data.clone())
            .bind(chunk.cursor as i64)
            .bind(i64::from(chunk.node))
        };
        for chunk in head {
            insert(chunk, stream_name(chunk.stream))
                .fetch_one(&mut *transaction)
                .await?;
        }
        let marker_key = match marker {
            None => None,
            Some((None, chunk)) => Some(
                insert(chunk, MARKER_STREAM)
                    .fetch_one(&mut *transaction)
                    .await?,
            ),
            Some((Some(key), chunk)) => {
                sqlx::query("UPDATE log_chunks SET data = $2 WHERE id = $1")
                    .bind(key)
                    .bind(chunk.data.clone())
                    .execute(&mut *transaction)
                    .await?;
                Some(key)
            }
        };
        let mut keys = Vec::with_capacity(tail.len());
        for chunk in tail {
            keys.push(
                insert(chunk, stream_name(chunk.stream))
                    .fetch_one(&mut *transaction)
                    .await?,
            );
        }
        for key in drop {
            sqlx::query("DELETE FROM log_chunks WHERE id = $1")
                .bind(key)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok((marker_key, keys))
    }

    /// What an attempt has stored, in order: each chunk's key, whether it is the marker, its
    /// length, and the marker's text (to resume counting after a restart).
    pub async fn output_layout(
        &self,
        job_id: &JobId,
        attempt_number: u32,
        node: u32,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, stream, LENGTH(data), CASE WHEN stream = $3 THEN data END \
             FROM log_chunks WHERE job_id = $1 AND attempt_number = $2 AND node = $4 ORDER BY id",
        )
        .bind(&job_id.0)
        .bind(i64::from(attempt_number))
        .bind(MARKER_STREAM)
        .bind(i64::from(node))
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|row| {
                let stream: String = row.try_get(1)?;
                Ok(StoredChunk {
                    key: row.try_get(0)?,
                    marker: stream == MARKER_STREAM,
                    len: row.try_get::<i64, _>(2)? as u64,
                    marker_text: row
                        .try_get::<Option<Vec<u8>>, _>(3)?
                        .map(|data| String::from_utf8_lossy(&data).into_owned()),
                })
            })
            .collect()
    }

    /// Up to `limit` chunks of an attempt's node (0 but for multi-node jobs) after chunk `after`
    /// (0 for the start).
    pub async fn logs(
        &self,
        (job_id, attempt_number, node): (&JobId, u32, u32),
        after: i64,
        limit: u32,
    ) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, stream, data FROM log_chunks WHERE job_id = $1 AND attempt_number = $2 \
             AND node = $5 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(&job_id.0)
        .bind(i64::from(attempt_number))
        .bind(after)
        .bind(i64::from(limit))
        .bind(i64::from(node))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let stream: String = row.try_get("stream")?;
                Ok(LogLine {
                    id: row.try_get("id")?,
                    stream: match stream.as_str() {
                        // The marker of dropped output reads as the server's note on stderr.
                        "stderr" | MARKER_STREAM => OutputStream::Stderr,
                        _ => OutputStream::Stdout,
                    },
                    data: row.try_get("data")?,
                })
            })
            .collect()
    }

    /// Where the executor should resume reading an attempt's (or its node's) output.
    pub async fn log_cursor(
        &self,
        job_id: &JobId,
        attempt_number: u32,
        node: u32,
    ) -> Result<u64, StoreError> {
        let cursor: Option<i64> = sqlx::query_scalar(
            "SELECT cursor FROM log_chunks WHERE job_id = $1 AND attempt_number = $2 \
             AND node = $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(&job_id.0)
        .bind(i64::from(attempt_number))
        .bind(i64::from(node))
        .fetch_optional(&self.read)
        .await?;
        Ok(cursor.unwrap_or(0) as u64)
    }
}

/// The stream name of the marker where an attempt's output was cut (`core::output_limit`).
const MARKER_STREAM: &str = "batchctl";

/// One stored chunk, as `output_layout` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub key: i64,
    pub marker: bool,
    pub len: u64,
    pub marker_text: Option<String>,
}

fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}
