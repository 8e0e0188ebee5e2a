//! The schedule runner: one loop that fires schedules' ticks. It decides nothing itself —
//! `core::schedule::due_ticks` says which ticks are due and `overlap_action` what the overlap
//! policy wants — and it fires each tick through `Store::fire_tick`, whose unique
//! (schedule, scheduled time) row makes a tick fire exactly once across restarts and servers.
//!
//! Invariants:
//! - A tick's firing record and its job commit together, or neither does.
//! - Every tick a schedule had while enabled is recorded: FIRED, SKIPPED (with why) or FAILED
//!   (with why). Nothing is dropped silently.
//! - Time comes from the `Clock`, so tests can move it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::control::{stop_job, StopMode};
use crate::core::attempt::{origin_variables, JobOrigin};
use crate::core::model::{Job, JobId};
use crate::core::schedule::{
    due_ticks, flexible_delay, next_fire, overlap_action, OverlapAction, TickDecision,
};
use crate::dispatcher::DispatcherHandle;
use crate::manifest::{FieldError, Kind, SubmitJobRequest};
use crate::outage::{AfterWait, Outage};
use crate::store::{DeleteError, FiringOutcome, Store, StoreError, StoredSchedule};

/// The clock the runner reads and sleeps on: the system's, or a test's.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    async fn sleep_until(&self, when: DateTime<Utc>);
}

pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, when: DateTime<Utc>) {
        let wait = (when - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
    }
}

/// The placeholder a target's parameters and command may use for the tick's time.
pub const SCHEDULED_TIME_PLACEHOLDER: &str = "<scheduledTime>";
/// How often the runner looks again without being woken (schedules applied through another
/// server; a clock that jumped).
const POLL: Duration = Duration::from_secs(1);
/// How many schedules one pass handles at once.
const CONCURRENT_SCHEDULES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Wakes the runner when schedules change.
#[derive(Clone, Default)]
pub struct ScheduleHandle {
    wake: Arc<Notify>,
}

impl ScheduleHandle {
    pub fn notify_changed(&self) {
        self.wake.notify_one();
    }
}

pub struct ScheduleRunner {
    store: Store,
    dispatcher: DispatcherHandle,
    clock: Arc<dyn Clock>,
    handle: ScheduleHandle,
}

impl ScheduleRunner {
    pub fn new(store: Store, dispatcher: DispatcherHandle, clock: Arc<dyn Clock>) -> Self {
        ScheduleRunner {
            store,
            dispatcher,
            clock,
            handle: ScheduleHandle::default(),
        }
    }

    pub fn handle(&self) -> ScheduleHandle {
        self.handle.clone()
    }

    /// Takes wake-ups from a handle made before this runner (the API's).
    pub fn with_handle(mut self, handle: ScheduleHandle) -> Self {
        self.handle = handle;
        self
    }

