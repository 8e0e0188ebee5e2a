//! The dispatcher: one control loop that admits submitted jobs, places runnable ones on compute
//! environments, and applies what attempt supervisors report.
//!
//! Invariants:
//! - Only the control loop moves jobs from RUNNABLE on; the API only inserts jobs, cancels jobs that
//!   have not been placed, and records terminate requests.
//! - A placement is committed (STARTING, with its attempt number and executor handle) before the
//!   executor is asked to start anything, so a crash never leaves work the store does not know of.
//! - Capacity in use is the sum of what STARTING and RUNNING jobs reserved; the loop owns that sum
//!   and rebuilds it from the store at start.
//! - Every status change goes through `core::state_machine::transition` and a compare-and-set.

mod supervisor;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use batchctl_executor::{AttemptHandle, Executor, ObservedState};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::core::array::{decide_array_end, ArrayEnd};
use crate::core::attempt::attempt_id;
use crate::core::fair_share::{
    fair_share_order, standings, RunningShareJob, ShareCandidate, ShareLedger, ShareStanding,
};
use crate::core::model::{
    Attempt, Backend, ComputeEnvironment, CurrentAttempt, EnvironmentName, EnvironmentType,
    FairSharePolicy, Job, JobId, JobQueue, JobStatus, QueueName, ResourceState, Resources,
    RetryPolicy,
};
use crate::core::placement::{plan_placements, Candidate};
use crate::core::reconcile::{reconcile_action, ReconcileAction};
use crate::core::retry::{decide_attempt_end, AttemptEnd};
use crate::core::state_machine::{transition, JobEvent, TransitionError, Verdict};
use crate::core::time_limits::runnable_cutoff;
use crate::outage::{AfterWait, Outage};
use crate::store::{now_millis, Effect, Store, StoreError, Transition};
pub use supervisor::AttemptEvent;
use supervisor::{supervise, AttemptAssignment, SupervisorContext, Takeover};

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// The most jobs admitted, or read from one queue's head, per pass.
    pub batch_size: u32,
    /// How often the loop looks at the store without being woken (terminate requests made through
    /// another replica, resources applied elsewhere).
    pub poll_interval: Duration,
    /// Between asking an attempt to stop and forcing it.
    pub kill_grace: Duration,
    pub log_flush_interval: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> DispatcherConfig {
        DispatcherConfig {
            batch_size: 4096,
            poll_interval: Duration::from_secs(1),
            kill_grace: Duration::from_secs(10),
            log_flush_interval: Duration::from_millis(200),
        }
    }
}

/// Builds the executor of a compute environment with settings of its own (docker, kubernetes)
/// from its name and backend; `None` for a backend it does not build.
pub type BackendFactory =
    Arc<dyn Fn(&EnvironmentName, &Backend) -> Option<Arc<dyn Executor>> + Send + Sync>;

/// The executor of each compute environment: one registered per type (the process backend, or a
/// test's fake), or one per docker environment (rebuilt when its settings change), built on first
/// use and kept.
#[derive(Clone, Default)]
pub struct Executors {
    by_type: HashMap<EnvironmentType, Arc<dyn Executor>>,
    factory: Option<BackendFactory>,
    built: HashMap<(EnvironmentName, Backend), Arc<dyn Executor>>,
}

impl Executors {
    pub fn with(mut self, environment_type: EnvironmentType, executor: Arc<dyn Executor>) -> Self {
        self.by_type.insert(environment_type, executor);
        self
    }

    pub fn with_factory(mut self, factory: BackendFactory) -> Self {
        self.factory = Some(factory);
        self
    }

    pub fn for_environment(
        &mut self,
        environment: &ComputeEnvironment,
    ) -> Option<Arc<dyn Executor>> {
        if let Some(executor) = self.by_type.get(&environment.backend.environment_type()) {
            return Some(Arc::clone(executor));
        }
        let backend = &environment.backend;
        if let Some(executor) = self.built.get(&(environment.name.clone(), backend.clone())) {
            return Some(Arc::clone(executor));
        }
        let executor = self.factory.as_ref()?(&environment.name, backend)?;
        // An environment whose settings changed is served by a new executor from now on.
        self.built.retain(|(name, _), _| name != &environment.name);
        self.built.insert(
            (environment.name.clone(), backend.clone()),
            Arc::clone(&executor),
        );
        Some(executor)
    }

