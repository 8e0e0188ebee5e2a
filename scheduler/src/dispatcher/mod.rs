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

use crate::core::array::{decide_array_end, ArrayEnd, ChildrenEnded};
use crate::core::attempt::attempt_id;
use crate::core::concurrency::{ConcurrencyLimit, LimitSubject};
use crate::core::consumable::{ConsumableRequest, ConsumableStock};
use crate::core::fair_share::{
    fair_share_order, standings, RunningShareJob, ShareCandidate, ShareLedger, ShareStanding,
};
use crate::core::model::ArraySuccessPolicy;
use crate::core::model::{
    Attempt, Backend, ComputeEnvironment, CurrentAttempt, EnvironmentName, EnvironmentType,
    FairSharePolicy, Job, JobId, JobQueue, JobStatus, QueueName, ResourceState, Resources,
    RetryPolicy,
};
use crate::core::placement::Candidate;
use crate::core::reconcile::{reconcile_action, ReconcileAction};
use crate::core::retry::{decide_attempt_end, AttemptCount, AttemptEnd};
use crate::core::state_machine::{transition, JobEvent, TransitionError, Verdict};
use crate::core::time_limits::runnable_cutoff;
use crate::outage::{AfterWait, Outage};
use crate::store::{now_millis, Effect, Store, StoreError, Transition};
pub use supervisor::AttemptEvent;
mod admission;
mod attempts;
mod placement;
mod reconcile;

use attempts::Reports;
use supervisor::{supervise, AttemptAssignment, StopRequest, SupervisorContext, Takeover};

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// The most jobs admitted, or read from one queue's head, per pass (and half the most
    /// supervisor reports applied).
    pub batch_size: u32,
    /// How often the loop looks at the store without being woken (terminate requests made through
    /// another replica, resources applied elsewhere).
    pub poll_interval: Duration,
    /// Between asking an attempt to stop and forcing it.
    pub kill_grace: Duration,
    pub log_flush_interval: Duration,
    /// What one attempt's output may take in the store, unless its definition sets its own
    /// `maxLogBytesPerAttempt` (see `core::output_limit`).
    pub max_log_bytes_per_attempt: u64,
}

impl Default for DispatcherConfig {
    fn default() -> DispatcherConfig {
        DispatcherConfig {
            batch_size: 4096,
            poll_interval: Duration::from_secs(1),
            kill_grace: Duration::from_secs(10),
            log_flush_interval: Duration::from_millis(200),
            max_log_bytes_per_attempt: crate::core::output_limit::DEFAULT_MAX_LOG_BYTES,
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
    /// How long each definition's attempts typically run, in milliseconds: a weighted mean of
    /// the attempts that succeeded while this server led, for start estimates.
    typical_runs: Arc<std::sync::Mutex<HashMap<String, f64>>>,
    /// Where wake-ups are also sent for other servers (see `crate::peers`).
    peers: Arc<std::sync::OnceLock<mpsc::Sender<Wake>>>,
    /// The server's metrics: the dispatcher, the schedule and rule runners and the notifier
    /// report to them, `/metrics` reads them (one per server, shared through this handle).
    metrics: Arc<crate::metrics::Metrics>,
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
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

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

    /// How long attempts of `definition` typically run (milliseconds), if one succeeded while
    /// this server led.
    pub fn typical_run_millis(&self, definition: &str) -> Option<i64> {
        self.typical_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(definition)
            .map(|millis| millis.round() as i64)
    }

    /// Counts a successful attempt of `definition` that ran `millis` into its typical run: each
    /// new run weighs a fifth, so the mean follows a definition whose runs change.
    fn record_run(&self, definition: &str, millis: i64) {
        let millis = millis.max(0) as f64;
        let mut runs = self.typical_runs.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before inserting: on the path of every attempt's end, a known definition
        // costs no allocation.
        match runs.get_mut(definition) {
            Some(mean) => *mean += (millis - *mean) / 5.0,
            None => {
                runs.insert(definition.to_string(), millis);
            }
        }
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
    stop: watch::Sender<Option<StopRequest>>,
    /// `None` when no executor serves the environment; such an attempt only ever gets deferred.
    executor: Option<Arc<dyn Executor>>,
    handle: AttemptHandle,
    retry: RetryPolicy,
    /// Earlier attempts of the job retried without counting.
    disruptions: u32,
    queue: QueueName,
    /// The fair-share share the attempt counts against, if its queue has a policy.
    share: Option<String>,
    /// When the job was submitted (epoch milliseconds), for the queue wait its first start ends.
    submitted_at: i64,
    /// What concurrency limits count it by (`core::concurrency`).
    subject: LimitSubject,
    /// The consumable resources it holds or used up.
    consumes: Vec<ConsumableRequest>,
    /// The GPUs it holds by id (`core::gpus`).
    gpu_ids: Vec<String>,
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
    /// Past usage of each fair-share queue's shares, loaded from the store at start and saved
    /// after the attempt ends that change it (`ledgers_dirty`), so a restart or a new leader goes
    /// on from the same standing.
    ledgers: HashMap<QueueName, ShareLedger>,
    ledgers_dirty: std::collections::HashSet<QueueName>,
    environments: HashMap<EnvironmentName, ComputeEnvironment>,
    queues: Vec<JobQueue>,
    /// The concurrency limits, read with the queues.
    limits: Vec<ConcurrencyLimit>,
    /// The consumable resources, read with the queues and kept up to date by placements.
    consumables: Vec<ConsumableStock>,
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
    /// Starts reported without their end, held until the time beside each (`START_HOLD`), so
    /// that an attempt that ends meanwhile is written as one move (see `decide_reports`).
    held_starts: Vec<(AttemptEvent, tokio::time::Instant)>,
}

/// How long a start is held unwritten for its end to follow: short work (a `true`, a no-op
/// executor's attempt) then costs one write of the job's row instead of two, while longer work
/// shows RUNNING this much later. The start's own time is kept either way, and nothing is acted
/// on in between: a start is an observation, not a decision. A server that stops meanwhile finds
/// the attempt STARTING at its restart and adopts it (`reconcile`).
const START_HOLD: Duration = Duration::from_millis(10);

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
            ledgers_dirty: Default::default(),
            environments: HashMap::new(),
            queues: Vec::new(),
            limits: Vec::new(),
            consumables: Vec::new(),
            backing_off: HashMap::new(),
            placement_dirty: true,
            dependencies_dirty: true,
            waiters_exist: true,
            admission_due: true,
            cancel: CancellationToken::new(),
            held_starts: Vec::new(),
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
            // Up to two reports per job a pass placed: a start and its end, read in the same
            // batch, are written as one move (see `decide_reports`).
            while let Ok(event) = self.events.try_recv() {
                buffered.push(event);
                if buffered.len() >= 2 * self.config.batch_size as usize {
                    break;
                }
            }
            let started = std::time::Instant::now();
            let passed = self.pass(&mut buffered, &mut next_poll).await;
            self.handle
                .metrics()
                .observe_dispatch_pass(started.elapsed().as_secs_f64());
            let progressed = match passed {
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
                () = until_first(&self.held_starts) => {}
            }
        }
    }