    /// Fires due ticks until `cancel` fires. Errors of one pass are logged and retried at the
    /// next, so a database hiccup delays ticks but loses none (they are then missed ticks, which
    /// the catch-up policy handles).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut outage = Outage::new("schedule runner");
        loop {
            let next = match self.run_once().await {
                Ok(next) => {
                    outage.recovered();
                    next
                }
                Err(ScheduleError::Store(error)) if error.is_retryable() => {
                    if outage.wait(&error, &cancel).await == AfterWait::Stop {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "firing schedules failed; trying again");
                    None
                }
            };
            let now = self.clock.now();
            let poll = now + chrono::Duration::from_std(POLL).expect("a second");
            let wake_at = next.map_or(poll, |next| next.min(poll));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.handle.wake.notified() => {}
                () = self.clock.sleep_until(wake_at) => {}
            }
        }
    }

    /// One pass: fires what is due now; returns when the next tick is due.
    pub async fn run_once(&self) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        let schedules = self.store.schedules().await?;
        // Schedules are independent, so many due at one instant are fired side by side; the
        // firing row keeps each tick once whatever the interleaving.
        let passes: Vec<_> = schedules
            .iter()
            .map(|stored| Box::pin(self.fire_due(stored)))
            .collect();
        let nexts: Vec<Result<Option<DateTime<Utc>>, ScheduleError>> =
            futures::stream::iter(passes)
                .buffer_unordered(CONCURRENT_SCHEDULES)
                .collect()
                .await;
        let mut earliest: Option<DateTime<Utc>> = None;
        for next in nexts {
            earliest = match (earliest, next?) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(earliest)
    }

    /// Fires a schedule's due ticks; returns when its next tick is due.
    async fn fire_due(
        &self,
        stored: &StoredSchedule,
    ) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        let schedule = &stored.schedule;
        let created = millis(stored.created_at);
        let anchor = schedule.start.unwrap_or(created);
        let since = match self.store.last_firing(&schedule.name).await? {
            Some(firing) => millis(firing.scheduled_time).max(created),
            None => created,
        };
        let now = self.clock.now();
        for decision in due_ticks(schedule, anchor, since, now) {
            match decision {
                TickDecision::Skip { tick, reason } => {
                    tracing::warn!(schedule = %schedule.name, %tick, %reason, "tick skipped");
                    self.store
                        .record_unfired_tick(
                            &schedule.name,
                            tick.timestamp_millis(),
                            FiringOutcome::Skipped,
                            &reason,
                            now.timestamp_millis(),
                        )
                        .await?;
                }
                TickDecision::Fire { tick } => {
                    let fire_at = tick + flexible_delay(schedule, tick);
                    if fire_at > now {
                        // Within its flexible window: later, and so are the ticks after it.
                        return Ok(Some(fire_at));
                    }
                    self.fire(stored, tick).await?;
                }
            }
        }
        if !schedule.enabled {
            return Ok(None);
        }
        let after = now.max(since);
        let next = next_fire(&schedule.expression, schedule.time_zone, anchor, after)
            .filter(|tick| schedule.end.is_none_or(|end| *tick <= end));
        if next.is_none() && schedule.delete_after_completion {
            // No tick left, and every due one handled above: the schedule is complete.
            match self
                .store
                .delete_resource(
                    Kind::Schedule,
                    &schedule.name,
                    None,
                    Some(crate::core::audit::Caller::Server),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(schedule = %schedule.name, "schedule completed and deleted (actionAfterCompletion: DELETE)")
                }
                // Deleted by someone else meanwhile.
                Err(DeleteError::NotFound(_)) => {}
                Err(DeleteError::Store(error)) => return Err(error.into()),
                Err(DeleteError::Refused(refusal)) => {
                    tracing::warn!(schedule = %schedule.name, %refusal, "could not delete a completed schedule")
                }
            }
        }
        Ok(next.map(|tick| tick + flexible_delay(schedule, tick)))
    }

    /// Fires one tick as the overlap policy allows.
    pub async fn fire(
        &self,
        stored: &StoredSchedule,
        tick: DateTime<Utc>,
    ) -> Result<Option<JobId>, ScheduleError> {
        let schedule = &stored.schedule;
        let now = self.clock.now().timestamp_millis();
        let last = match self.store.last_fired_job(&schedule.name).await? {
            Some(job_id) => self.store.job(&job_id).await?,
            None => None,
        };
        let last_finished = last.as_ref().is_none_or(|job| job.status.is_terminal());
        match overlap_action(schedule.overlap, last_finished) {
            OverlapAction::Fire => {}
            OverlapAction::Skip => {
                let reason = format!(
                    "overlapPolicy Forbid: job {} of the last run has not finished",
                    last.map(|job| job.job_id.0).unwrap_or_default()
                );
                self.store
                    .record_unfired_tick(
                        &schedule.name,
                        tick.timestamp_millis(),
                        FiringOutcome::Skipped,
                        &reason,
                        now,
                    )
                    .await?;
                return Ok(None);
            }
            OverlapAction::TerminateThenFire => {
                if let Some(job) = &last {
                    let reason = format!(
                        "Replaced by the run of schedule {} at {tick}",
                        schedule.name
                    );
                    if let Err(error) = stop_job(
                        &self.store,
                        &self.dispatcher,
                        &job.job_id,
                        &reason,
                        StopMode::Terminate,
                    )
                    .await
                    {
                        tracing::warn!(job_id = %job.job_id, %error, "could not stop the run being replaced");
                    }
                }
            }
        }
        let job = match self.build_tick_job(stored, tick).await? {
            Ok(job) => job,
            Err(error) => {
                let reason = format!("the target cannot be submitted: {error}");
                tracing::error!(schedule = %schedule.name, %tick, %reason, "tick failed");
                self.store
                    .record_unfired_tick(
                        &schedule.name,
                        tick.timestamp_millis(),
                        FiringOutcome::Failed,
                        &reason,
                        now,
                    )
                    .await?;
                return Ok(None);
            }
        };
        let job_id = job.job_id.clone();
        if self
            .store
            .fire_tick(&schedule.name, tick.timestamp_millis(), &job, now)
            .await?
        {
            tracing::info!(schedule = %schedule.name, %tick, %job_id, "schedule fired");
            self.dispatcher.metrics().observe_schedule_lateness(
                schedule.name.as_str(),
                (now - tick.timestamp_millis()) as f64 / 1000.0,
            );
            self.dispatcher.notify_work();
            Ok(Some(job_id))
        } else {
            Ok(None)
        }
    }

    /// The job a tick submits: the target with `<scheduledTime>` filled in and
    /// `BATCH_SCHEDULED_TIME` set. An inner error is the target's fault (recorded as FAILED).
    async fn build_tick_job(
        &self,
        stored: &StoredSchedule,
        tick: DateTime<Utc>,
    ) -> Result<Result<Job, FieldError>, ScheduleError> {
        let scheduled_time = tick.with_timezone(&stored.schedule.time_zone).to_rfc3339();
        let target = match crate::manifest::submit_request(&stored.target) {
            Ok(target) => target,
            Err(error) => return Ok(Err(error)),
        };
        let request = with_scheduled_time(&target, &scheduled_time);
        let now = self.clock.now().timestamp_millis();
        Ok(
            crate::submission::build_from_store(&self.store, &request, None, now, "target.")
                .await?
                .map(|mut job| {
                    job.spec
                        .container
                        .environment
                        .extend(origin_variables(JobOrigin::Schedule {
                            scheduled_time: &scheduled_time,
                        }));
                    job
                }),
        )
    }
}

/// The target with `<scheduledTime>` replaced in its parameters and command.
fn with_scheduled_time(target: &SubmitJobRequest, scheduled_time: &str) -> SubmitJobRequest {
    let fill = |text: &String| text.replace(SCHEDULED_TIME_PLACEHOLDER, scheduled_time);
    let mut request = target.clone();
    request.parameters = target
        .parameters
        .iter()
        .map(|(name, value)| (name.clone(), fill(value)))
        .collect::<BTreeMap<_, _>>();
    if let Some(overrides) = &mut request.container_overrides {
        if let Some(command) = &mut overrides.command {
            *command = command.iter().map(fill).collect();
        }
    }
    request
}

fn millis(value: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(value).single().unwrap_or_default()
}
