//! One task per attempt: starts (or adopts) the work, collects its logs into the store, stops it on
//! timeout or terminate, and reports what happened to the control loop as `AttemptEvent`s.
//! It never writes a job's status itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use batchctl_executor::{AttemptHandle, AttemptOutcome, Executor, LogChunk, LogCursor};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::core::attempt::attempt_spec;
use crate::core::model::{EnvironmentName, Job, JobId};
use crate::core::output_limit::StoredOutput;
use crate::core::retry::StopCause;
use crate::core::secret::{SecretReference, SecretText};
use crate::store::{now_millis, NewLogChunk, Store};

/// Why the loop asks a supervisor to stop its attempt: a terminate request (the job fails), or
/// its queue draining (the job is requeued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    pub reason: String,
    pub drain: bool,
}

impl StopRequest {
    fn cause(self) -> StopCause {
        match self.drain {
            true => StopCause::Drained {
                reason: self.reason,
            },
            false => StopCause::Terminated {
                reason: self.reason,
            },
        }
    }
}

/// What a supervisor tells the control loop.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEvent {
    Started {
        job_id: JobId,
        number: u32,
        at: i64,
    },
    Deferred {
        job_id: JobId,
        number: u32,
        reason: String,
    },
    /// The attempt was started but its work does not run yet, for this reason (a pod that
    /// cannot be scheduled); the job stays STARTING with it.
    Waiting {
        job_id: JobId,
        number: u32,
        reason: String,
    },
    Ended {
        job_id: JobId,
        number: u32,
        outcome: AttemptOutcome,
        stop_cause: Option<StopCause>,
        at: i64,
    },
}

/// How the supervisor takes hold of the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Hand the attempt to the executor.
    Start,
    /// The executor already holds it (found by reconcile after a restart).
    Adopt { confirmed_running: bool },
}

#[derive(Clone)]
pub struct SupervisorContext {
    pub store: Store,
    pub events: mpsc::Sender<AttemptEvent>,
    pub kill_grace: Duration,
    pub log_flush_interval: Duration,
    /// What one attempt's output may take in the store where its definition says nothing.
    pub max_log_bytes: u64,
}

pub struct AttemptAssignment {
    pub job: Job,
    pub number: u32,
    pub environment: EnvironmentName,
    pub executor: Arc<dyn Executor>,
    pub takeover: Takeover,
    /// When the attempt's timeout clock started (placement time), in epoch milliseconds.
    pub clock_started_at: i64,
    pub stop: watch::Receiver<Option<StopRequest>>,
}

/// Why an attempt was not handed over: for now (the database or the backend is away; the job
/// waits in its queue again), or for good (a secret is missing, or sealed under a key this server
/// lacks; the backend refused it): the attempt fails to start.
enum NotStarted {
    Retryable(String),
    Fatal(String),
}

/// Builds the attempt's spec, with the values of its secrets, and hands it to the executor.
async fn start_attempt(
    store: &Store,
    assignment: &AttemptAssignment,
    executor: &Arc<dyn Executor>,
) -> Result<AttemptHandle, NotStarted> {
    let job = &assignment.job;
    let mut spec = attempt_spec(job, assignment.number, &assignment.environment);
    // The containers' secret references: the job's one, or each node's.
    let containers: Vec<&[SecretReference]> = match &job.spec.nodes {
        None => vec![&job.spec.container.secrets],
        Some(nodes) => (0..nodes.num_nodes)
            .map(|node| nodes.container_of(node).secrets.as_slice())
            .collect(),
    };
    // Every value the attempt needs, read and unsealed once, as it starts.
    let values = secret_values(store, &containers).await?;
    let variables = |references: &[SecretReference]| {
        crate::core::secret::secret_variables(references, &values).map_err(NotStarted::Fatal)
    };
    match spec.nodes.as_mut() {
        None => spec.secrets = variables(containers[0])?,
        Some(group) => {
            for (node, references) in group.nodes.iter_mut().zip(&containers) {
                node.secrets = variables(references)?;
            }
            spec.secrets = group.main().secrets.clone();
        }
    }
    executor
        .start(&spec)
        .await
        .map_err(|error| match error.is_retryable() {
            true => NotStarted::Retryable(error.to_string()),
            false => NotStarted::Fatal(error.to_string()),
        })
}

