//! The event bus, event rules, and the outbox of rule deliveries.

use sqlx::{Any, Row, Transaction};

use super::sql::{placeholders, ROWS_PER_STATEMENT};
use super::{Store, StoreError};
use std::sync::atomic::Ordering;

use crate::core::events::{
    job_state_change, Event, EventRule, JobChange, JOB_EVENT_SOURCE, JOB_STATE_CHANGE,
};
use crate::core::model::{Job, JobStatus};
use crate::core::resource::{Kind, SubmitTemplate, WebhookTrigger};

/// Keeps an event stream counted (see `Store::watch_events`).
pub struct WatchGuard {
    watchers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stored event with its place on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct BusEvent {
    pub seq: i64,
    pub event_id: String,
    pub envelope: serde_json::Value,
    pub received_at: i64,
}

#[derive(Debug, Clone)]
pub struct StoredRule {
    pub rule: EventRule,
    pub target: SubmitTemplate,
    pub created_at: i64,
}

/// Inserts events on the bus; returns the ids that were new (an id put before is not stored
/// again; batchctl's own job events always are).
/// Writes the audit events of `changes` (`core::audit`), made by `caller`, in the transaction
/// that makes them; nothing without a caller.
pub(super) async fn write_audit(
    transaction: &mut Transaction<'static, Any>,
    dialect: super::Dialect,
    caller: Option<crate::core::audit::Caller>,
    changes: &[crate::core::audit::Change],
) -> Result<(), StoreError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    if changes.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    let events: Vec<Event> = changes
        .iter()
        .map(|change| {
            crate::core::audit::audit_event(uuid::Uuid::new_v4().to_string(), change, caller, now)
        })
        .collect();
    insert_events(transaction, dialect, &events, now.timestamp_millis()).await?;
    Ok(())
}

async fn insert_events(
    transaction: &mut Transaction<'static, Any>,
    dialect: super::Dialect,
    events: &[Event],
    now: i64,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut new = std::collections::HashSet::new();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO events (event_id, source, detail_type, body, received_at) VALUES {} \
             ON CONFLICT (event_id) WHERE source <> 'batchctl' DO NOTHING RETURNING event_id",
            placeholders(dialect, chunk.len(), 5, 1)
        );
        let mut query = sqlx::query(&sql);
        for event in chunk {
            query = query
                .bind(event.id.clone())
                .bind(event.source.clone())
                .bind(event.detail_type.clone())
                .bind(event.envelope().to_string())
                .bind(now);
        }
        for row in query.fetch_all(&mut **transaction).await? {
            new.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(new)
}

/// Puts the Job State Change events of the rows a status-changing statement returned (see
/// `Emission::returning`) on the bus, in the statement's transaction, so an event exists exactly
/// when its transition committed. `exit_code` gives a job's exit code where the transition has
/// one. Returns how many jobs moved.
pub(super) async fn emit_moved(
    emission: Emission,
    transaction: &mut Transaction<'static, Any>,
    rows: &[sqlx::any::AnyRow],
    moved: impl Fn(&str) -> Option<MovedJob>,
    now: i64,
) -> Result<u64, StoreError> {
    if rows.is_empty() || !emission.wanted {
        return Ok(rows.len() as u64);
    }
    let time = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let mut change = change_from_row(row)?;
        let moved = moved(&change.job_id).unwrap_or_default();
        // A start and an end applied as one write: the RUNNING that was skipped is still an
        // event, before the end's, as rules on job state changes expect.
        if moved.passed_running {
            let running = JobChange {
                status: JobStatus::Running.as_str().to_string(),
                status_reason: None,
                exit_code: None,
                ..change.clone()
            };
            events.push(job_state_change(
                &running,
                &uuid::Uuid::new_v4().to_string(),
                time,
            ));
        }
        change.exit_code = moved.exit_code;
        events.push(job_state_change(
            &change,
            &uuid::Uuid::new_v4().to_string(),
            time,
        ));
    }
    insert_events(transaction, emission.dialect, &events, now).await?;
    Ok(rows.len() as u64)
}