    /// Every executor built so far, each once.
    fn all(&self) -> Vec<Arc<dyn Executor>> {
        let mut all: Vec<Arc<dyn Executor>> = Vec::new();
        for executor in self.by_type.values().chain(self.built.values()) {
            if !all.iter().any(|known| Arc::ptr_eq(known, executor)) {
                all.push(Arc::clone(executor));
            }
        }
        all
    }
}

/// How long placement leaves an environment alone after its executor was unreachable.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(2);

/// How the API wakes the dispatcher.
#[derive(Clone, Default)]
pub struct DispatcherHandle {
    wake: Arc<Notify>,
    stops_requested: Arc<AtomicBool>,
    resources_changed: Arc<AtomicBool>,
    /// Set by `notify_work`: jobs were submitted (or cancelled) and admission should look.
    work_submitted: Arc<AtomicBool>,
    /// Environments whose executor could not be reached, with the reason, for `/healthz`.
    unhealthy: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    /// Each fair-share queue's shares as of the last placement, for `batchctl why`.
    share_standings: Arc<std::sync::Mutex<HashMap<QueueName, Vec<ShareStanding>>>>,
    /// Where wake-ups are also sent for other servers (see `crate::peers`).
    peers: Arc<std::sync::OnceLock<mpsc::Sender<Wake>>>,
}

/// What a wake-up asks the dispatcher to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wake {
    Work,
    Stops,
    Resources,
}

impl Wake {
    pub fn as_str(self) -> &'static str {
        match self {
            Wake::Work => "work",
            Wake::Stops => "stops",
            Wake::Resources => "resources",
        }
    }

    pub fn parse(text: &str) -> Option<Wake> {
        [Wake::Work, Wake::Stops, Wake::Resources]
            .into_iter()
            .find(|wake| wake.as_str() == text)
    }
}

impl DispatcherHandle {
    /// New jobs: look at the queues now.
    pub fn notify_work(&self) {
        self.wake_local(Wake::Work);
        self.tell_peers(Wake::Work);
    }

    /// Compute environments or queues changed: read them again before placing.
    pub fn notify_resources_changed(&self) {
        self.wake_local(Wake::Resources);
        self.tell_peers(Wake::Resources);
    }

