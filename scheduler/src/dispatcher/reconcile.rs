//! Reconcile at start (or on taking the lease): each STARTING or RUNNING job adopted, requeued or
//! failed by what its executor holds (`core::reconcile`), and attempts no job owns removed.

use super::*;

impl Dispatcher {
    /// Matches STARTING and RUNNING jobs with what the executors hold after a restart: adopts what
    /// runs or has finished, re-queues what never started, fails what vanished, and removes what no
    /// job owns.
    pub(super) async fn reconcile(&mut self) -> Result<(), DispatchError> {
        self.load_resources().await?;
        self.ledgers = self.store.share_ledgers().await?;
        let environments: Vec<ComputeEnvironment> = self.environments.values().cloned().collect();
        for environment in &environments {
            self.executors.for_environment(environment);
        }
        let mut listed = HashMap::new();
        let mut unlisted: Vec<Arc<dyn Executor>> = Vec::new();
        for executor in self.executors.all() {
            let attempts = match executor.list().await {
                Ok(attempts) => attempts,
                Err(error) if error.is_retryable() => {
                    // An engine that is down now: what it holds cannot be known, so its jobs are
                    // adopted as they are and their supervisors wait for it to answer.
                    tracing::warn!(%error, "cannot list an executor's attempts; adopting its jobs unchecked");
                    unlisted.push(executor);
                    continue;
                }
                Err(error) => return Err(StoreError::corrupt("executor listing", error).into()),
            };
            for attempt in attempts {
                listed.insert(attempt.handle.clone(), (attempt, Arc::clone(&executor)));
            }
        }
        let active_jobs = self.store.active_jobs().await?;
        let mut transitions = Vec::new();
        let now = now_millis();
        for job in active_jobs {
            let Some(attempt) = job.current_attempt.clone() else {
                continue;
            };
            let reserved = job.spec.container.resources;
            let handle = AttemptHandle(attempt.executor_handle.clone());
            let executor_unlisted = self
                .environments
                .get(&attempt.compute_environment)
                .cloned()
                .and_then(|environment| self.executors.for_environment(&environment))
                .is_some_and(|executor| unlisted.iter().any(|u| Arc::ptr_eq(u, &executor)));
            let observed = if executor_unlisted {
                Some(ObservedState::Running)
            } else {
                listed.remove(&handle).map(|(listed, _)| listed.state)
            };
            match reconcile_action(observed.as_ref(), job.status) {
                ReconcileAction::Adopt { confirmed_running } => {
                    tracing::info!(job_id = %job.job_id, attempt = attempt.number, "adopting attempt after restart");
                    let in_use = self
                        .used
                        .entry(attempt.compute_environment.clone())
                        .or_default();
                    *in_use = in_use.plus(&reserved);
                    self.spawn_supervisor(job, Takeover::Adopt { confirmed_running }, reserved);
                }
                ReconcileAction::Requeue { reason } => {
                    transitions.push(Transition {
                        job_id: job.job_id.clone(),
                        from: job.status,
                        to: transition(job.status, JobEvent::StartDeferred)?,
                        effect: Effect::Deferred {
                            reason: reason.into(),
                        },
                    });
                }
                ReconcileAction::FailLost { reason } => {
                    transitions.push(Transition {
                        job_id: job.job_id.clone(),
                        from: job.status,
                        to: transition(job.status, JobEvent::AttemptEnded(Verdict::Failed))?,
                        effect: Effect::AttemptEnded {
                            attempt: Attempt {
                                number: attempt.number,
                                compute_environment: attempt.compute_environment.clone(),
                                exit_code: None,
                                status_reason: reason.into(),
                                started_at: attempt.started_at,
                                stopped_at: now,
                                resources: Some(job.spec.container.resources),
                            },
                            runnable_after: None,
                            disruption: false,
                            next_resources: None,
                        },
                    });
                }
                ReconcileAction::Leave => {}
            }
        }
        if !transitions.is_empty() {
            write_transitions(&self.store, &self.cancel, &transitions, now).await?;
        }
        for (handle, (attempt, executor)) in listed {
            tracing::warn!(handle = %handle.0, job_id = %attempt.job_id, "removing an attempt no job owns");
            if attempt.state == ObservedState::Running {
                let _ = executor.kill(&handle, self.config.kill_grace).await;
                let _ = executor.wait(&handle).await;
            }
            if let Err(error) = executor.remove(&handle).await {
                tracing::warn!(handle = %handle.0, %error, "could not remove an orphaned attempt");
            }
        }
        Ok(())
    }
}
