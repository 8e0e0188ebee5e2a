//! Supervisors' reports applied in batches (`core::retry::decide_attempt_end`), and terminate
//! requests passed on to the supervisors.

use super::*;

impl Dispatcher {
    /// Turns a batch of supervisor reports into transitions (`core::retry::decide_attempt_end`,
    /// the state machine), to be written in one transaction by `write_transitions` and then
    /// settled. Memory changes here only as far as nothing acts on it before the write: statuses
    /// and starts; an attempt that ended or was not handed over stays in `active`, holding its
    /// capacity, until `settle_reports` sees its end committed.
    pub(super) async fn decide_reports(
        &mut self,
        events: Vec<AttemptEvent>,
    ) -> Result<Reports, DispatchError> {
        let now = now_millis();
        // The starts held from earlier passes come first: they were reported before these.
        let due = tokio::time::Instant::now();
        let hold_until = due + START_HOLD;
        let mut reports = std::mem::take(&mut self.held_starts);
        reports.extend(events.into_iter().map(|event| (event, hold_until)));
        // Attempts that start and end within these reports (short work) are written as one move
        // from STARTING to their end, carrying the start: one row version instead of two. A
        // start whose end has not come is held for `START_HOLD` first.
        let ending: std::collections::HashSet<(JobId, u32)> = reports
            .iter()
            .map(|(event, _)| event)
            .filter_map(|event| match event {
                AttemptEvent::Ended { job_id, number, .. } => Some((job_id.clone(), *number)),
                AttemptEvent::Started { .. }
                | AttemptEvent::Deferred { .. }
                | AttemptEvent::Waiting { .. } => None,
            })
            .collect();
        let mut transitions = Vec::with_capacity(reports.len());
        // What to do for each transition once it is committed.
        let mut after: Vec<AfterWrite> = Vec::new();
        // What each transition tells the metrics, reported only once it is committed (a start
        // folded into its end is told with the end).
        let mut observed: Vec<Vec<Observed>> = Vec::new();
        let mut folded_starts: HashMap<JobId, Observed> = HashMap::new();
        for (event, until) in reports {
            let job_id = match &event {
                AttemptEvent::Started { job_id, .. }
                | AttemptEvent::Deferred { job_id, .. }
                | AttemptEvent::Waiting { job_id, .. }
                | AttemptEvent::Ended { job_id, .. } => job_id.clone(),
            };
            let Some(active) = self.active.get_mut(&job_id) else {
                tracing::warn!(%job_id, "report for an attempt the dispatcher does not hold");
                continue;
            };
            match event {
                AttemptEvent::Started { number, at, .. }
                    if number == active.number && ending.contains(&(job_id.clone(), number)) =>
                {
                    // Checked all the same, so a start the state machine refuses still fails.
                    transition(active.status, JobEvent::Started)?;
                    self.handle.set_health(&active.environment, None);
                    active.started_at = Some(at);
                    if let Some(start) = first_start(active, number, at) {
                        folded_starts.insert(job_id.clone(), start);
                    }
                }
                AttemptEvent::Started { number, at, .. }
                    if number == active.number && until > due =>
                {
                    transition(active.status, JobEvent::Started)?;
                    self.handle.set_health(&active.environment, None);
                    // Time limits count from the start, written or not.
                    active.started_at = Some(at);
                    self.held_starts.push((event, until));
                }
                AttemptEvent::Started { number, at, .. } if number == active.number => {
                    let to = transition(active.status, JobEvent::Started)?;
                    self.handle.set_health(&active.environment, None);
                    transitions.push(Transition {
                        job_id,
                        from: active.status,
                        to,
                        effect: Effect::Started { at },
                    });
                    active.status = to;
                    active.started_at = Some(at);
                    observed.push(first_start(active, number, at).into_iter().collect());
                    after.push(AfterWrite::Stays);
                }
                AttemptEvent::Deferred { number, reason, .. } if number == active.number => {
                    let to = transition(active.status, JobEvent::StartDeferred)?;
                    self.handle.set_health(&active.environment, Some(&reason));
                    observed.push(vec![Observed::ExecutorError {
                        environment: active.environment.to_string(),
                    }]);
                    transitions.push(Transition {
                        job_id: job_id.clone(),
                        from: active.status,
                        to,
                        effect: Effect::Deferred { reason },
                    });
                    // The executor's health is an observation, not a decision: placement
                    // leaves the environment alone from now on.
                    self.backing_off.insert(
                        active.environment.clone(),
                        tokio::time::Instant::now() + UNAVAILABLE_BACKOFF,
                    );
                    after.push(AfterWrite::Leaves { number, end: None });
                }
                AttemptEvent::Ended {
                    number,
                    outcome,
                    stop_cause,
                    at,
                    ..
                } if number == active.number => {
                    let AttemptEnd {
                        judgement,
                        runnable_after,
                    } = decide_attempt_end(
                        &outcome,
                        stop_cause.as_ref(),
                        AttemptCount {
                            number,
                            disruptions: active.disruptions,
                        },
                        &active.retry,
                        at,
                        rand_fraction(),
                    );
                    let to = transition(active.status, JobEvent::AttemptEnded(judgement.verdict))?;
                    let mut told: Vec<Observed> =
                        folded_starts.remove(&job_id).into_iter().collect();
                    told.push(Observed::End {
                        queue: active.queue.to_string(),
                        class: crate::core::retry::EndClass::of(&outcome, stop_cause.as_ref()),
                        ran_seconds: active
                            .started_at
                            .map(|started| (at - started) as f64 / 1000.0),
                    });
                    observed.push(told);
                    tracing::info!(%job_id, attempt = number, status = %to, reason = %judgement.reason, "attempt ended");
                    transitions.push(Transition {
                        job_id: job_id.clone(),
                        from: active.status,
                        to,
                        effect: Effect::AttemptEnded {
                            attempt: Attempt {
                                number,
                                compute_environment: active.environment.clone(),
                                exit_code: judgement.exit_code,
                                status_reason: judgement.reason,
                                started_at: active.started_at,
                                stopped_at: at,
                                resources: Some(active.reserved),
                            },
                            runnable_after,
                            disruption: judgement.disruption,
                            // Grown from what this attempt had; placement reserves the new
                            // amounts, read from the job's row, for the next one.
                            next_resources: judgement
                                .adjustments
                                .map(|adjustments| adjustments.apply(active.reserved)),
                        },
                    });
                    after.push(AfterWrite::Leaves {
                        number,
                        end: Some(Ending {
                            at,
                            succeeded: judgement.verdict == Verdict::Succeeded,
                        }),
                    });
                }
                AttemptEvent::Waiting { number, reason, .. } if number == active.number => {
                    // Not a transition: the job stays STARTING, with the reason shown. A reason
                    // that cannot be written now is only shown later.
                    if let Err(error) = self
                        .store
                        .set_starting_reason(&job_id, number, &reason, now_millis())
                        .await
                    {
                        tracing::warn!(%job_id, %error, "cannot record why the attempt waits");
                    }
                }
                AttemptEvent::Started { number, .. }
                | AttemptEvent::Deferred { number, .. }
                | AttemptEvent::Waiting { number, .. }
                | AttemptEvent::Ended { number, .. } => {
                    tracing::warn!(%job_id, attempt = number, current = active.number, "report for a superseded attempt");
                }
            }
        }
        Ok(Reports {
            transitions,
            after,
            observed,
            now,
        })
    }

