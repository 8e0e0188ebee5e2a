//! An in-memory executor that records what it was asked and plays each attempt from its command, for
//! the scheduler's tests and the no-op dispatch benchmark. It is never used by the server.
//!
//! Commands it understands (anything else exits 0 at once, which is the no-op executor):
//! - `exit N`: exits with code N at once;
//! - `sleep-ms N`: runs for N milliseconds, then exits 0;
//! - `hang`: runs until killed, then reports exit 143 (SIGTERM);
//! - `echo WORDS…`: writes the words to stdout and exits 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::{
    AttemptHandle, AttemptOutcome, AttemptSpec, Executor, ExecutorError, ListedAttempt, LogChunk,
    LogCursor, ObservedState, OutputStream,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Start(Box<AttemptSpec>),
    Kill(AttemptHandle),
    Remove(AttemptHandle),
}

/// Whether the executor keeps the record `calls` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CallLog {
    /// Every call, in order, for tests that check what the dispatcher asked.
    #[default]
    Kept,
    /// None: for benchmarks, which only count starts. A kept record holds a copy of every
    /// attempt's spec for the whole run (about 1 KB a job), which a real executor does not.
    Dropped,
}

#[derive(Default)]
struct State {
    call_log: CallLog,
    calls: Vec<Call>,
    attempts: HashMap<AttemptHandle, FakeAttempt>,
    unavailable: Option<String>,
    started: usize,
}

impl State {
    fn record(&mut self, call: impl FnOnce() -> Call) {
        match self.call_log {
            CallLog::Kept => self.calls.push(call()),
            CallLog::Dropped => {}
        }
    }
}

struct FakeAttempt {
    spec: AttemptSpec,
    outcome: watch::Receiver<Option<AttemptOutcome>>,
    finish: watch::Sender<Option<AttemptOutcome>>,
    output: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct FakeExecutor {
    state: Arc<Mutex<State>>,
}

impl FakeExecutor {
    pub fn new() -> FakeExecutor {
        FakeExecutor::default()
    }

    /// An executor that keeps `call_log`'s record: `new` keeps every call, benchmarks drop them.
    pub fn with_call_log(call_log: CallLog) -> FakeExecutor {
        let executor = FakeExecutor::default();
        executor.lock().call_log = call_log;
        executor
    }