/// Puts the Job State Change events of new jobs stored past SUBMITTED
/// (`core::state_machine::status_at_submit`) on the bus, in their insert's transaction: the
/// events the dispatcher's admission would otherwise have stored.
pub(super) async fn emit_admitted_at_submit(
    emission: Emission,
    transaction: &mut Transaction<'static, Any>,
    jobs: &[&Job],
    now: i64,
) -> Result<(), StoreError> {
    if !emission.wanted {
        return Ok(());
    }
    let time = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    let events: Vec<Event> = jobs
        .iter()
        .filter(|job| job.status != JobStatus::Submitted)
        .map(|job| {
            let change = JobChange {
                job_id: job.job_id.0.clone(),
                job_name: job.job_name.to_string(),
                job_queue: job.queue.to_string(),
                status: job.status.as_str().to_string(),
                status_reason: job.status_reason.clone(),
                exit_code: None,
                chain_depth: job.spec.chain_depth,
            };
            job_state_change(&change, &uuid::Uuid::new_v4().to_string(), time)
        })
        .collect();
    insert_events(transaction, emission.dialect, &events, now).await?;
    Ok(())
}

/// What a moved job's events say beyond its row: the exit code its attempt reported, and
/// whether it passed RUNNING on the way (`Transition::passes_running`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MovedJob {
    pub exit_code: Option<i32>,
    pub passed_running: bool,
}

/// Whether a status-changing statement stores Job State Change events, decided once per
/// statement so its RETURNING clause and what is read from it agree.
#[derive(Debug, Clone, Copy)]
pub(super) struct Emission {
    pub wanted: bool,
    dialect: super::Dialect,
}

impl Emission {
    /// What the statement returns: the changed jobs for their events, or only their ids (which
    /// is cheaper to decode when no event is wanted).
    pub fn returning(&self) -> &'static str {
        match self.wanted {
            true => "RETURNING job_id, job_name, job_queue, status, status_reason, chain_depth",
            false => "RETURNING job_id",
        }
    }
}

fn change_from_row(row: &sqlx::any::AnyRow) -> Result<JobChange, StoreError> {
    Ok(JobChange {
        job_id: row.try_get("job_id")?,
        job_name: row.try_get("job_name")?,
        job_queue: row.try_get("job_queue")?,
        status: row.try_get("status")?,
        status_reason: row.try_get("status_reason")?,
        exit_code: None,
        chain_depth: row
            .try_get::<i64, _>("chain_depth")?
            .clamp(0, i64::from(u32::MAX)) as u32,
    })
}

impl Store {
    pub(super) fn emission(&self) -> Emission {
        Emission {
            wanted: self.job_events_wanted.load(Ordering::Acquire)
                || self.watchers.load(Ordering::Acquire) > 0,
            dialect: self.dialect,
        }
    }

    /// Decides again whether Job State Change events are stored: while some enabled rule or
    /// notification could match one. Called at open, after an apply, and by the rule runner
    /// (for what was applied through another server).
    pub async fn refresh_job_event_interest(&self) -> Result<bool, StoreError> {
        let can_match = |pattern: &crate::core::event_pattern::EventPattern| {
            pattern.may_match(JOB_EVENT_SOURCE, JOB_STATE_CHANGE)
        };
        let by_rules = self
            .event_rules()
            .await?
            .iter()
            .any(|stored| stored.rule.enabled && can_match(&stored.rule.pattern));
        let by_notifications = self
            .notifications()
            .await?
            .iter()
            .any(|(notification, _)| notification.enabled && can_match(&notification.pattern));
        let wanted = by_rules || by_notifications;
        self.job_events_wanted.store(wanted, Ordering::Release);
        Ok(wanted)
    }

    /// Stores events in one transaction, each once: an id already on the bus is not stored again
    /// (a retried put). Returns, per event, whether it was new.
    pub async fn put_events(&self, events: &[Event], now: i64) -> Result<Vec<bool>, StoreError> {
        let mut transaction = self.write.begin().await?;
        let mut new = insert_events(&mut transaction, self.dialect, events, now).await?;
        transaction.commit().await?;
        // Only the first of several entries with one id was stored.
        Ok(events.iter().map(|event| new.remove(&event.id)).collect())
    }