    /// One pass of the loop: applies the supervisors' reports, then admits, cancels over time
    /// limits and places. True if it changed something (another pass may find more to do).
    /// The reports are written while placement runs, on a connection of their own: placement
    /// sees an ended attempt's capacity, its place under caps and limits, only once its end is
    /// committed (`settle_reports`), and never places a job the loop still holds.
    /// A pass that fails leaves memory as the store has it: reports are written before it
    /// returns (see `write_transitions`), and placement gives back what it reserved.
    async fn pass(
        &mut self,
        buffered: &mut Vec<AttemptEvent>,
        next_poll: &mut tokio::time::Instant,
    ) -> Result<bool, DispatchError> {
        let mut progressed = false;
        let now = tokio::time::Instant::now();
        let held_due = self.held_starts.iter().any(|(_, until)| *until <= now);
        let new_events = !buffered.is_empty();
        let reports = match new_events || held_due {
            true => Some(self.decide_reports(std::mem::take(buffered)).await?),
            false => None,
        };
        // Held starts written when due are no news that calls for another pass.
        progressed |= new_events;
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
        self.drain_queues();
        if polling {
            // Counters for `/metrics` stay a few rows on Postgres; a fold that fails is only
            // retried at the next poll (reads stay right meanwhile, a little slower).
            if let Err(error) = self.store.fold_job_counts().await {
                tracing::warn!(%error, "could not fold the job counters");
            }
        }
        if polling && self.cancel_jobs_over_time_limits().await? > 0 {
            self.dependencies_dirty = true;
            progressed = true;
        }
        // New jobs are admitted here, or were stored RUNNABLE already
        // (`core::state_machine::status_at_submit`) and only need placing.
        let submitted = self.handle.work_submitted.swap(false, Ordering::AcqRel);
        self.admission_due |= submitted || polling;
        self.placement_dirty |= submitted;
        progressed |= self.admit(polling).await? > 0;
        let place = std::mem::take(&mut self.placement_dirty);
        let (store, cancel) = (self.store.clone(), self.cancel.clone());
        let write = async {
            match &reports {
                // Every start held: nothing to write.
                Some(reports) if reports.transitions.is_empty() => Ok(Some(Vec::new())),
                Some(reports) => {
                    let Reports {
                        transitions, now, ..
                    } = reports;
                    write_transitions(&store, &cancel, transitions, *now)
                        .await
                        .map(Some)
                }
                None => Ok(None),
            }
        };
        let placing = async {
            match place {
                true => self.dispatch().await,
                false => Ok(0),
            }
        };
        let (written, placed) = tokio::join!(write, placing);
        // What was written is settled even when placement failed, and before its error.
        if let (Some(reports), Some(applied)) = (reports, written?) {
            // Only a job that finished can move the jobs that depend on it (or end its array):
            // a start, a retry or a deferral leaves them as they are.
            if self.settle_reports(reports, &applied) {
                self.dependencies_dirty = true;
            }
            self.save_share_ledgers().await;
        }
        progressed |= placed? > 0;
        Ok(progressed)
    }
}

/// Writes transitions whose effects memory already holds or waits to apply (attempt ends,
/// reconcile's verdicts): a database that is away is waited for rather than let memory and
/// store part. Fails only for a failure retrying cannot mend, or when `cancel` fires (what was
/// not written is then found again by the next start's reconcile).
async fn write_transitions(
    store: &Store,
    cancel: &CancellationToken,
    transitions: &[Transition],
    now: i64,
) -> Result<Vec<bool>, DispatchError> {
    let mut outage = Outage::new("dispatcher");
    loop {
        match store.apply_transitions(transitions, now).await {
            Ok(applied) => {
                outage.recovered();
                return Ok(applied);
            }
            Err(error) if error.is_retryable() => {
                if outage.wait(&error, cancel).await == AfterWait::Stop {
                    return Err(error.into());
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Resolves when the first of the held starts is due; never while none is held.
async fn until_first(held: &[(AttemptEvent, tokio::time::Instant)]) {
    match held.iter().map(|(_, until)| *until).min() {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
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