/// The stored values of every secret `containers` name, read and unsealed in one read; nothing
/// read when they name none.
async fn secret_values(
    store: &Store,
    containers: &[&[SecretReference]],
) -> Result<BTreeMap<String, SecretText>, NotStarted> {
    let mut names: Vec<&str> = containers
        .iter()
        .flat_map(|references| references.iter())
        .map(|reference| reference.value_from.as_str())
        .collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    names.sort_unstable();
    names.dedup();
    store.secret_values(&names).await.map_err(|error| {
        let reason = format!("cannot read the job's secrets: {error}");
        match error.is_retryable() {
            true => NotStarted::Retryable(reason),
            false => NotStarted::Fatal(reason),
        }
    })
}

pub async fn supervise(context: SupervisorContext, mut assignment: AttemptAssignment) {
    let job_id = assignment.job.job_id.clone();
    let number = assignment.number;
    let executor = Arc::clone(&assignment.executor);
    let handle = match assignment.takeover {
        Takeover::Start => match start_attempt(&context.store, &assignment, &executor).await {
            Ok(handle) => handle,
            Err(NotStarted::Retryable(reason)) => {
                tracing::warn!(%job_id, attempt = number, %reason, "attempt deferred");
                report(
                    &context,
                    AttemptEvent::Deferred {
                        job_id,
                        number,
                        reason,
                    },
                )
                .await;
                return;
            }
            Err(NotStarted::Fatal(reason)) => {
                let outcome = AttemptOutcome::StartFailed { reason };
                report(&context, ended(&job_id, number, outcome, None)).await;
                return;
            }
        },
        Takeover::Adopt { .. } => {
            AttemptHandle(assignment.job.current_attempt.as_ref().map_or_else(
                || crate::core::attempt::attempt_id(&job_id.0, number),
                |attempt| attempt.executor_handle.clone(),
            ))
        }
    };
    // RUNNING is reported once the executor says the work runs; until then the job stays STARTING
    // with the executor's reason for waiting.
    let mut running_reported = matches!(
        assignment.takeover,
        Takeover::Adopt {
            confirmed_running: true
        }
    );
    let waiting = {
        let (events, job_id) = (context.events.clone(), job_id.clone());
        move |reason: String| {
            let _ = events.try_send(AttemptEvent::Waiting {
                job_id: job_id.clone(),
                number,
                reason,
            });
        }
    };
    let running = executor.until_running(&handle, &waiting);
    tokio::pin!(running);

    let limit = assignment
        .job
        .spec
        .max_log_bytes
        .unwrap_or(context.max_log_bytes);
    // Each node of a multi-node attempt has its output collected, bounded and stored apart.
    let sources: Vec<OutputSource> = match &assignment.job.spec.nodes {
        None => vec![OutputSource::Attempt],
        Some(nodes) => (0..nodes.num_nodes).map(OutputSource::Node).collect(),
    };
    let mut collectors = Vec::with_capacity(sources.len());
    for source in sources {
        // A new attempt has written nothing yet (no read for it: one per job is a cost at
        // thousands of jobs a second); an adopted one resumes after what is stored.
        let (from, stored) = match assignment.takeover {
            Takeover::Start => (LogCursor(0), AttemptOutput::nothing(limit)),
            Takeover::Adopt { .. } => {
                let node = source.node();
                let from = match context.store.log_cursor(&job_id, number, node).await {
                    Ok(cursor) => LogCursor(cursor),
                    Err(error) => {
                        tracing::warn!(%job_id, %error, "cannot read the log cursor; logs start over");
                        LogCursor(0)
                    }
                };
                let key = (&job_id, number, node);
                (from, stored_output(&context.store, key, limit).await)
            }
        };
        collectors.push(tokio::spawn(collect_logs(
            context.clone(),
            Arc::clone(&executor),
            (handle.clone(), source),
            (job_id.clone(), number),
            from,
            stored,
        )));
    }
    let aborts: Vec<tokio::task::AbortHandle> = collectors
        .iter()
        .map(tokio::task::JoinHandle::abort_handle)
        .collect();
    let logs = futures::future::join_all(collectors);

    let deadline = assignment.job.spec.timeout_seconds.map(|seconds| {
        let elapsed_ms = (now_millis() - assignment.clock_started_at).max(0) as u64;
        let remaining =
            Duration::from_secs(seconds).saturating_sub(Duration::from_millis(elapsed_ms));
        (tokio::time::Instant::now() + remaining, seconds)
    });
    let mut stop_cause: Option<StopCause> =
        assignment.stop.borrow().clone().map(StopRequest::cause);
    if let Some(cause) = &stop_cause {
        tracing::info!(%job_id, attempt = number, ?cause, "stopping attempt");
        spawn_kill(&context, &executor, &handle);
    }
    let wait = wait_for_outcome(Arc::clone(&executor), handle.clone());
    tokio::pin!(wait);
    let outcome = loop {
        let timeout = async {
            match deadline {
                Some((instant, _)) => tokio::time::sleep_until(instant).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // RUNNING is reported before an end that is ready at the same time.
            biased;
            result = &mut running, if !running_reported => {
                if let Err(error) = result {
                    tracing::warn!(%job_id, attempt = number, %error, "cannot tell whether the attempt runs; taking it as running");
                }
                running_reported = true;
                report(&context, started(&job_id, number)).await;
            }
            outcome = &mut wait => break outcome,
            () = timeout, if stop_cause.is_none() => {
                let seconds = deadline.map_or(0, |(_, seconds)| seconds);
                tracing::info!(%job_id, attempt = number, seconds, "attempt timed out; stopping it");
                stop_cause = Some(StopCause::Timeout { seconds });
                spawn_kill(&context, &executor, &handle);
            }
            changed = assignment.stop.changed(), if stop_cause.is_none() => {
                let request = match changed {
                    Ok(()) => assignment.stop.borrow().clone(),
                    Err(_) => None,
                };
                if let Some(request) = request {
                    let cause = request.cause();
                    tracing::info!(%job_id, attempt = number, ?cause, "stopping attempt");
                    stop_cause = Some(cause);
                    spawn_kill(&context, &executor, &handle);
                }
            }
        }
    };
    // Everything the work wrote is stored before the attempt's end is reported.
    if tokio::time::timeout(Duration::from_secs(30), logs)
        .await
        .is_err()
    {
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
        tracing::warn!(%job_id, attempt = number, "log collection did not finish within 30s after the attempt ended");
    }
    report(&context, ended(&job_id, number, outcome, stop_cause)).await;
}

fn started(job_id: &JobId, number: u32) -> AttemptEvent {
    AttemptEvent::Started {
        job_id: job_id.clone(),
        number,
        at: now_millis(),
    }
}

fn ended(
    job_id: &JobId,
    number: u32,
    outcome: AttemptOutcome,
    stop_cause: Option<StopCause>,
) -> AttemptEvent {
    AttemptEvent::Ended {
        job_id: job_id.clone(),
        number,
        outcome,
        stop_cause,
        at: now_millis(),
    }
}

async fn report(context: &SupervisorContext, event: AttemptEvent) {
    // The control loop is gone only when the server shuts down; the attempt is then reconciled
    // at the next start.
    let _ = context.events.send(event).await;
}

fn spawn_kill(context: &SupervisorContext, executor: &Arc<dyn Executor>, handle: &AttemptHandle) {
    let (executor, handle, grace) = (Arc::clone(executor), handle.clone(), context.kill_grace);
    tokio::spawn(async move {
        if let Err(error) = executor.kill(&handle, grace).await {
            tracing::warn!(handle = %handle.0, %error, "could not stop attempt");
        }
    });
}

/// Waits for the work to end, riding out a backend that is briefly unreachable.
async fn wait_for_outcome(executor: Arc<dyn Executor>, handle: AttemptHandle) -> AttemptOutcome {
    loop {
        match executor.wait(&handle).await {
            Ok(outcome) => return outcome,
            Err(error) if error.is_retryable() => {
                tracing::warn!(handle = %handle.0, %error, "waiting for attempt failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return AttemptOutcome::Lost {
                    reason: error.to_string(),
                }
            }
        }
    }
}

/// Copies the attempt's output into the store, resuming after what is already stored. Consecutive
/// chunks of one stream are merged, and writes are batched by time. At most the limit `output`
/// carries is kept (`core::output_limit`): the head and the tail, with a marker between.
async fn collect_logs(
    context: SupervisorContext,
    executor: Arc<dyn Executor>,
    (handle, source): (AttemptHandle, OutputSource),
    (job_id, number): (JobId, u32),
    from: LogCursor,
    stored: AttemptOutput,
) {
    let node = source.node();
    let mut stream = source.read(&executor, &handle, from);
    let mut cursor = from;
    let mut output = stored;
    let mut pending: Vec<NewLogChunk> = Vec::new();
    let mut flush_at = tokio::time::Instant::now() + context.log_flush_interval;
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = tokio::time::sleep_until(flush_at) => {
                flush_logs(&context.store, &mut output, &mut pending).await;
                flush_at = tokio::time::Instant::now() + context.log_flush_interval;
                continue;
            }
        };
        match next {
            Some(Ok(chunk)) => {
                cursor = chunk.next;
                merge_chunk(&mut pending, (&job_id, number, node), chunk);
            }
            // A backend that is briefly unreachable: resume from the last chunk read once it answers.
            Some(Err(error)) if error.is_retryable() => {
                tracing::warn!(%job_id, attempt = number, %error, "reading attempt output failed; retrying");
                flush_logs(&context.store, &mut output, &mut pending).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                stream = source.read(&executor, &handle, cursor);
            }
            Some(Err(error)) => {
                tracing::warn!(%job_id, attempt = number, %error, "reading attempt output failed");
                break;
            }
            None => break,
        }
    }
    flush_logs(&context.store, &mut output, &mut pending).await;
}

