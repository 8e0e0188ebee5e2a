//! Runs each attempt as a Docker container through the Engine API (bollard).
//!
//! Invariants:
//! - A container is named after its attempt (`<jobId>-<n>`) and labelled with the job id, attempt
//!   number, compute environment and installation id, so `list` finds every container this
//!   installation made after a restart, and never another installation's on a shared engine.
//! - An image that cannot be had fails the attempt at once (`CannotPullContainerError`): pulls are
//!   bounded in time and never retried silently.
//! - An engine that does not answer is `ExecutorError::Unavailable`, which keeps jobs RUNNABLE.
//! - Output is read from the container's log (kept until the container is removed) and the log
//!   cursor is a byte offset into it, so collection resumes exactly after a restart.

mod logs;
pub mod nodes;
pub mod observe;
pub mod spec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::OnceCell;

use crate::{
    AttemptHandle, AttemptOutcome, AttemptSpec, Executor, ExecutorError, ImagePullPolicy,
    ListedAttempt, LogChunk, LogCursor, ObservedState,
};
use logs::log_chunks;
use observe::outcome_of_state;
use spec::{container_body, LABEL_ATTEMPT, LABEL_COMPUTE_ENVIRONMENT, LABEL_JOB_ID, LABEL_OWNER};

/// The longest an image pull may take before the attempt fails.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerExecutorConfig {
    /// `unix:///…` or `tcp://…`; `DOCKER_HOST` or the local socket when absent.
    pub host: Option<String>,
    /// The installation's id: containers are labelled with it, and only its own are listed, so
    /// several installations can share one engine.
    pub owner: String,
    /// The compute environment this executor serves: `list` returns only its containers, so each
    /// is reconciled under its own environment's settings.
    pub compute_environment: String,
    pub allow_privileged: bool,
    pub keep_failed_containers: bool,
    /// The host directories attempts may mount (`core::storage::host_path_allowed`).
    pub allowed_host_paths: Vec<String>,
}

pub struct DockerExecutor {
    config: DockerExecutorConfig,
    /// Connected and version-negotiated on first use, so a server starts even while the engine is
    /// down and picks it up when it returns.
    client: OnceCell<Docker>,
}

