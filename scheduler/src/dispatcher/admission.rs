//! Admission: SUBMITTED jobs of each queue to PENDING or RUNNABLE, dependencies resolved, array
//! parents ended, RUNNABLE jobs over their queue's time limit cancelled.

use super::*;

impl Dispatcher {
    /// Admits the oldest submitted jobs: SUBMITTED → PENDING, and on to RUNNABLE at once for jobs
    /// without dependencies. Then PENDING jobs move on: to RUNNABLE when every job they depend on
    /// SUCCEEDED, to FAILED when one of them FAILED; and a capped array's children to RUNNABLE as
    /// its `maxConcurrency` leaves room (`release_capped_children`).
    /// Queues are asked when their counters hold SUBMITTED jobs, and all of them at a poll
    /// (`every_queue`), so that admission never depends on the counters alone.
    pub(super) async fn admit(&mut self, every_queue: bool) -> Result<u64, DispatchError> {
        let now = now_millis();
        let pending = transition(JobStatus::Submitted, JobEvent::Admitted)?;
        let runnable = transition(pending, JobEvent::DependenciesSatisfied)?;
        let failed = transition(pending, JobEvent::DependencyFailed)?;
        let (mut ready, mut waiting) = (0, 0);
        if self.admission_due {
            // Each queue in turn, highest priority first, a batch each: a backlog of one queue
            // (a 100,000-child array) never holds up the jobs of another.
            self.admission_due = false;
            let submitted = self.store.queues_with(JobStatus::Submitted).await?;
            let mut queues: Vec<&JobQueue> = self
                .queues
                .iter()
                .filter(|queue| every_queue || submitted.contains(queue.name.as_str()))
                .collect();
            queues.sort_by_key(|queue| std::cmp::Reverse(queue.priority));
            for queue in queues {
                let moved = self
                    .store
                    .admit_submitted(&queue.name, runnable, pending, self.config.batch_size, now)
                    .await?;
                ready += moved.0;
                waiting += moved.1;
                // A full batch may have left more behind.
                self.admission_due |= moved.0 + moved.1 >= u64::from(self.config.batch_size);
            }
        }
        self.waiters_exist |= waiting > 0;
        let mut resolved = 0;
        if self.waiters_exist && (waiting > 0 || self.dependencies_dirty) {
            self.dependencies_dirty = false;
            resolved = self
                .store
                .resolve_dependencies(failed, runnable, now)
                .await?;
            resolved += self.finish_arrays(now).await?;
            // A slot of a capped array frees when one of its children ends, which is also
            // what makes dependencies worth resolving again.
            resolved += self.store.release_capped_children(runnable, now).await?;
            // A failure can cascade to the jobs that depend on the ones just failed.
            self.dependencies_dirty = resolved > 0;
            self.waiters_exist = !self.store.queues_with(JobStatus::Pending).await?.is_empty();
        }
        let moved = ready + waiting + resolved;
        if ready + resolved > 0 {
            self.placement_dirty = true;
        }
        Ok(moved)
    }

    /// Carries out the queues' `jobStateTimeLimitActions`: cancels jobs RUNNABLE for too long.
    pub(super) async fn cancel_jobs_over_time_limits(&mut self) -> Result<u64, DispatchError> {
        let now = now_millis();
        let cancelled = transition(JobStatus::Runnable, JobEvent::Cancelled)?;
        let mut moved = 0;
        for queue in &self.queues {
            let Some((limit, cutoff)) = runnable_cutoff(queue, now) else {
                continue;
            };
            let n = self
                .store
                .cancel_runnable_since(&queue.name, cutoff, cancelled, &limit.reason, now)
                .await?;
            if n > 0 {
                tracing::info!(queue = %queue.name, jobs = n, reason = %limit.reason, "cancelled jobs RUNNABLE beyond the queue's time limit");
            }
            moved += n;
        }
        Ok(moved)
    }

    /// Ends the array parents whose children have all finished: SUCCEEDED if every child did (or
    /// the array's success policy tolerates those that failed), otherwise FAILED, as AWS Batch.
    pub(super) async fn finish_arrays(&mut self, now: i64) -> Result<u64, DispatchError> {
        let finished = self.store.finished_arrays().await?;
        if finished.is_empty() {
            return Ok(0);
        }
        let mut ended = Vec::with_capacity(finished.len());
        for array in &finished {
            // Only a `succeededIndexes` policy with failed children needs the children read.
            let failed_in_required_indexes = match &array.policy {
                ArraySuccessPolicy::SucceededIndexes(ranges) if array.n_failed > 0 => {
                    self.store.failed_children_in(&array.job_id, ranges).await?
                }
                ArraySuccessPolicy::SucceededIndexes(_)
                | ArraySuccessPolicy::AllChildren
                | ArraySuccessPolicy::MaxFailedChildren(_) => array.n_failed,
            };
            ended.push(ChildrenEnded {
                size: array.size,
                failed: array.n_failed,
                failed_in_required_indexes,
            });
        }
        let transitions = finished
            .iter()
            .zip(ended)
            .map(|(array, children)| {
                let ArrayEnd { outcome, reason } =
                    decide_array_end(children, &array.policy, array.stop_reason.as_deref());
                let to = transition(JobStatus::Pending, JobEvent::ArrayChildrenEnded(outcome))?;
                Ok(Transition {
                    job_id: array.job_id.clone(),
                    from: JobStatus::Pending,
                    to,
                    effect: Effect::ArrayEnded { reason, at: now },
                })
            })
            .collect::<Result<Vec<_>, TransitionError>>()?;
        let applied = self.store.apply_transitions(&transitions, now).await?;
        Ok(applied.into_iter().filter(|applied| *applied).count() as u64)
    }
}
