//! Changes to a waiting job: suspend and resume (Kubernetes' `suspend`), and its scheduling
//! priority. Each is one statement that moves only a job still waiting, so it cannot race a
//! placement: placement's compare-and-set also requires the job not to be suspended.

use sqlx::Row;

use super::events::write_audit;
use super::{Store, StoreError};
use crate::core::audit::{Caller, Change};
use crate::core::lifecycle::{check_waiting, NotWaiting};
use crate::core::model::{JobId, JobStatus};

/// What to change about a waiting job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobChange {
    /// Hold it: it keeps its place in its queue but is not placed.
    Suspend,
    Resume,
    SchedulingPriority(i64),
}

impl JobChange {
    fn action(self) -> &'static str {
        match self {
            JobChange::Suspend => "suspended",
            JobChange::Resume => "resumed",
            JobChange::SchedulingPriority(_) => "given a new scheduling priority",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobChangeError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error(transparent)]
    NotWaiting(#[from] NotWaiting),
    #[error("job {0} kept changing while it was being updated; try again")]
    Contended(JobId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for JobChangeError {
    fn from(error: sqlx::Error) -> JobChangeError {
        JobChangeError::Store(error.into())
    }
}

impl Store {
    /// Applies `change` to a waiting job, and to an array job's children that still wait.
    pub async fn change_waiting_job(
        &self,
        job_id: &JobId,
        change: JobChange,
        caller: Option<Caller>,
    ) -> Result<(), JobChangeError> {
        let (assignment, value) = match change {
            JobChange::Suspend => ("suspended = $2", 1),
            JobChange::Resume => ("suspended = $2", 0),
            JobChange::SchedulingPriority(priority) => ("scheduling_priority = $2", priority),
        };
        let mut transaction = self.write.begin().await?;
        // On Postgres a job may move between the update and the read of its status (a retry's
        // RUNNING → RUNNABLE): then the update is tried again.
        let mut tries = 0;
        loop {
            let changed = sqlx::query(&format!(
                "UPDATE jobs SET {assignment} WHERE job_id = $1 \
                 AND status IN ('SUBMITTED', 'PENDING', 'RUNNABLE')"
            ))
            .bind(&job_id.0)
            .bind(value)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            if changed > 0 {
                break;
            }
            let row = sqlx::query("SELECT status FROM jobs WHERE job_id = $1")
                .bind(&job_id.0)
                .fetch_optional(&mut *transaction)
                .await?
                .ok_or_else(|| JobChangeError::NotFound(job_id.clone()))?;
            let status: String = row.try_get(0)?;
            let status = JobStatus::parse(&status)
                .ok_or_else(|| StoreError::corrupt("job status", &status))?;
            check_waiting(job_id, status, change.action())?;
            tries += 1;
            if tries == 3 {
                return Err(JobChangeError::Contended(job_id.clone()));
            }
        }
        sqlx::query(&format!(
            "UPDATE jobs SET {assignment} WHERE array_parent = $1 \
             AND status IN ('SUBMITTED', 'PENDING', 'RUNNABLE')"
        ))
        .bind(&job_id.0)
        .bind(value)
        .execute(&mut *transaction)
        .await?;
        let mut extra = serde_json::Map::new();
        if let JobChange::SchedulingPriority(priority) = change {
            extra.insert("schedulingPriority".into(), priority.into());
        }
        let audited = Change {
            action: match change {
                JobChange::Suspend => "suspended",
                JobChange::Resume => "resumed",
                JobChange::SchedulingPriority(_) => "reprioritized",
            }
            .into(),
            kind: "Job".into(),
            name: job_id.0.clone(),
            revision: None,
            extra,
        };
        write_audit(&mut transaction, self.dialect, caller, &[audited]).await?;
        transaction.commit().await?;
        Ok(())
    }
}
