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
    pub async fn append_logs(&self, chunks: &[NewLogChunk]) -> Result<(), StoreError> {
        let mut transaction = self.write.begin().await?;
        for chunk in chunks {
            sqlx::query(
                "INSERT INTO log_chunks (job_id, attempt_number, stream, data, cursor) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&chunk.job_id.0)
            .bind(i64::from(chunk.attempt_number))
            .bind(stream_name(chunk.stream))
            .bind(&chunk.data)
            .bind(chunk.cursor as i64)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Up to `limit` chunks of an attempt after chunk `after` (0 for the start).
    pub async fn logs(
        &self,
        job_id: &JobId,
        attempt_number: u32,
        after: i64,
        limit: u32,
    ) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, stream, data FROM log_chunks WHERE job_id = $1 AND attempt_number = $2 \
             AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(&job_id.0)
        .bind(i64::from(attempt_number))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let stream: String = row.try_get("stream")?;
                Ok(LogLine {
                    id: row.try_get("id")?,
                    stream: match stream.as_str() {
                        "stderr" => OutputStream::Stderr,
                        _ => OutputStream::Stdout,
                    },
                    data: row.try_get("data")?,
                })
            })
            .collect()
    }

    /// Where the executor should resume reading an attempt's output.
    pub async fn log_cursor(&self, job_id: &JobId, attempt_number: u32) -> Result<u64, StoreError> {
        let cursor: Option<i64> = sqlx::query_scalar(
            "SELECT cursor FROM log_chunks WHERE job_id = $1 AND attempt_number = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(&job_id.0)
        .bind(i64::from(attempt_number))
        .fetch_optional(&self.read)
        .await?;
        Ok(cursor.unwrap_or(0) as u64)
    }
}

fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}
