//! The rule runner: reads the event bus in order and submits each matching rule's job. The
//! matching is `core::event_pattern`; the carrying of values is `core::events`.
//!
//! Invariants:
//! - A rule's job for an event is submitted in the transaction that records the delivery
//!   (`Store::deliver`, keyed by event id and rule), so a crash between accepting an event and
//!   submitting its job neither loses the job (the event is re-read) nor doubles it.
//! - The bus cursor only moves past events that are settled (received more than `SETTLE` ago):
//!   on Postgres a later sequence number can commit before an earlier one, so recent events are
//!   read again until no earlier one can still appear; deliveries make the re-reads harmless.
//! - A rule sees only events received after it was created.
//! - A target that cannot be submitted is recorded FAILED with why, never dropped silently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::attempt::{origin_variables, JobOrigin};
use crate::core::events::{
    chain_step, fill_placeholders, input_values, rule_loop_detected, ChainStep,
};
use crate::dispatcher::DispatcherHandle;
use crate::manifest::SubmitJobRequest;
use crate::outage::{AfterWait, Outage};
use crate::store::{now_millis, BusEvent, Store, StoreError, StoredRule};

/// The cursor's name in `bus_cursors`.
const CURSOR: &str = "rules";
const SETTLE: Duration = Duration::from_secs(5);
const BATCH: u32 = 256;
const POLL: Duration = Duration::from_millis(500);

/// Wakes the rule runner when events or rules arrive.
#[derive(Clone, Default)]
pub struct RuleHandle {
    wake: Arc<Notify>,
}

impl RuleHandle {
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

pub struct RuleRunner {
    store: Store,
    dispatcher: DispatcherHandle,
    handle: RuleHandle,
}

impl RuleRunner {
    pub fn new(store: Store, dispatcher: DispatcherHandle) -> RuleRunner {
        RuleRunner {
            store,
            dispatcher,
            handle: RuleHandle::default(),
        }
    }

    pub fn handle(&self) -> RuleHandle {
        self.handle.clone()
    }