    /// Wakes this server's dispatcher (if it runs) for `wake`, without telling other servers.
    pub fn wake_local(&self, wake: Wake) {
        let flag = match wake {
            Wake::Work => &self.work_submitted,
            Wake::Stops => &self.stops_requested,
            Wake::Resources => &self.resources_changed,
        };
        flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// From now on, wake-ups made here are also sent to `peers`.
    pub fn connect_peers(&self, peers: mpsc::Sender<Wake>) {
        let _ = self.peers.set(peers);
    }

    fn tell_peers(&self, wake: Wake) {
        if let Some(peers) = self.peers.get() {
            // A full channel already holds wake-ups to send; one more adds nothing (and were
            // one lost, the leader's poll still finds the change).
            let _ = peers.try_send(wake);
        }
    }

    /// The shares of a fair-share queue with their usage, as of the last placement.
    pub fn share_standings(&self, queue: &QueueName) -> Vec<ShareStanding> {
        self.share_standings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned()
            .unwrap_or_default()
    }

    /// Compute environments whose executor was unreachable at the last attempt to use it.
    pub fn unhealthy_environments(&self) -> BTreeMap<String, String> {
        self.unhealthy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_health(&self, environment: &EnvironmentName, problem: Option<&str>) {
        let mut unhealthy = self.unhealthy.lock().unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(reason) => unhealthy.insert(environment.to_string(), reason.to_string()),
            None => unhealthy.remove(environment.as_str()),
        };
    }

    /// A terminate request was recorded.
    pub fn notify_stop_requested(&self) {
        self.wake_local(Wake::Stops);
        self.tell_peers(Wake::Stops);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal state machine refusal: {0}")]
    Transition(#[from] TransitionError),
}

/// An attempt the loop has handed to a supervisor.
struct ActiveAttempt {
    number: u32,
    status: JobStatus,
    environment: EnvironmentName,
    reserved: Resources,
    started_at: Option<i64>,
    stop: watch::Sender<Option<String>>,
    /// `None` when no executor serves the environment; such an attempt only ever gets deferred.
    executor: Option<Arc<dyn Executor>>,
    handle: AttemptHandle,
    retry: RetryPolicy,
    queue: QueueName,
    /// The fair-share share the attempt counts against, if its queue has a policy.
    share: Option<String>,
}

/// A finished attempt the executor may forget once its end is committed.
struct Removal {
    job_id: JobId,
    handle: AttemptHandle,
    executor: Arc<dyn Executor>,
}

pub struct Dispatcher {
    store: Store,
    executors: Executors,
    config: DispatcherConfig,
    handle: DispatcherHandle,
    events_sender: mpsc::Sender<AttemptEvent>,
    events: mpsc::Receiver<AttemptEvent>,
    active: HashMap<JobId, ActiveAttempt>,
    used: HashMap<EnvironmentName, Resources>,
    /// Past usage of each fair-share queue's shares. Kept in memory: a restart starts every share
    /// even again (what runs still counts).
    ledgers: HashMap<QueueName, ShareLedger>,
    environments: HashMap<EnvironmentName, ComputeEnvironment>,
    queues: Vec<JobQueue>,
    /// Environments placement skips until the given time because their executor was unreachable.
    backing_off: HashMap<EnvironmentName, tokio::time::Instant>,
    /// Set when placement could find something new to do (jobs admitted, capacity freed, config).
    placement_dirty: bool,
    /// Set when a job may have ended or been cancelled, so PENDING jobs are looked at again.
    dependencies_dirty: bool,
    /// Whether PENDING jobs may exist; while none do, resolution is skipped. Set at start, at each
    /// poll (jobs submitted through another server) and when jobs with dependencies are admitted.
    waiters_exist: bool,
    /// Whether SUBMITTED jobs may be waiting for admission: set at start, at each poll, when a
    /// submit is committed, and while the last admission was full. Without it every pass would
    /// query for SUBMITTED jobs, which on Postgres walks the index entries of every job that has
    /// left SUBMITTED since the last vacuum.
    admission_due: bool,
    /// The token `run` was given: waits for the database end with it.
    cancel: CancellationToken,
}

impl Dispatcher {
    pub fn new(store: Store, executors: Executors, config: DispatcherConfig) -> Dispatcher {
        let (events_sender, events) = mpsc::channel(8192);
        Dispatcher {
            store,
            executors,
            config,
            handle: DispatcherHandle::default(),
            events_sender,
            events,
            active: HashMap::new(),
            used: HashMap::new(),
            ledgers: HashMap::new(),
            environments: HashMap::new(),
            queues: Vec::new(),
            backing_off: HashMap::new(),
            placement_dirty: true,
            dependencies_dirty: true,
            waiters_exist: true,
            admission_due: true,
            cancel: CancellationToken::new(),
        }
    }

    pub fn handle(&self) -> DispatcherHandle {
        self.handle.clone()
    }

    /// Takes wake-ups from a handle made before this dispatcher (the API's, on a server that
    /// became leader after it started serving).
    pub fn with_handle(mut self, handle: DispatcherHandle) -> Dispatcher {
        self.handle = handle;
        self
    }

    /// Reconciles with the executors, then runs until `cancel` fires. A database that is away
    /// (restarting, unreachable, its disk full) pauses the loop, which tries again with a bounded
    /// backoff; only a failure that retrying cannot mend ends it.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), DispatchError> {
        self.cancel = cancel.clone();
        let mut outage = Outage::new("dispatcher");
        loop {
            match self.reconcile().await {
                Ok(()) => break,
                Err(DispatchError::Store(error)) if error.is_retryable() => {
                    if outage.wait(&error, &cancel).await == AfterWait::Stop {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error),
            }
        }
        outage.recovered();
        let mut next_poll = tokio::time::Instant::now();
        let mut buffered: Vec<AttemptEvent> = Vec::new();
        loop {
            while let Ok(event) = self.events.try_recv() {
                buffered.push(event);
                if buffered.len() >= self.config.batch_size as usize {
                    break;
                }
            }
            let progressed = match self.pass(&mut buffered, &mut next_poll).await {
                Ok(progressed) => {
                    outage.recovered();
                    progressed
                }
                Err(DispatchError::Store(error)) if error.is_retryable() => {
                    if cancel.is_cancelled()
                        || outage.wait(&error, &cancel).await == AfterWait::Stop
                    {
                        return Ok(());
                    }
                    // Whatever the failed pass skipped is looked at again.
                    self.placement_dirty = true;
                    self.dependencies_dirty = true;
                    self.admission_due = true;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if progressed {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = self.handle.wake.notified() => {
                    self.placement_dirty = true;
                    self.dependencies_dirty = true;
                }
                Some(event) = self.events.recv() => buffered.push(event),
                () = tokio::time::sleep_until(next_poll) => {}
            }
        }
    }

    /// One pass of the loop: applies the supervisors' reports, then admits, cancels over time
    /// limits and places. True if it changed something (another pass may find more to do).
    /// A pass that fails leaves memory as the store has it: reports are written before it
    /// returns (see `write_transitions`), and placement gives back what it reserved.
    async fn pass(
        &mut self,
        buffered: &mut Vec<AttemptEvent>,
        next_poll: &mut tokio::time::Instant,
    ) -> Result<bool, DispatchError> {
        let mut progressed = false;
        if !buffered.is_empty() {
            self.apply_events(std::mem::take(buffered)).await?;
            self.dependencies_dirty = true;
            progressed = true;
        }
        let polling = tokio::time::Instant::now() >= *next_poll;
        if polling {
            *next_poll = tokio::time::Instant::now() + self.config.poll_interval;
            self.placement_dirty = true;
            self.dependencies_dirty = true;
            self.waiters_exist = true;
        }
        // Resources are re-read when the API changed them, and at each poll for changes made
        // through another server.
        if self.handle.resources_changed.swap(false, Ordering::AcqRel) || polling {
            self.load_resources().await?;
            self.placement_dirty = true;
        }
        if self.handle.stops_requested.swap(false, Ordering::AcqRel) || polling {
            self.deliver_stop_requests().await?;
        }
        if polling && self.cancel_jobs_over_time_limits().await? > 0 {
            self.dependencies_dirty = true;
            progressed = true;
        }
        self.admission_due |= self.handle.work_submitted.swap(false, Ordering::AcqRel) || polling;
        progressed |= self.admit().await? > 0;
        if self.placement_dirty {
            self.placement_dirty = false;
            progressed |= self.dispatch().await? > 0;
        }
        Ok(progressed)
    }

    /// Writes transitions whose effects memory already holds (attempt ends, reconcile's
    /// verdicts): a database that is away is waited for rather than let memory and store part.
    /// Fails only for a failure retrying cannot mend, or when the loop is told to stop (what
    /// was not written is then found again by the next start's reconcile).
    async fn write_transitions(
        &self,
        transitions: &[Transition],
        now: i64,
    ) -> Result<Vec<bool>, DispatchError> {
        let mut outage = Outage::new("dispatcher");
        loop {
            match self.store.apply_transitions(transitions, now).await {
                Ok(applied) => {
                    outage.recovered();
                    return Ok(applied);
                }
                Err(error) if error.is_retryable() => {
                    if outage.wait(&error, &self.cancel).await == AfterWait::Stop {
                        return Err(error.into());
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Admits the oldest submitted jobs: SUBMITTED → PENDING, and on to RUNNABLE at once for jobs
    /// without dependencies. Then PENDING jobs move on: to RUNNABLE when every job they depend on
    /// SUCCEEDED, to FAILED when one of them FAILED.
    async fn admit(&mut self) -> Result<u64, DispatchError> {
        let now = now_millis();
        let pending = transition(JobStatus::Submitted, JobEvent::Admitted)?;
        let runnable = transition(pending, JobEvent::DependenciesSatisfied)?;
        let failed = transition(pending, JobEvent::DependencyFailed)?;
        let (mut ready, mut waiting) = (0, 0);
        if self.admission_due {
            // Each queue in turn, highest priority first, a batch each: a backlog of one queue
            // (a 100,000-child array) never holds up the jobs of another.
            self.admission_due = false;
            let mut queues: Vec<&JobQueue> = self.queues.iter().collect();
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
            // A failure can cascade to the jobs that depend on the ones just failed.
            self.dependencies_dirty = resolved > 0;
            self.waiters_exist = self.store.count_jobs(JobStatus::Pending).await? > 0;
        }
        let moved = ready + waiting + resolved;
        if ready + resolved > 0 {
            self.placement_dirty = true;
        }
        Ok(moved)
    }

    /// A fair-share queue's RUNNABLE jobs in the order shares take turns, cut to what
    /// `computeReservation` lets the queue place now.
    fn fair_share_head(
        &mut self,
        queue: &JobQueue,
        policy: &FairSharePolicy,
        waiting: &[&Job],
    ) -> Vec<Candidate> {
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
            .map(|candidate| Candidate {
                job_id: candidate.job_id,
                needs: candidate.needs,
            })
            .collect()
    }

    fn record_share_usage(&mut self, active: &ActiveAttempt, ended_at: i64) {
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
    }

    /// Carries out the queues' `jobStateTimeLimitActions`: cancels jobs RUNNABLE for too long.
    async fn cancel_jobs_over_time_limits(&mut self) -> Result<u64, DispatchError> {
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

    /// Ends the array parents whose children have all finished: SUCCEEDED if every child did,
    /// otherwise FAILED, as AWS Batch.
    async fn finish_arrays(&mut self, now: i64) -> Result<u64, DispatchError> {
        let finished = self.store.finished_arrays().await?;
        if finished.is_empty() {
            return Ok(0);
        }
        let transitions = finished
            .iter()
            .map(|array| {
                let ArrayEnd { outcome, reason } =
                    decide_array_end(array.size, array.n_failed, array.stop_reason.as_deref());
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

    async fn load_resources(&mut self) -> Result<(), DispatchError> {
        self.queues = self.store.job_queues().await?;
        self.environments = self
            .store
            .compute_environments()
            .await?
            .into_iter()
            .map(|environment| (environment.name.clone(), environment))
            .collect();
        Ok(())
    }

    async fn dispatch(&mut self) -> Result<usize, DispatchError> {
        let queues = self.queues.clone();
        let mut heads = HashMap::new();
        let mut jobs = HashMap::new();
        for queue in &queues {
            if !self.queue_has_room(queue) {
                continue;
            }
            let runnable = match &queue.fair_share {
                None => {
                    self.store
                        .runnable_jobs(&queue.name, self.config.batch_size, now_millis())
                        .await?
                }
                // Each share's own head, so a share with a long backlog hides no other.
                Some(_) => {
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
                    runnable
                }
            };
            let waiting: Vec<&Job> = runnable
                .iter()
                .filter(|job| !self.active.contains_key(&job.job_id))
                .collect();
            let candidates = match &queue.fair_share {
                Some(policy) => self.fair_share_head(queue, policy, &waiting),
                None => waiting
                    .iter()
                    .map(|job| Candidate {
                        job_id: job.job_id.clone(),
                        needs: job.spec.container.resources,
                    })
                    .collect(),
            };
            heads.insert(queue.name.clone(), candidates);
            jobs.extend(runnable.into_iter().map(|job| (job.job_id.clone(), job)));
        }
        let now_instant = tokio::time::Instant::now();
        self.backing_off.retain(|_, until| *until > now_instant);
        let mut environments = self.environments.clone();
        for name in self.backing_off.keys() {
            if let Some(environment) = environments.get_mut(name) {
                environment.state = ResourceState::Disabled;
            }
        }
        let plan = plan_placements(&queues, &environments, &mut self.used, &heads);
        if plan.is_empty() {
            return Ok(0);
        }
        let now = now_millis();
        let placed = transition(JobStatus::Runnable, JobEvent::Placed)?;
        let transitions: Vec<Transition> = plan
            .iter()
            .map(|placement| {
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
                        },
                    },
                }
            })
            .collect();
        let applied = match self.store.apply_transitions(&transitions, now).await {
            Ok(applied) => applied,
            Err(error) => {
                // Nothing was placed: what the plan reserved is free again.
                for placement in &plan {
                    self.release(&placement.environment, &placement.reserved);
                }
                return Err(error.into());
            }
        };
        let mut started = 0;
        for ((placement, transition), applied) in plan.into_iter().zip(&transitions).zip(applied) {
            if !applied {
                // Cancelled between reading the queue head and placing it.
                self.release(&placement.environment, &placement.reserved);
                continue;
            }
            let Effect::Placed { attempt } = &transition.effect else {
                unreachable!("placement transitions carry Placed")
            };
            let mut job = jobs
                .remove(&placement.job_id)
                .expect("planned jobs were read");
            job.status = JobStatus::Starting;
            job.current_attempt = Some(attempt.clone());
            self.spawn_supervisor(job, Takeover::Start, placement.reserved);
            started += 1;
        }
        Ok(started)
    }

    /// Whether any environment of the queue has some vCPU and some memory free: without both, no
    /// job can be placed, and reading the queue's head would be wasted work.
    fn queue_has_room(&self, queue: &JobQueue) -> bool {
        queue.compute_environments.iter().any(|name| {
            self.environments.get(name).is_some_and(|environment| {
                let in_use = self.used.get(name).copied().unwrap_or_default();
                let free = environment.capacity.saturating_minus(&in_use);
                free.vcpu_millis > 0 && free.memory_mib > 0
            })
        })
    }

    fn release(&mut self, environment: &EnvironmentName, reserved: &Resources) {
        if let Some(in_use) = self.used.get_mut(environment) {
            *in_use = in_use.saturating_minus(reserved);
        }
        self.placement_dirty = true;
    }

    fn spawn_supervisor(&mut self, job: Job, takeover: Takeover, reserved: Resources) {
        let attempt = job
            .current_attempt
            .clone()
            .expect("placed jobs have an attempt");
        let executor = self
            .environments
            .get(&attempt.compute_environment)
            .cloned()
            .and_then(|environment| self.executors.for_environment(&environment));
        let (stop, stop_receiver) = watch::channel(job.stop_requested.clone());
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
                queue: job.queue.clone(),
                share: job.spec.share_identifier.clone(),
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

    /// Applies a batch of supervisor reports in one transaction.
    async fn apply_events(&mut self, events: Vec<AttemptEvent>) -> Result<(), DispatchError> {
        let now = now_millis();
        let mut transitions = Vec::with_capacity(events.len());
        // What to do for each transition once it is committed.
        let mut after: Vec<Option<Removal>> = Vec::new();
        for event in events {
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
                    after.push(None);
                }
                AttemptEvent::Deferred { number, reason, .. } if number == active.number => {
                    let to = transition(active.status, JobEvent::StartDeferred)?;
                    self.handle.set_health(&active.environment, Some(&reason));
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
                        number,
                        &active.retry,
                        at,
                        rand_fraction(),
                    );
                    let to = transition(active.status, JobEvent::AttemptEnded(judgement.verdict))?;
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
                            },
                            runnable_after,
                        },
                    });
                    let active = self.active.remove(&job_id).expect("present");
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
        for ((transition, applied), cleanup) in transitions.iter().zip(applied).zip(after) {
            if !applied {
                tracing::warn!(job_id = %transition.job_id, from = %transition.from, to = %transition.to, "transition lost a compare-and-set");
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
        Ok(())
    }

    async fn deliver_stop_requests(&mut self) -> Result<(), DispatchError> {
        if self.active.is_empty() {
            return Ok(());
        }
        for (job_id, reason) in self.store.stop_requests().await? {
            if let Some(active) = self.active.get(&job_id) {
                active.stop.send_if_modified(|current| {
                    let first = current.is_none();
                    if first {
                        *current = Some(reason.clone());
                    }
                    first
                });
            }
        }
        Ok(())
    }

    /// Matches STARTING and RUNNING jobs with what the executors hold after a restart: adopts what
    /// runs or has finished, re-queues what never started, fails what vanished, and removes what no
    /// job owns.
    async fn reconcile(&mut self) -> Result<(), DispatchError> {
        self.load_resources().await?;
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
                            },
                            runnable_after: None,
                        },
                    });
                }
                ReconcileAction::Leave => {}
            }
        }
        if !transitions.is_empty() {
            self.write_transitions(&transitions, now).await?;
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

/// A number in [0, 1) for backoff jitter. Jitter only spreads retries out, so the clock's
/// nanoseconds are random enough and no random number generator is needed.
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}