    /// What memory does once `reports` were written (`applied`, per transition): an attempt that
    /// ended or was not handed over leaves `active` and frees its capacity, its run counts into
    /// the typical run and its share's usage, the executor may forget it, and the metrics are
    /// told. True if a job finished (SUCCEEDED or FAILED), which is what may move the jobs that
    /// depend on it.
    pub(super) fn settle_reports(&mut self, reports: Reports, applied: &[bool]) -> bool {
        let Reports {
            transitions,
            after,
            observed,
            now: _,
        } = reports;
        let finished = transitions
            .iter()
            .zip(applied)
            .any(|(transition, applied)| *applied && transition.to.is_terminal());
        for (((transition, applied), after), told) in transitions
            .into_iter()
            .zip(applied)
            .zip(after)
            .zip(observed)
        {
            if !applied {
                tracing::warn!(job_id = %transition.job_id, from = %transition.from, to = %transition.to, "transition lost a compare-and-set");
            } else {
                for observation in told {
                    observation.report(self.handle.metrics());
                }
            }
            let AfterWrite::Leaves { number, end } = after else {
                continue;
            };
            let job_id = transition.job_id;
            if self.active.get(&job_id).map(|active| active.number) != Some(number) {
                tracing::warn!(%job_id, attempt = number, "settled attempt no longer held");
                continue;
            }
            let active = self.active.remove(&job_id).expect("present");
            self.release(&active.environment, &active.reserved);
            let Some(Ending { at, succeeded }) = end else {
                continue;
            };
            if let (true, Some(started)) = (succeeded, active.started_at) {
                self.handle
                    .record_run(&active.subject.definition, at - started);
            }
            self.record_share_usage(&active, at);
            if let Some(executor) = active.executor {
                let handle = active.handle;
                // The outcome and logs are durable now; the executor can forget the attempt.
                tokio::spawn(async move {
                    if let Err(error) = executor.remove(&handle).await {
                        tracing::warn!(%job_id, %error, "could not remove a finished attempt");
                    }
                });
            }
        }
        finished
    }