impl DockerExecutor {
    pub fn new(config: DockerExecutorConfig) -> DockerExecutor {
        DockerExecutor {
            config,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Docker, ExecutorError> {
        self.client
            .get_or_try_init(|| async {
                let docker = match &self.config.host {
                    Some(host) => Docker::connect_with_host(host),
                    None => Docker::connect_with_defaults(),
                }
                .map_err(unavailable)?;
                // The engine may speak an older API than bollard's default (Docker 20.10: 1.41).
                docker.negotiate_version().await.map_err(unavailable)
            })
            .await
    }

    /// Whether the engine answers, for health reporting and for choosing the default environment.
    pub async fn ping(&self) -> Result<(), ExecutorError> {
        self.client().await?.ping().await.map_err(unavailable)?;
        Ok(())
    }

    async fn ensure_image(&self, docker: &Docker, spec: &AttemptSpec) -> Result<(), ExecutorError> {
        let present = match docker.inspect_image(&spec.image).await {
            Ok(_) => true,
            Err(error) if status(&error) == Some(404) => false,
            Err(error) => return Err(classify(error)),
        };
        let pull = match (spec.image_pull_policy, present) {
            (ImagePullPolicy::Always, _) | (ImagePullPolicy::IfNotPresent, false) => true,
            (ImagePullPolicy::IfNotPresent, true) | (ImagePullPolicy::Never, true) => false,
            (ImagePullPolicy::Never, false) => {
                return Err(refused(format!(
                "CannotPullContainerError: image {:?} is not present and imagePullPolicy is Never",
                spec.image
            )))
            }
        };
        if !pull {
            return Ok(());
        }
        let options = CreateImageOptions {
            from_image: Some(spec.image.clone()),
            ..CreateImageOptions::default()
        };
        let mut progress = docker.create_image(Some(options), None, None);
        let pulled = tokio::time::timeout(PULL_TIMEOUT, async {
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok::<(), DockerError>(())
        })
        .await;
        match pulled {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if is_connection_error(&error) => Err(unavailable(error)),
            Ok(Err(error)) => Err(refused(format!(
                "CannotPullContainerError: {}: {}",
                spec.image,
                message(&error)
            ))),
            Err(_) => Err(refused(format!(
                "CannotPullContainerError: pulling {} took longer than {}s",
                spec.image,
                PULL_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn outcome(&self, docker: &Docker, name: &str) -> Result<AttemptOutcome, ExecutorError> {
        let inspected = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|error| not_found_as_unknown(error, name))?;
        Ok(outcome_of_state(name, &inspected.state.unwrap_or_default()))
    }

    /// A container's labels; empty for one that is gone.
    async fn labels(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<HashMap<String, String>, ExecutorError> {
        match docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => Ok(inspected
                .config
                .and_then(|config| config.labels)
                .unwrap_or_default()),
            Err(error) if status(&error) == Some(404) => Ok(HashMap::new()),
            Err(error) => Err(classify(error)),
        }
    }

    /// Why this environment must refuse a container: privileges it does not allow, or a mount it
    /// cannot make (`Storage::refusal`).
    fn refusal(&self, spec: &AttemptSpec) -> Option<String> {
        crate::privilege_refusal(spec, self.config.allow_privileged).or_else(|| {
            spec.storage.refusal(
                batchctl_core::storage::StorageBackend::Docker,
                &self.config.compute_environment,
                &self.config.allowed_host_paths,
            )
        })
    }

    /// Starts a multi-node attempt (`nodes.rs`), whose containers were checked: every node's
    /// image first, then the nodes.
    async fn start_group(
        &self,
        docker: &Docker,
        spec: &AttemptSpec,
        group: &crate::NodeGroup,
    ) -> Result<AttemptHandle, ExecutorError> {
        let mut pulled: Vec<&str> = Vec::new();
        for node in &group.nodes {
            if !pulled.contains(&node.image.as_str()) {
                self.ensure_image(docker, node).await?;
                pulled.push(&node.image);
            }
        }
        nodes::start_nodes(docker, spec, group, &self.config.owner).await?;
        Ok(AttemptHandle(spec.attempt_id.clone()))
    }
}

/// A container's output from `from` on, following it while it runs (see `Executor::logs`).
fn container_logs(
    docker: Docker,
    name: String,
    from: LogCursor,
) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
    // Bytes of the container's log seen so far, shared by the two stages below.
    let offset = Arc::new(AtomicU64::new(0));
    let following = log_chunks(&docker, &name, true, from, Arc::clone(&offset));
    // A follow stream can end when the container stops, before the engine has written its last
    // partial line. Once the container is not running, one plain read of the whole log catches
    // up from where following stopped.
    let catch_up = futures::stream::once(async move {
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let _ = docker.wait_container(&name, Some(options)).next().await;
        let caught_up = LogCursor(offset.load(Ordering::Acquire).max(from.0));
        log_chunks(
            &docker,
            &name,
            false,
            caught_up,
            Arc::new(AtomicU64::new(0)),
        )
    })
    .flatten();
    following.chain(catch_up).boxed()
}

#[async_trait]
impl Executor for DockerExecutor {
    async fn start(&self, spec: &AttemptSpec) -> Result<AttemptHandle, ExecutorError> {
        // Every container the attempt makes: its own, or each node's.
        let refusal = match &spec.nodes {
            None => self.refusal(spec),
            Some(group) => group.nodes.iter().find_map(|node| self.refusal(node)),
        };
        if let Some(reason) = refusal {
            return Err(refused(reason));
        }
        let docker = self.client().await?;
        if let Some(group) = &spec.nodes {
            return self.start_group(docker, spec, group).await;
        }
        self.ensure_image(docker, spec).await?;
        let name = spec.attempt_id.clone();
        let options = || CreateContainerOptions {
            name: Some(name.clone()),
            ..CreateContainerOptions::default()
        };
        let created = docker
            .create_container(Some(options()), container_body(spec, &self.config.owner))
            .await;
        match created {
            Ok(_) => {}
            // A container of this attempt left by a start that never got recorded: replace it.
            Err(error) if status(&error) == Some(409) => {
                let remove = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..RemoveContainerOptions::default()
                };
                docker
                    .remove_container(&name, Some(remove))
                    .await
                    .map_err(classify)?;
                docker
                    .create_container(Some(options()), container_body(spec, &self.config.owner))
                    .await
                    .map_err(classify)?;
            }
            Err(error) => return Err(classify_start(error)),
        }
        docker
            .start_container(&name, None::<StartContainerOptions>)
            .await
            .map_err(classify_start)?;
        Ok(AttemptHandle(name))
    }

    async fn wait(&self, handle: &AttemptHandle) -> Result<AttemptOutcome, ExecutorError> {
        let docker = self.client().await?;
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut waiting = docker.wait_container(&handle.0, Some(options));
        match waiting.next().await {
            // A non-zero exit arrives as an error carrying the code; the inspection below reads it.
            Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) | None => {}
            Some(Err(error)) => return Err(not_found_as_unknown(error, &handle.0)),
        }
        let inspected = docker
            .inspect_container(&handle.0, None::<InspectContainerOptions>)
            .await
            .map_err(|error| not_found_as_unknown(error, &handle.0))?;
        let multinode = inspected
            .config
            .as_ref()
            .and_then(|config| config.labels.as_ref())
            .is_some_and(|labels| labels.contains_key(nodes::LABEL_NUM_NODES));
        if multinode {
            // A multi-node attempt ends with its main node: the others stop now.
            nodes::main_node_ended(docker, &handle.0).await?;
        }
        Ok(outcome_of_state(
            &handle.0,
            &inspected.state.unwrap_or_default(),
        ))
    }

    fn logs(
        &self,
        handle: &AttemptHandle,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        let Some(docker) = self.client.get().cloned() else {
            return futures::stream::once(async {
                Err(ExecutorError::Unavailable {
                    reason: "the Docker engine has not been reached yet".into(),
                })
            })
            .boxed();
        };
        container_logs(docker, handle.0.clone(), from)
    }

    fn node_logs(
        &self,
        handle: &AttemptHandle,
        node: u32,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        let Some(docker) = self.client.get().cloned() else {
            return self.logs(handle, from);
        };
        let attempt = handle.0.clone();
        futures::stream::once(async move {
            let inspected = docker
                .inspect_container(&attempt, None::<InspectContainerOptions>)
                .await;
            match inspected {
                Ok(inspected) => {
                    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
                    let name = nodes::node_container(&attempt, node, &labels);
                    container_logs(docker, name, from)
                }
                Err(error) => {
                    futures::stream::once(async move { Err(not_found_as_unknown(error, &attempt)) })
                        .boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }

    async fn kill(&self, handle: &AttemptHandle, grace: Duration) -> Result<(), ExecutorError> {
        let docker = self.client().await?;
        let options = StopContainerOptions {
            t: Some(grace.as_secs().max(1).min(i32::MAX as u64) as i32),
            ..StopContainerOptions::default()
        };
        let multinode = self
            .labels(docker, &handle.0)
            .await?
            .contains_key(nodes::LABEL_NUM_NODES);
        let workers = async {
            match multinode {
                true => nodes::stop_workers(docker, &handle.0, options.t.unwrap_or(1)).await,
                false => Ok(()),
            }
        };
        let main = async {
            match docker
                .stop_container(&handle.0, Some(options.clone()))
                .await
            {
                Ok(()) => Ok(()),
                // Already stopped (304) or gone (404): the outcome a stop wants.
                Err(error) if matches!(status(&error), Some(304 | 404)) => Ok(()),
                Err(error) => Err(classify(error)),
            }
        };
        let (main, workers) = futures::join!(main, workers);
        main.and(workers)
    }

    async fn list(&self) -> Result<Vec<ListedAttempt>, ExecutorError> {
        let docker = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![
                    LABEL_JOB_ID.to_string(),
                    format!("{LABEL_OWNER}={}", self.config.owner),
                    format!(
                        "{LABEL_COMPUTE_ENVIRONMENT}={}",
                        self.config.compute_environment
                    ),
                ],
            )])),
            ..ListContainersOptions::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(classify)?;
        let mut listed = Vec::with_capacity(containers.len());
        for summary in containers {
            let labels = summary.labels.unwrap_or_default();
            // A worker of a multi-node attempt is part of its main node's attempt.
            if labels.contains_key(nodes::LABEL_WORKER) {
                continue;
            }
            let Some(name) = summary
                .names
                .and_then(|names| names.first().map(|n| n.trim_start_matches('/').to_string()))
            else {
                continue;
            };
            let attempt_number = labels
                .get(LABEL_ATTEMPT)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let inspected = docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .map_err(classify)?;
            let state = inspected.state.unwrap_or_default();
            let observed = match (state.running, state.status.map(|s| s.to_string())) {
                // A gang a dead server left half-started: started again, whole.
                (Some(true), _) if !nodes::gang_complete(docker, &name, &labels).await? => {
                    ObservedState::NeverStarted
                }
                (Some(true), _) => ObservedState::Running,
                (_, Some(status)) if status == "created" => ObservedState::NeverStarted,
                (_, Some(status)) if status == "restarting" || status == "paused" => {
                    ObservedState::Running
                }
                _ => ObservedState::Finished(self.outcome(docker, &name).await?),
            };
            listed.push(ListedAttempt {
                handle: AttemptHandle(name),
                job_id: labels.get(LABEL_JOB_ID).cloned().unwrap_or_default(),
                attempt_number,
                state: observed,
            });
        }
        Ok(listed)
    }

    async fn remove(&self, handle: &AttemptHandle) -> Result<(), ExecutorError> {
        let docker = self.client().await?;
        if self.config.keep_failed_containers {
            let failed = match self.outcome(docker, &handle.0).await {
                Ok(AttemptOutcome::Exited { exit_code: 0, .. }) => false,
                Ok(_) => true,
                Err(ExecutorError::UnknownAttempt { .. }) => return Ok(()),
                Err(error) => return Err(error),
            };
            if failed {
                tracing::info!(container = %handle.0, "keeping the failed attempt's container for debugging");
                return Ok(());
            }
        }
        if self
            .labels(docker, &handle.0)
            .await?
            .contains_key(nodes::LABEL_NUM_NODES)
        {
            return nodes::remove_all(docker, &handle.0).await;
        }
        let options = RemoveContainerOptions {
            force: true,
            // Anonymous volumes (scratch space) go with their container; named ones stay.
            v: true,
            ..RemoveContainerOptions::default()
        };
        match docker.remove_container(&handle.0, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if status(&error) == Some(404) => Ok(()),
            Err(error) => Err(classify(error)),
        }
    }
}

pub(super) fn status(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn is_connection_error(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            // The client's transport: a refused or broken connection to the engine's socket
            // (an engine stopped or restarting).
            | DockerError::HyperLegacyError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
    ) || matches!(status(error), Some(500..)) && message(error).contains("connection refused")
}

fn unavailable(error: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Unavailable {
        reason: format!("the Docker engine does not answer: {error}"),
    }
}

fn refused(reason: String) -> ExecutorError {
    ExecutorError::Refused { reason }
}

/// Engine errors: connection trouble can pass, anything else is an answer.
pub(super) fn classify(error: DockerError) -> ExecutorError {
    if is_connection_error(&error) {
        unavailable(error)
    } else {
        refused(format!("the Docker engine refused: {}", message(&error)))
    }
}

/// At start, an engine's refusal means the container cannot start (a bad user, a bad command).
pub(super) fn classify_start(error: DockerError) -> ExecutorError {
    if is_connection_error(&error) {
        unavailable(error)
    } else {
        refused(format!("CannotStartContainerError: {}", message(&error)))
    }
}

fn not_found_as_unknown(error: DockerError, name: &str) -> ExecutorError {
    if status(&error) == Some(404) {
        ExecutorError::UnknownAttempt {
            handle: name.to_string(),
        }
    } else {
        classify(error)
    }
}
