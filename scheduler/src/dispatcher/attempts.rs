//! Supervisors' reports applied in batches (`core::retry::decide_attempt_end`), and terminate
//! requests passed on to the supervisors.

use super::*;

impl Dispatcher {
    /// Applies a batch of supervisor reports in one transaction. True if a job finished
    /// (SUCCEEDED or FAILED), which is what may move the jobs that depend on it.
    pub(super) async fn apply_events(
        &mut self,
        events: Vec<AttemptEvent>,
    ) -> Result<bool, DispatchError> {
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
        let mut after: Vec<Option<Removal>> = Vec::new();
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
                    after.push(None);
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
                    let active = self.active.remove(&job_id).expect("present");
                    self.backing_off.insert(
                        active.environment.clone(),
                        tokio::time::Instant::now() + UNAVAILABLE_BACKOFF,
                    );
                    self.release(&active.environment, &active.reserved);
                    after.push(None);
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
                    let active = self.active.remove(&job_id).expect("present");
                    if let (Verdict::Succeeded, Some(started)) =
                        (judgement.verdict, active.started_at)
                    {
                        self.handle
                            .record_run(&active.subject.definition, at - started);
                    }
                    self.release(&active.environment, &active.reserved);
                    self.record_share_usage(&active, at);
                    after.push(active.executor.map(|executor| Removal {
                        job_id,
                        handle: active.handle,
                        executor,
                    }));
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
        let applied = self.write_transitions(&transitions, now).await?;
        let finished = transitions
            .iter()
            .zip(&applied)
            .any(|(transition, applied)| *applied && transition.to.is_terminal());
        for (((transition, applied), cleanup), told) in
            transitions.iter().zip(applied).zip(after).zip(observed)
        {
            if !applied {
                tracing::warn!(job_id = %transition.job_id, from = %transition.from, to = %transition.to, "transition lost a compare-and-set");
            } else {
                for observation in told {
                    observation.report(self.handle.metrics());
                }
            }
            if let Some(Removal {
                job_id,
                handle,
                executor,
            }) = cleanup
            {
                // The outcome and logs are durable now; the executor can forget the attempt.
                tokio::spawn(async move {
                    if let Err(error) = executor.remove(&handle).await {
                        tracing::warn!(%job_id, %error, "could not remove a finished attempt");
                    }
                });
            }
        }
        Ok(finished)
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

/// Passes a stop request to an attempt's supervisor, unless one was passed already.
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

fn ask_to_stop(active: &ActiveAttempt, request: StopRequest) {
    active.stop.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            *current = Some(request);
        }
        first
    });
}
