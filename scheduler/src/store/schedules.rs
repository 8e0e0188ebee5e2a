//! Schedules and their firings. A firing row's primary key (schedule, scheduled time) is the
//! exactly-once guarantee: it is inserted in the transaction that inserts the job.

use sqlx::Row;

use super::{Store, StoreError};
use crate::core::model::{Job, JobId};
use crate::core::resource::{Kind, SubmitTemplate};
use crate::core::schedule::Schedule;

/// A stored schedule with the submit its ticks make.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    pub schedule: Schedule,
    pub target: SubmitTemplate,
    /// The spec as applied, for display.
    pub spec: serde_json::Value,
    pub created_at: i64,
}

/// What happened to a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub scheduled_time: i64,
    pub outcome: FiringOutcome,
    pub job_id: Option<JobId>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiringOutcome {
    /// A job was submitted.
    Fired,
    /// The tick was passed over (missed, or an overlap policy), with the reason.
    Skipped,
    /// The job could not be built (its queue or definition is gone, …), with the reason.
    Failed,
}

impl FiringOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            FiringOutcome::Fired => "FIRED",
            FiringOutcome::Skipped => "SKIPPED",
            FiringOutcome::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> Option<FiringOutcome> {
        [
            FiringOutcome::Fired,
            FiringOutcome::Skipped,
            FiringOutcome::Failed,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

impl Store {
    /// Every schedule.
    pub async fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        let parsed = self
            .parsed_resources::<(Schedule, SubmitTemplate)>(Kind::Schedule)
            .await?;
        Ok(parsed
            .into_iter()
            .map(|parsed| StoredSchedule {
                schedule: parsed.model.0,
                target: parsed.model.1,
                spec: parsed.spec,
                created_at: parsed.created_at,
            })
            .collect())
    }

    /// The latest tick handled for a schedule, if any.
    pub async fn last_firing(&self, schedule: &str) -> Result<Option<Firing>, StoreError> {
        let row = sqlx::query(
            "SELECT scheduled_time, outcome, job_id, reason FROM schedule_firings \
             WHERE schedule = $1 ORDER BY scheduled_time DESC LIMIT 1",
        )
        .bind(schedule)
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            let outcome: String = row.try_get(1)?;
            Ok(Firing {
                scheduled_time: row.try_get(0)?,
                outcome: FiringOutcome::parse(&outcome)
                    .ok_or_else(|| StoreError::corrupt("firing outcome", outcome))?,
                job_id: row.try_get::<Option<String>, _>(2)?.map(JobId),
                reason: row.try_get(3)?,
            })
        })
        .transpose()
    }

    /// The job of the latest tick that fired one, if any.
    pub async fn last_fired_job(&self, schedule: &str) -> Result<Option<JobId>, StoreError> {
        let job_id: Option<String> = sqlx::query_scalar(
            "SELECT job_id FROM schedule_firings WHERE schedule = $1 AND outcome = 'FIRED' \
             ORDER BY scheduled_time DESC LIMIT 1",
        )
        .bind(schedule)
        .fetch_optional(&self.read)
        .await?
        .flatten();
        Ok(job_id.map(JobId))
    }

    /// Records a tick that fires no job; false if the tick was already handled.
    pub async fn record_unfired_tick(
        &self,
        schedule: &str,
        scheduled_time: i64,
        outcome: FiringOutcome,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO schedule_firings (schedule, scheduled_time, outcome, reason, recorded_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM schedules WHERE name = $1) \
             ON CONFLICT (schedule, scheduled_time) DO NOTHING",
        )
        .bind(schedule)
        .bind(scheduled_time)
        .bind(outcome.as_str())
        .bind(reason)
        .bind(now)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Fires a tick: records it and inserts its job in one transaction. False (and no job) if the
    /// tick was already handled — by this server before a restart, or by another server.
    pub async fn fire_tick(
        &self,
        schedule: &str,
        scheduled_time: i64,
        job: &Job,
        now: i64,
    ) -> Result<bool, StoreError> {
        let record = sqlx::query(
            "INSERT INTO schedule_firings (schedule, scheduled_time, outcome, job_id, recorded_at) \
             VALUES ($1, $2, 'FIRED', $3, $4) ON CONFLICT (schedule, scheduled_time) DO NOTHING",
        )
        .bind(schedule)
        .bind(scheduled_time)
        .bind(&job.job_id.0)
        .bind(now);
        self.record_once_with_job(("schedules", schedule), record, job)
            .await
    }

    /// How many ticks of a schedule fired a job (for tests and status).
    pub async fn count_fired(&self, schedule: &str) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM schedule_firings WHERE schedule = $1 AND outcome = 'FIRED'",
        )
        .bind(schedule)
        .fetch_one(&self.read)
        .await?;
        Ok(count as u64)
    }
}