/// Whose output a collector copies: the attempt's one container, or one node of a multi-node
/// attempt (stored as that node's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputSource {
    Attempt,
    Node(u32),
}

impl OutputSource {
    fn node(self) -> u32 {
        match self {
            OutputSource::Attempt => 0,
            OutputSource::Node(node) => node,
        }
    }

    fn read(
        self,
        executor: &Arc<dyn Executor>,
        handle: &AttemptHandle,
        from: LogCursor,
    ) -> futures::stream::BoxStream<'static, Result<LogChunk, batchctl_executor::ExecutorError>>
    {
        match self {
            OutputSource::Attempt => executor.logs(handle, from),
            OutputSource::Node(node) => executor.node_logs(handle, node, from),
        }
    }
}

/// What the attempt has stored so far (nothing for a new one; an adopted one's after a restart),
/// and the marker's key once it exists.
struct AttemptOutput {
    counts: StoredOutput,
    marker: Option<i64>,
}

impl AttemptOutput {
    fn nothing(limit: u64) -> AttemptOutput {
        AttemptOutput {
            counts: StoredOutput::new(limit),
            marker: None,
        }
    }
}

async fn stored_output(
    store: &Store,
    (job_id, number, node): (&JobId, u32, u32),
    limit: u64,
) -> AttemptOutput {
    let mut output = AttemptOutput::nothing(limit);
    let mut delay = Duration::from_millis(100);
    let layout = loop {
        match store.output_layout(job_id, number, node).await {
            Ok(layout) => break layout,
            Err(error) => {
                tracing::warn!(%job_id, %error, "reading what an attempt stored failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    for chunk in layout {
        match (chunk.marker, output.marker) {
            (true, _) => {
                output.marker = Some(chunk.key);
                output.counts.marked = true;
                output.counts.dropped = chunk
                    .marker_text
                    .as_deref()
                    .and_then(dropped_in_marker)
                    .unwrap_or(0);
            }
            (false, None) => output.counts.head += chunk.len,
            (false, Some(_)) => output.counts.tail_stored(chunk.key, chunk.len),
        }
    }
    output
}

/// The count a marker's text gives (`[batchctl: N bytes of output dropped here; …`).
fn dropped_in_marker(text: &str) -> Option<u64> {
    text.trim_start()
        .strip_prefix("[batchctl: ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

const MAX_STORED_CHUNK: usize = 256 * 1024;

fn merge_chunk(
    pending: &mut Vec<NewLogChunk>,
    (job_id, number, node): (&JobId, u32, u32),
    chunk: LogChunk,
) {
    if let Some(last) = pending.last_mut() {
        if last.stream == chunk.stream && last.data.len() + chunk.data.len() <= MAX_STORED_CHUNK {
            last.data.extend_from_slice(&chunk.data);
            last.cursor = chunk.next.0;
            return;
        }
    }
    pending.push(NewLogChunk {
        job_id: job_id.clone(),
        attempt_number: number,
        node,
        stream: chunk.stream,
        data: chunk.data.to_vec(),
        cursor: chunk.next.0,
    });
}

/// Stores what is pending as `core::output_limit` plans it, waiting out a database that is away.
async fn flush_logs(store: &Store, output: &mut AttemptOutput, pending: &mut Vec<NewLogChunk>) {
    if pending.is_empty() {
        return;
    }
    let lengths: Vec<usize> = pending.iter().map(|chunk| chunk.data.len()).collect();
    let dropped_before = output.counts.dropped;
    let plan = output.counts.plan(&lengths);
    let part = |chunk: &NewLogChunk, range: std::ops::Range<usize>| NewLogChunk {
        data: chunk.data[range].to_vec(),
        ..chunk.clone()
    };
    let head: Vec<NewLogChunk> = pending
        .iter()
        .zip(&plan.to_head)
        .filter(|(_, n)| **n > 0)
        .map(|(chunk, n)| part(chunk, 0..*n))
        .collect();
    let tail: Vec<NewLogChunk> = pending
        .iter()
        .zip(&plan.to_tail)
        .filter_map(|(chunk, range)| range.map(|(start, end)| part(chunk, start..end)))
        .collect();
    let marker = (plan.add_marker || output.counts.dropped != dropped_before).then(|| {
        let first_cut = pending
            .iter()
            .zip(&plan.to_head)
            .find(|(chunk, n)| **n < chunk.data.len())
            .map_or(&pending[0], |(chunk, _)| chunk);
        NewLogChunk {
            stream: batchctl_executor::OutputStream::Stderr,
            data: output.counts.marker().into_bytes(),
            ..first_cut.clone()
        }
    });
    let mut delay = Duration::from_millis(100);
    loop {
        let marker = marker.as_ref().map(|chunk| (output.marker, chunk));
        match store
            .store_output(&head, marker, &tail, &plan.drop_stored)
            .await
        {
            Ok((marker_key, keys)) => {
                output.marker = marker_key.or(output.marker);
                for (key, chunk) in keys.into_iter().zip(&tail) {
                    output.counts.tail_stored(key, chunk.data.len() as u64);
                }
                pending.clear();
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "storing logs failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