    pub(super) async fn deliver_stop_requests(&mut self) -> Result<(), DispatchError> {
        if self.active.is_empty() {
            return Ok(());
        }
        for (job_id, reason) in self.store.stop_requests().await? {
            if let Some(active) = self.active.get(&job_id) {
                ask_to_stop(
                    active,
                    StopRequest {
                        reason,
                        drain: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// Stops the attempts of queues whose `stopPolicy` is `HoldAndDrain`; their jobs go back to
    /// RUNNABLE (`StopCause::Drained`). Memory only: after a restart the next pass drains again.
    pub(super) fn drain_queues(&self) {
        let draining: Vec<&JobQueue> = self.queues.iter().filter(|queue| queue.drain).collect();
        if draining.is_empty() {
            return;
        }
        for active in self.active.values() {
            if let Some(queue) = draining.iter().find(|queue| queue.name == active.queue) {
                ask_to_stop(
                    active,
                    StopRequest {
                        reason: format!(
                            "Drained: queue {} has stopPolicy HoldAndDrain; requeued",
                            queue.name
                        ),
                        drain: true,
                    },
                );
            }
        }
    }
}

/// Supervisor reports decided (`decide_reports`), to be written and then settled.
pub(super) struct Reports {
    pub(super) transitions: Vec<Transition>,
    /// Per transition, what memory does once it is written.
    after: Vec<AfterWrite>,
    /// Per transition, what it tells the metrics once committed (a start folded into its end
    /// is told with the end).
    observed: Vec<Vec<Observed>>,
    pub(super) now: i64,
}

/// What a written transition changes in memory beyond the status `decide_reports` set.
enum AfterWrite {
    Stays,
    /// Attempt `number` leaves the dispatcher's hold: it was not handed over (`end` is `None`)
    /// or it ended.
    Leaves {
        number: u32,
        end: Option<Ending>,
    },
}

struct Ending {
    at: i64,
    succeeded: bool,
}

/// What a committed transition tells the metrics.
enum Observed {
    QueueWait {
        queue: String,
        seconds: f64,
    },
    End {
        queue: String,
        class: crate::core::retry::EndClass,
        ran_seconds: Option<f64>,
    },
    ExecutorError {
        environment: String,
    },
}

impl Observed {
    fn report(self, metrics: &crate::metrics::Metrics) {
        match self {
            Observed::QueueWait { queue, seconds } => metrics.observe_queue_wait(&queue, seconds),
            Observed::End {
                queue,
                class,
                ran_seconds,
            } => metrics.observe_attempt_end(&queue, class, ran_seconds),
            Observed::ExecutorError { environment } => metrics.count_executor_error(&environment),
        }
    }
}

/// A first attempt's start ends the job's wait in its queue.
fn first_start(active: &ActiveAttempt, number: u32, at: i64) -> Option<Observed> {
    (number == 1).then(|| Observed::QueueWait {
        queue: active.queue.to_string(),
        seconds: (at - active.submitted_at) as f64 / 1000.0,
    })
}

/// Passes a stop request to an attempt's supervisor, unless one was passed already.
fn ask_to_stop(active: &ActiveAttempt, request: StopRequest) {
    active.stop.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            *current = Some(request);
        }
        first
    });
}