    /// Takes wake-ups from a handle made before this runner (the API's).
    pub fn with_handle(mut self, handle: RuleHandle) -> RuleRunner {
        self.handle = handle;
        self
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut outage = Outage::new("rule runner");
        loop {
            let more = match self.run_once().await {
                Ok(more) => {
                    outage.recovered();
                    more
                }
                Err(error) if error.is_retryable() => {
                    if outage.wait(&error, &cancel).await == AfterWait::Stop {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "matching events failed; trying again");
                    false
                }
            };
            if more {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.handle.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Records a delivery that made no job, with why, and counts it under `outcome`.
    async fn fail_delivery(
        &self,
        event_id: &str,
        rule: &str,
        reason: &str,
        outcome: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.store
            .record_failed_delivery(event_id, rule, reason, now)
            .await?;
        self.dispatcher.metrics().count_rule_delivery(rule, outcome);
        Ok(())
    }

    /// One pass over the events after the cursor; true if a full batch was settled (read on).
    pub async fn run_once(&self) -> Result<bool, StoreError> {
        // Rules applied through another server change what job events are worth storing.
        self.store.refresh_job_event_interest().await?;
        let cursor = self.store.bus_cursor(CURSOR).await?;
        let events = self.store.events_after(cursor, BATCH).await?;
        if events.is_empty() {
            return Ok(false);
        }
        let rules: Vec<StoredRule> = self
            .store
            .event_rules()
            .await?
            .into_iter()
            .filter(|rule| rule.rule.enabled)
            .collect();
        for event in &events {
            for rule in &rules {
                self.consider(event, rule).await?;
            }
        }
        let settled_before = now_millis() - SETTLE.as_millis() as i64;
        let settled = events
            .iter()
            .take_while(|event| event.received_at <= settled_before)
            .last();
        if let Some(last) = settled {
            self.store.set_bus_cursor(CURSOR, last.seq).await?;
        }
        Ok(settled.is_some_and(|_| events.len() == BATCH as usize))
    }

    async fn consider(&self, event: &BusEvent, stored: &StoredRule) -> Result<(), StoreError> {
        let rule = &stored.rule;
        if event.received_at < stored.created_at || !rule.pattern.matches(&event.envelope) {
            return Ok(());
        }
        if self.store.delivered(&event.event_id, &rule.name).await? {
            return Ok(());
        }
        let now = now_millis();
        let depth = match chain_step(&event.envelope, rule.max_chain_depth) {
            ChainStep::Submit { depth } => depth,
            ChainStep::Cut { depth, announce } => {
                let reason = format!(
                    "loop detected: this event comes from a chain of {} rule deliveries; the rule allows {} (maxChainDepth)",
                    depth - 1,
                    rule.max_chain_depth
                );
                tracing::warn!(rule = %rule.name, event_id = %event.event_id, %reason, "rule loop cut");
                let announcement = announce.then(|| {
                    rule_loop_detected(
                        &rule.name,
                        &event.event_id,
                        depth,
                        rule.max_chain_depth,
                        &format!("{}-loop-{}", rule.name, event.event_id),
                        chrono::Utc::now(),
                    )
                });
                // Announced first: a crash in between announces again rather than not at all.
                if let Some(announcement) = announcement {
                    self.store.put_events(&[announcement], now).await?;
                }
                return self
                    .fail_delivery(&event.event_id, &rule.name, &reason, "loop_cut", now)
                    .await;
            }
        };
        let values = input_values(&rule.input_paths, &event.envelope);
        let built = match crate::manifest::submit_request(&stored.target) {
            Ok(target) => {
                let request = transformed(&target, &values);
                crate::submission::build_from_store(&self.store, &request, None, now, "target.")
                    .await?
            }
            Err(error) => Err(error),
        };
        match built {
            Ok(mut job) => {
                job.spec.chain_depth = depth;
                job.spec
                    .container
                    .environment
                    .extend(origin_variables(JobOrigin::Rule {
                        event_id: &event.event_id,
                        rule: &rule.name,
                    }));
                if self
                    .store
                    .deliver(&event.event_id, &rule.name, &job, now)
                    .await?
                {
                    tracing::info!(rule = %rule.name, event_id = %event.event_id, job_id = %job.job_id, "rule submitted a job");
                    self.dispatcher
                        .metrics()
                        .count_rule_delivery(&rule.name, "submitted");
                    self.dispatcher.notify_work();
                }
            }
            Err(error) => {
                let reason = format!("the target cannot be submitted: {error}");
                tracing::error!(rule = %rule.name, event_id = %event.event_id, %reason, "rule failed");
                self.fail_delivery(&event.event_id, &rule.name, &reason, "failed", now)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The target with each `<name>` of the input transformer filled in: in parameters, the
/// command, and environment values.
fn transformed(target: &SubmitJobRequest, values: &BTreeMap<String, String>) -> SubmitJobRequest {
    let mut request = target.clone();
    request.parameters = target
        .parameters
        .iter()
        .map(|(name, value)| (name.clone(), fill_placeholders(value, values)))
        .collect();
    if let Some(overrides) = &mut request.container_overrides {
        if let Some(command) = &mut overrides.command {
            *command = command
                .iter()
                .map(|word| fill_placeholders(word, values))
                .collect();
        }
        for variable in &mut overrides.environment {
            variable.value = fill_placeholders(&variable.value, values);
        }
    }
    request
}

/// How often the bus is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Forgets, once a minute, what the bus holds beyond `retention` (see `Store::prune_bus`).
pub async fn prune_bus_periodically(store: Store, retention: Duration, cancel: CancellationToken) {
    loop {
        let cutoff = now_millis() - retention.as_millis() as i64;
        match store.prune_bus(cutoff).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned events older than the retention"),
            Err(error) => tracing::warn!(%error, "pruning the event bus failed"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
