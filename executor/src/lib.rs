//! The executor contract: how the scheduler starts, watches, reads, stops and rediscovers the work of
//! one job attempt, whatever runs it.
//!
//! The contract is shaped after the models of the backends it serves: a Docker container (create,
//! start, wait, logs since a timestamp, stop with a grace period, list by label) and a Kubernetes Job
//! (create, watch, `pods/log?sinceTime`, delete, list by label selector). A local process fits the
//! same shape through a small supervising shim per attempt (see [`process`]).
//!
//! Invariants:
//! - An executor never decides what happens to a job. It reports what it observed ([`AttemptOutcome`],
//!   [`ObservedState`]); timeouts, retries and terminations are the scheduler's decisions.
//! - Every attempt is named by the scheduler ([`AttemptSpec::attempt_id`]) before it starts, so an
//!   attempt can be found again after a scheduler restart from what the store recorded.
//! - `start` does not return until the backend holds a durable record of the attempt: after it
//!   returns, `list` reports the attempt until `remove` is called.

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod process;

#[cfg(feature = "fake")]
pub mod fake;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

pub use batchctl_core::contract::{
    privilege_refusal, AttemptHandle, AttemptOutcome, AttemptSpec, EnvironmentVariable,
    ImagePullPolicy, ListedAttempt, LogCursor, NodeGroup, ObservedState, OutputStream, Resources,
    SecretVariable, MAIN_NODE_ADDRESS_VARIABLE, UNPRIVILEGED_CAPABILITIES,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: OutputStream,
    pub data: Bytes,
    /// Where to resume to read what follows this chunk.
    pub next: LogCursor,
}

/// Errors say whether trying again later could help, so the scheduler can keep a job RUNNABLE when a
/// backend is briefly unreachable instead of failing it.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("executor unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("attempt {handle} is not known to the executor")]
    UnknownAttempt { handle: String },
    #[error("executor I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("executor record {path} is unreadable: {reason}")]
    CorruptRecord { path: String, reason: String },
    /// The backend answered and will not run the attempt as asked (an image that cannot be had, a
    /// privileged container where none is allowed). The reason is what the job's status shows.
    #[error("{reason}")]
    Refused { reason: String },
}

impl ExecutorError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecutorError::Unavailable { .. } | ExecutorError::Io { .. } => true,
            ExecutorError::UnknownAttempt { .. }
            | ExecutorError::CorruptRecord { .. }
            | ExecutorError::Refused { .. } => false,
        }
    }
}

/// The narrow edge between the scheduler and whatever runs work. Object safe, so a scheduler can hold
/// one per compute environment behind `Arc<dyn Executor>`.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Starts the attempt. Failing to start the *work* (a missing command, say) is not an error: it
    /// is reported by `wait` as [`AttemptOutcome::StartFailed`]. An error means the backend could not
    /// be asked at all.
    async fn start(&self, spec: &AttemptSpec) -> Result<AttemptHandle, ExecutorError>;

    /// Resolves once the attempt's work runs (or has ended, or can no longer start). Until then,
    /// `waiting` is told why it waits — a pod that cannot be scheduled — each time the reason
    /// changes. Backends whose `start` returns with the work running keep the default.
    async fn until_running(
        &self,
        handle: &AttemptHandle,
        waiting: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), ExecutorError> {
        let _ = (handle, waiting);
        Ok(())
    }

    /// Resolves when the attempt's work has ended.
    async fn wait(&self, handle: &AttemptHandle) -> Result<AttemptOutcome, ExecutorError>;

    /// The attempt's output from `from` on. The stream follows a running attempt and ends after the
    /// attempt has ended and everything it wrote has been read.
    fn logs(
        &self,
        handle: &AttemptHandle,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>>;

    /// The output of node `node` of a multi-node attempt (`AttemptSpec::nodes`), as `logs` reads
    /// an attempt's. A backend that runs no multi-node attempts refuses them at `start`, so this
    /// is never asked of it.
    fn node_logs(
        &self,
        handle: &AttemptHandle,
        node: u32,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        let _ = from;
        let reason = format!(
            "attempt {} has no node {node}: this backend runs no multi-node attempts",
            handle.0
        );
        futures::stream::once(async move { Err(ExecutorError::Refused { reason }) }).boxed()
    }

    /// Asks the work to stop (SIGTERM or the backend's equivalent), and forces it after `grace`.
    /// Returns once the stop has been forced or the work has ended.
    async fn kill(&self, handle: &AttemptHandle, grace: Duration) -> Result<(), ExecutorError>;

    /// Every attempt this backend holds a record of, running or not.
    async fn list(&self) -> Result<Vec<ListedAttempt>, ExecutorError>;

    /// Forgets an attempt whose outcome and logs the scheduler has durably recorded.
    async fn remove(&self, handle: &AttemptHandle) -> Result<(), ExecutorError>;
}