    /// Every call made so far, in order (none when made `with_call_log(CallLog::Dropped)`).
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn started(&self) -> Vec<AttemptSpec> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                Call::Start(spec) => Some(*spec),
                Call::Kill(_) | Call::Remove(_) => None,
            })
            .collect()
    }

    /// How many attempts were started, without copying the record of calls.
    pub fn started_count(&self) -> usize {
        self.lock().started
    }

    /// The attempts started and not yet finished, as a test's view of what runs.
    pub fn running(&self) -> Vec<AttemptSpec> {
        self.lock()
            .attempts
            .values()
            .filter(|attempt| attempt.outcome.borrow().is_none())
            .map(|attempt| attempt.spec.clone())
            .collect()
    }

    /// Makes the running attempt of `job_id` exit with `exit_code`, as its work would; false when
    /// none runs.
    pub fn exit_job(&self, job_id: &str, exit_code: i32) -> bool {
        let handle = self
            .lock()
            .attempts
            .iter()
            .find(|(_, attempt)| {
                attempt.spec.job_id == job_id && attempt.outcome.borrow().is_none()
            })
            .map(|(handle, _)| handle.clone());
        match handle {
            Some(handle) => {
                self.finish(
                    &handle,
                    AttemptOutcome::Exited {
                        exit_code,
                        signal: None,
                    },
                );
                true
            }
            None => false,
        }
    }

    /// Makes `start` fail as an unreachable backend does, until called with `None`.
    pub fn set_unavailable(&self, reason: Option<&str>) {
        self.lock().unavailable = reason.map(str::to_string);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn finish(&self, handle: &AttemptHandle, outcome: AttemptOutcome) {
        if let Some(attempt) = self.lock().attempts.get(handle) {
            attempt.finish.send_if_modified(|current| {
                let first = current.is_none();
                if first {
                    *current = Some(outcome);
                }
                first
            });
        }
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    async fn start(&self, spec: &AttemptSpec) -> Result<AttemptHandle, ExecutorError> {
        let handle = AttemptHandle(spec.attempt_id.clone());
        let (finish, outcome) = watch::channel(None);
        let words: Vec<&str> = spec.command.iter().map(String::as_str).collect();
        let output = match words.as_slice() {
            ["echo", rest @ ..] => format!("{}\n", rest.join(" ")).into_bytes(),
            _ => Vec::new(),
        };
        {
            let mut state = self.lock();
            if let Some(reason) = &state.unavailable {
                return Err(ExecutorError::Unavailable {
                    reason: reason.clone(),
                });
            }
            state.record(|| Call::Start(Box::new(spec.clone())));
            state.started += 1;
            state.attempts.insert(
                handle.clone(),
                FakeAttempt {
                    spec: spec.clone(),
                    outcome,
                    finish,
                    output,
                },
            );
        }
        let exited = |exit_code| AttemptOutcome::Exited {
            exit_code,
            signal: None,
        };
        match words.as_slice() {
            ["hang"] => {}
            ["exit", code] => self.finish(&handle, exited(code.parse().unwrap_or(1))),
            ["sleep-ms", millis] => {
                let this = self.clone();
                let handle = handle.clone();
                let millis = millis.parse().unwrap_or(0);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    this.finish(&handle, exited(0));
                });
            }
            _ => self.finish(&handle, exited(0)),
        }
        Ok(handle)
    }

    async fn wait(&self, handle: &AttemptHandle) -> Result<AttemptOutcome, ExecutorError> {
        let mut outcome = self
            .lock()
            .attempts
            .get(handle)
            .map(|attempt| attempt.outcome.clone())
            .ok_or_else(|| ExecutorError::UnknownAttempt {
                handle: handle.0.clone(),
            })?;
        let finished =
            outcome
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ExecutorError::UnknownAttempt {
                    handle: handle.0.clone(),
                })?;
        Ok(finished.clone().expect("waited for Some"))
    }

    fn logs(
        &self,
        handle: &AttemptHandle,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        let output = self
            .lock()
            .attempts
            .get(handle)
            .map(|attempt| attempt.output.clone())
            .unwrap_or_default();
        let rest = output.get(from.0 as usize..).unwrap_or_default().to_vec();
        let chunks = (!rest.is_empty()).then(|| {
            Ok(LogChunk {
                stream: OutputStream::Stdout,
                data: Bytes::from(rest),
                next: LogCursor(output.len() as u64),
            })
        });
        stream::iter(chunks).boxed()
    }

    async fn kill(&self, handle: &AttemptHandle, _grace: Duration) -> Result<(), ExecutorError> {
        self.lock().record(|| Call::Kill(handle.clone()));
        self.finish(
            handle,
            AttemptOutcome::Exited {
                exit_code: 143,
                signal: Some(15),
            },
        );
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ListedAttempt>, ExecutorError> {
        let state = self.lock();
        if let Some(reason) = &state.unavailable {
            return Err(ExecutorError::Unavailable {
                reason: reason.clone(),
            });
        }
        Ok(state
            .attempts
            .iter()
            .map(|(handle, attempt)| ListedAttempt {
                handle: handle.clone(),
                job_id: attempt.spec.job_id.clone(),
                attempt_number: attempt.spec.attempt_number,
                state: match attempt.outcome.borrow().clone() {
                    Some(outcome) => ObservedState::Finished(outcome),
                    None => ObservedState::Running,
                },
            })
            .collect())
    }

    async fn remove(&self, handle: &AttemptHandle) -> Result<(), ExecutorError> {
        let mut state = self.lock();
        state.record(|| Call::Remove(handle.clone()));
        state.attempts.remove(handle);
        Ok(())
    }
}