    /// Events after `seq`, oldest first.
    pub async fn events_after(&self, seq: i64, limit: u32) -> Result<Vec<BusEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, body, received_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get(2)?;
                Ok(BusEvent {
                    seq: row.try_get(0)?,
                    event_id: row.try_get(1)?,
                    envelope: serde_json::from_str(&body)
                        .map_err(|e| StoreError::corrupt("event", e))?,
                    received_at: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Counts an open event stream until the returned guard is dropped: job events are stored
    /// meanwhile, so a watcher sees them even when no rule listens.
    pub fn watch_events(&self) -> WatchGuard {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        WatchGuard {
            watchers: self.watchers.clone(),
        }
    }

    /// The sequence number of the newest event (0 on an empty bus).
    pub async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    pub async fn bus_cursor(&self, name: &str) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM bus_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    pub async fn set_bus_cursor(&self, name: &str, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bus_cursors (name, seq) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        )
        .bind(name)
        .bind(seq)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Every event rule.
    pub async fn event_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        let parsed = self
            .parsed_resources::<(EventRule, SubmitTemplate)>(Kind::EventRule)
            .await?;
        Ok(parsed
            .into_iter()
            .map(|parsed| StoredRule {
                rule: parsed.model.0,
                target: parsed.model.1,
                created_at: parsed.created_at,
            })
            .collect())
    }

    /// Whether a rule has handled an event.
    pub async fn delivered(&self, event_id: &str, rule: &str) -> Result<bool, StoreError> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT outcome FROM rule_deliveries WHERE event_id = $1 AND rule = $2",
        )
        .bind(event_id)
        .bind(rule)
        .fetch_optional(&self.read)
        .await?;
        Ok(found.is_some())
    }

    /// Submits a rule's job for an event: the delivery row and the job in one transaction. False
    /// (and no job) if the rule already handled the event.
    pub async fn deliver(
        &self,
        event_id: &str,
        rule: &str,
        job: &Job,
        now: i64,
    ) -> Result<bool, StoreError> {
        let record = sqlx::query(
            "INSERT INTO rule_deliveries (event_id, rule, outcome, job_id, recorded_at) \
             VALUES ($1, $2, 'SUBMITTED', $3, $4) ON CONFLICT (event_id, rule) DO NOTHING",
        )
        .bind(event_id)
        .bind(rule)
        .bind(&job.job_id.0)
        .bind(now);
        self.record_once_with_job(("event_rules", rule), record, job)
            .await
    }

    /// Records that a rule's target could not be submitted for an event, and why.
    pub async fn record_failed_delivery(
        &self,
        event_id: &str,
        rule: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rule_deliveries (event_id, rule, outcome, reason, recorded_at) \
             VALUES ($1, $2, 'FAILED', $3, $4) ON CONFLICT (event_id, rule) DO NOTHING",
        )
        .bind(event_id)
        .bind(rule)
        .bind(reason)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The deliveries of a rule, newest first: (event id, outcome, job id, reason).
    pub async fn rule_deliveries(
        &self,
        rule: &str,
        limit: u32,
    ) -> Result<Vec<(String, String, Option<String>, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, outcome, job_id, reason FROM rule_deliveries WHERE rule = $1 \
             ORDER BY recorded_at DESC LIMIT $2",
        )
        .bind(rule)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ))
            })
            .collect()
    }
}

impl Store {
    /// Every webhook trigger, by name, its secrets as stored (sealed): for listing, which shows
    /// only how many there are.
    pub async fn webhook_triggers(&self) -> Result<Vec<WebhookTrigger>, StoreError> {
        let parsed = self
            .parsed_resources::<WebhookTrigger>(Kind::WebhookTrigger)
            .await?;
        Ok(parsed.into_iter().map(|parsed| parsed.model).collect())
    }

    /// A webhook trigger by name.
    pub async fn webhook_trigger(&self, name: &str) -> Result<Option<WebhookTrigger>, StoreError> {
        let parsed = self
            .parsed_resources::<WebhookTrigger>(Kind::WebhookTrigger)
            .await?;
        parsed
            .into_iter()
            .map(|parsed| parsed.model)
            .find(|trigger| trigger.name == name)
            .map(|trigger| self.unsealed_trigger(trigger))
            .transpose()
    }
}

impl Store {
    /// Forgets events received before `cutoff` that every reader of the bus (the rule runner and
    /// the notifier) has passed, with the rule deliveries and sent notifications recorded before
    /// it. Dead letters stay until redriven. Returns how many events were removed.
    pub async fn prune_bus(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut transaction = self.write.begin().await?;
        let removed = sqlx::query(
            "DELETE FROM events WHERE received_at < $1 \
             AND seq <= COALESCE((SELECT seq FROM bus_cursors WHERE name = 'rules'), 0) \
             AND seq <= COALESCE((SELECT seq FROM bus_cursors WHERE name = 'notifications'), 0)",
        )
        .bind(cutoff)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM rule_deliveries WHERE recorded_at < $1")
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "DELETE FROM notification_deliveries WHERE status = 'DELIVERED' AND updated_at < $1",
        )
        .bind(cutoff)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(removed)
    }
}
