//! Placement: each queue's head planned against free capacity (`core::placement`, fair share),
//! committed STARTING before a supervisor is asked to start anything.

use super::*;
use crate::core::concurrency::{LimitBook, LimitKeys};
use crate::core::consumable::ConsumableBook;
use crate::core::placement::{has_room, plan_queue, queue_order, queue_slots, Bounds};

/// The first page of a FIFO queue's head a pass reads; each further page is four times larger.
const FIRST_HEAD_PAGE: u32 = 16;

impl Dispatcher {
    /// A fair-share queue's RUNNABLE jobs in the order shares take turns, cut to what
    /// `computeReservation` lets the queue place now.
    pub(super) fn fair_share_turns(
        &mut self,
        queue: &JobQueue,
        policy: &FairSharePolicy,
        waiting: &[&Job],
    ) -> Vec<JobId> {
        let now = now_millis();
        let ledger = self.ledgers.entry(queue.name.clone()).or_default();
        ledger.decay_to(policy, now);
        let running: Vec<RunningShareJob> = self
            .active
            .values()
            .filter(|active| active.queue == queue.name)
            .filter_map(|active| {
                Some(RunningShareJob {
                    share: active.share.clone()?,
                    vcpu_millis: active.reserved.vcpu_millis,
                    seconds: active
                        .started_at
                        .map_or(0.0, |started| (now - started).max(0) as f64 / 1000.0),
                })
            })
            .collect();
        let candidates = waiting
            .iter()
            .map(|job| ShareCandidate {
                job_id: job.job_id.clone(),
                needs: job.spec.container.resources,
                share: job.spec.share_identifier.clone().unwrap_or_default(),
                priority: job.spec.scheduling_priority,
            })
            .collect();
        let capacity: u64 = queue
            .compute_environments
            .iter()
            .filter_map(|name| self.environments.get(name))
            .map(|environment| environment.capacity.vcpu_millis)
            .sum();
        let (order, mut budget) = fair_share_order(policy, ledger, &running, candidates, capacity);
        self.handle
            .share_standings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.name.clone(), standings(policy, ledger, &running));
        order
            .into_iter()
            .filter(|candidate| {
                let fits = candidate.needs.vcpu_millis <= budget;
                if fits {
                    budget -= candidate.needs.vcpu_millis;
                }
                fits
            })
            .map(|candidate| candidate.job_id)
            .collect()
    }

    pub(super) fn record_share_usage(&mut self, active: &ActiveAttempt, ended_at: i64) {
        let (Some(share), Some(started_at)) = (&active.share, active.started_at) else {
            return;
        };
        let Some(policy) = self
            .queues
            .iter()
            .find(|queue| queue.name == active.queue)
            .and_then(|queue| queue.fair_share.as_ref())
        else {
            return;
        };
        let seconds = (ended_at - started_at).max(0) as f64 / 1000.0;
        let vcpus = active.reserved.vcpu_millis as f64 / 1000.0;
        self.ledgers
            .entry(active.queue.clone())
            .or_default()
            .record(policy, share, vcpus, seconds, ended_at);
        self.ledgers_dirty.insert(active.queue.clone());
    }

    /// Saves the ledgers that changed. One that cannot be saved now stays marked and is saved
    /// with the next change: at most that much usage is lost if the server stops meanwhile.
    pub(super) async fn save_share_ledgers(&mut self) {
        for queue in std::mem::take(&mut self.ledgers_dirty) {
            let Some(ledger) = self.ledgers.get(&queue) else {
                continue;
            };
            if let Err(error) = self.store.save_share_ledger(&queue, ledger).await {
                tracing::warn!(%queue, %error, "could not save fair-share usage; trying again later");
                self.ledgers_dirty.insert(queue);
            }
        }
    }

    pub(super) async fn load_resources(&mut self) -> Result<(), DispatchError> {
        self.queues = self.store.job_queues().await?;
        self.limits = self.store.concurrency_limits().await?;
        self.consumables = self.store.consumable_stock().await?;
        self.environments = self
            .store
            .compute_environments()
            .await?
            .into_iter()
            .map(|environment| (environment.name.clone(), environment))
            .collect();
        Ok(())
    }

    /// Places what fits now. Queues are planned in their serving order against a copy of the
    /// capacity in use; a FIFO queue's head is read page by page, growing, only while its
    /// environments still have room, so a long queue costs a pass what it can place, not its
    /// length (up to `batch_size` deep, for best-effort backfill).
    pub(super) async fn dispatch(&mut self) -> Result<usize, DispatchError> {
        let queues = self.queues.clone();
        let now_instant = tokio::time::Instant::now();
        self.backing_off.retain(|_, until| *until > now_instant);
        let mut environments = self.environments.clone();
        for name in self.backing_off.keys() {
            if let Some(environment) = environments.get_mut(name) {
                environment.state = ResourceState::Disabled;
            }
        }
        let mut used = self.used.clone();
        let mut plan = Vec::new();
        // The jobs read, by id. Boxed: a job is 1.2 KB, and a map growing page by page to
        // thousands of them moved every one at each rehash (a tenth of the loop's time in a
        // 4,096-job pass, with the fresh pages faulted in to hold them).
        let mut jobs: HashMap<JobId, Box<Job>> = HashMap::new();
        // Concurrency limits and consumable resources, counted from what runs now (every
        // attempt the leader holds) and what was used up.
        let limits = self.limits.clone();
        let mut bounds = Bounds {
            limits: LimitBook::new(&limits, self.active.values().map(|active| &active.subject)),
            consumables: ConsumableBook::new(
                &self.consumables,
                self.active
                    .values()
                    .map(|active| active.consumes.as_slice()),
            ),
        };
        // A job as placement weighs it: what it needs, the limits it counts against (keyed only
        // while some limit exists), the consumable resources it asks for.
        let candidate_of = |bounds: &Bounds<'_>, job: &Job| Candidate {
            job_id: job.job_id.clone(),
            needs: job.spec.container.resources,
            limits: if bounds.limits.is_empty() {
                LimitKeys::default()
            } else {
                bounds.limits.keys_of(&LimitSubject::of(job))
            },
            consumes: job.spec.consumable_resources.clone(),
        };
        for queue in queue_order(&queues) {
            // `maxRunningJobs`: what runs now is in memory (the leader holds every attempt);
            // counted only for a queue that has a cap, as a pass runs for every batch of reports.
            let running = match queue.max_running_jobs {
                Some(_) => self
                    .active
                    .values()
                    .filter(|active| active.queue == queue.name)
                    .count(),
                None => 0,
            };
            let mut slots = queue_slots(queue, running);
            if slots == 0 || !has_room(queue, &environments, &used) {
                continue;
            }
            if let Some(policy) = &queue.fair_share {
                // Each share's own head, so a share with a long backlog hides no other.
                let mut runnable = Vec::new();
                for share in self.store.runnable_shares(&queue.name).await? {
                    runnable.extend(
                        self.store
                            .runnable_jobs_of_share(
                                &queue.name,
                                share.as_deref(),
                                self.config.batch_size,
                                now_millis(),
                            )
                            .await?,
                    );
                }
                let waiting: Vec<&Job> = runnable
                    .iter()
                    .filter(|job| !self.active.contains_key(&job.job_id))
                    .collect();
                let by_id: HashMap<&JobId, &Job> =
                    waiting.iter().map(|job| (&job.job_id, *job)).collect();
                let candidates: Vec<Candidate> = self
                    .fair_share_turns(queue, policy, &waiting)
                    .iter()
                    .filter_map(|job_id| by_id.get(job_id))
                    .map(|job| candidate_of(&bounds, job))
                    .collect();
                plan.extend(plan_queue(
                    queue,
                    &environments,
                    &mut used,
                    &candidates,
                    slots,
                    &mut bounds,
                ));
                jobs.extend(
                    runnable
                        .into_iter()
                        .map(|job| (job.job_id.clone(), Box::new(job))),
                );
                continue;
            }
            let (mut after, mut read, mut page) = (0, 0, FIRST_HEAD_PAGE);
            while read < self.config.batch_size
                && slots > 0
                && has_room(queue, &environments, &used)
            {
                let limit = page.min(self.config.batch_size - read);
                let rows = self
                    .store
                    .runnable_jobs(&queue.name, after, limit, now_millis())
                    .await?;
                let n = rows.len() as u32;
                read += n;
                after = rows.last().map_or(after, |(seq, _)| *seq);
                let candidates: Vec<Candidate> = rows
                    .iter()
                    .filter(|(_, job)| !self.active.contains_key(&job.job_id))
                    .map(|(_, job)| candidate_of(&bounds, job))
                    .collect();
                let placed = plan_queue(
                    queue,
                    &environments,
                    &mut used,
                    &candidates,
                    slots,
                    &mut bounds,
                );
                slots -= placed.len();
                plan.extend(placed);
                jobs.extend(
                    rows.into_iter()
                        .map(|(_, job)| (job.job_id.clone(), Box::new(job))),
                );
                if n < limit {
                    break;
                }
                page = page.saturating_mul(4);
            }
        }
        // Name the GPUs of each placement that counted some, on environments whose devices have
        // ids: the lowest no running attempt there holds. Counting made room, so ids are free;
        // a placement that finds too few (ids listed short of maxGpus) waits for the next pass.
        // The devices in use are gathered only when a placement needs some: a pass placing
        // thousands of CPU jobs beside thousands of running ones does not walk them for this.
        let mut gpus_in_use: HashMap<EnvironmentName, std::collections::BTreeSet<String>> =
            HashMap::new();
        if plan.iter().any(|placement| placement.reserved.gpus > 0) {
            for active in self
                .active
                .values()
                .filter(|active| !active.gpu_ids.is_empty())
            {
                gpus_in_use
                    .entry(active.environment.clone())
                    .or_default()
                    .extend(active.gpu_ids.iter().cloned());
            }
        }
        let mut gpu_ids = Vec::with_capacity(plan.len());
        let mut named = Vec::with_capacity(plan.len());
        for placement in plan {
            let ids = match self.environments.get(&placement.environment) {
                Some(environment) if placement.reserved.gpus > 0 => {
                    let listed = crate::core::gpus::environment_gpu_ids(environment);
                    if listed.is_empty() {
                        Some(Vec::new())
                    } else {
                        let in_use = gpus_in_use
                            .entry(placement.environment.clone())
                            .or_default();
                        let ids =
                            crate::core::gpus::assign(&listed, in_use, placement.reserved.gpus);
                        in_use.extend(ids.iter().flatten().cloned());
                        ids
                    }
                }
                Some(_) | None => Some(Vec::new()),
            };
            match ids {
                Some(ids) => {
                    gpu_ids.push(ids);
                    named.push(placement);
                }
                None => {
                    if let Some(in_use) = used.get_mut(&placement.environment) {
                        *in_use = in_use.saturating_minus(&placement.reserved);
                    }
                }
            }
        }
        let plan = named;
        if plan.is_empty() {
            return Ok(0);
        }
        // A queue or environment changed while this pass planned against what it had read
        // before: the API raises the flag after its change commits and before it answers, so a
        // job submitted after that answer, which this plan may hold, could be placed by a queue
        // now held or disabled. The plan is dropped unwritten (nothing is reserved before the
        // write) and the next pass, woken by the same change, reads it and plans again.
        if self.handle.resources_changed.load(Ordering::Acquire) {
            self.placement_dirty = true;
            return Ok(0);
        }
        let now = now_millis();
        let placed = transition(JobStatus::Runnable, JobEvent::Placed)?;
        let transitions: Vec<Transition> = plan
            .iter()
            .zip(gpu_ids)
            .map(|(placement, gpu_ids)| {
                let job = &jobs[&placement.job_id];
                let number = job.n_attempts + 1;
                Transition {
                    job_id: placement.job_id.clone(),
                    from: JobStatus::Runnable,
                    to: placed,
                    effect: Effect::Placed {
                        attempt: CurrentAttempt {
                            number,
                            compute_environment: placement.environment.clone(),
                            executor_handle: attempt_id(&job.job_id.0, number),
                            placed_at: now,
                            started_at: None,
                            gpu_ids,
                        },
                        used_up: placement.used_up.clone(),
                    },
                }
            })
            .collect();
        // Nothing is reserved until the placements are committed: a failed write leaves the
        // capacity in use as it was.
        let applied = self.store.apply_transitions(&transitions, now).await?;
        self.used = used;
        let mut started = 0;
        for ((placement, transition), applied) in plan.into_iter().zip(&transitions).zip(applied) {
            if !applied {
                // Cancelled between reading the queue head and placing it.
                self.release(&placement.environment, &placement.reserved);
                continue;
            }
            let Effect::Placed { attempt, used_up } = &transition.effect else {
                unreachable!("placement transitions carry Placed")
            };
            // Used up in the store with the placement; the next pass's book must see it too.
            for request in used_up {
                if let Some(stock) = self
                    .consumables
                    .iter_mut()
                    .find(|stock| stock.resource.name == request.consumable_resource)
                {
                    stock.consumed += request.quantity;
                }
            }
            let mut job = *jobs
                .remove(&placement.job_id)
                .expect("planned jobs were read");
            job.status = JobStatus::Starting;
            job.current_attempt = Some(attempt.clone());
            self.spawn_supervisor(job, Takeover::Start, placement.reserved);
            started += 1;
        }
        Ok(started)
    }

    pub(super) fn release(&mut self, environment: &EnvironmentName, reserved: &Resources) {
        if let Some(in_use) = self.used.get_mut(environment) {
            *in_use = in_use.saturating_minus(reserved);
        }
        self.placement_dirty = true;
    }

    pub(super) fn spawn_supervisor(&mut self, job: Job, takeover: Takeover, reserved: Resources) {
        let attempt = job
            .current_attempt
            .clone()
            .expect("placed jobs have an attempt");
        let executor = self
            .environments
            .get(&attempt.compute_environment)
            .cloned()
            .and_then(|environment| self.executors.for_environment(&environment));
        let (stop, stop_receiver) =
            watch::channel(job.stop_requested.clone().map(|reason| StopRequest {
                reason,
                drain: false,
            }));
        self.active.insert(
            job.job_id.clone(),
            ActiveAttempt {
                number: attempt.number,
                status: job.status,
                environment: attempt.compute_environment.clone(),
                reserved,
                started_at: attempt.started_at,
                stop,
                executor: executor.clone(),
                handle: AttemptHandle(attempt.executor_handle.clone()),
                retry: job.spec.retry.clone(),
                disruptions: job.disruptions,
                queue: job.queue.clone(),
                share: job.spec.share_identifier.clone(),
                submitted_at: job.created_at,
                subject: LimitSubject::of(&job),
                consumes: job.spec.consumable_resources.clone(),
                gpu_ids: attempt.gpu_ids.clone(),
            },
        );
        let Some(executor) = executor else {
            // Without an executor the attempt cannot start; it goes back to the queue.
            tracing::error!(job_id = %job.job_id, environment = %attempt.compute_environment, "no executor for the compute environment");
            let _ = self.events_sender.try_send(AttemptEvent::Deferred {
                job_id: job.job_id.clone(),
                number: attempt.number,
                reason: format!(
                    "no executor is available for compute environment {}",
                    attempt.compute_environment
                ),
            });
            return;
        };
        let context = SupervisorContext {
            store: self.store.clone(),
            events: self.events_sender.clone(),
            kill_grace: self.config.kill_grace,
            log_flush_interval: self.config.log_flush_interval,
            max_log_bytes: self.config.max_log_bytes_per_attempt,
        };
        let assignment = AttemptAssignment {
            number: attempt.number,
            environment: attempt.compute_environment.clone(),
            executor,
            takeover,
            clock_started_at: attempt.placed_at,
            stop: stop_receiver,
            job,
        };
        tokio::spawn(supervise(context, assignment));
    }
}
