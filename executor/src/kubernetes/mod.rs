//! Runs each attempt as a Kubernetes `batch/v1` Job through the API server (kube + k8s-openapi).
//!
//! Invariants:
//! - A Job is named after its attempt (`<jobId>-<n>`), labelled with the job id, attempt number,
//!   compute environment and installation id, so `list` finds every Job this installation made for
//!   this environment after a restart, and never another installation's.
//! - Kubernetes never retries (`backoffLimit: 0`, `restartPolicy: Never`): retries are the
//!   scheduler's. The attempt timeout is also `activeDeadlineSeconds`, so the cluster enforces it
//!   even while no scheduler runs.
//! - An image that cannot be pulled fails the attempt after `image_pull_timeout` (the Job is then
//!   deleted); a pod that cannot be scheduled keeps the attempt STARTING, with the reason reported
//!   through `until_running`.
//! - Output is read from `pods/log` (stdout and stderr merged, as Kubernetes keeps them) and the
//!   cursor is a byte offset into it, so collection resumes exactly after a restart.
//! - An API server that does not answer, or answers 5xx, is `ExecutorError::Unavailable`, which
//!   keeps jobs RUNNABLE; a 4xx is an answer (`Refused`).

mod cache;
mod logs;
pub mod nodes;
pub mod observe;
pub mod spec;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use futures::AsyncReadExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::{
    AttemptHandle, AttemptOutcome, AttemptSpec, Executor, ExecutorError, ListedAttempt, LogChunk,
    LogCursor, ObservedState, OutputStream,
};
use cache::Cache;
use observe::{observe, Observation};
use spec::{
    job_manifest, secret_manifest, selector, JobSettings, ANNOTATION_JOB_ID, LABEL_ATTEMPT,
};

/// The label Kubernetes' Job controller puts on a Job's pods.
pub(crate) const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// How long an attempt goes without being looked at when the cache reports no change.
const RECHECK: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesExecutorConfig {
    pub namespace: String,
    /// A kubeconfig file; without one, `KUBECONFIG` or `~/.kube/config`, and the pod's service
    /// account when running in a cluster.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; its current context when absent.
    pub context: Option<String>,
    /// The compute environment this executor serves: `list` returns only its Jobs.
    pub compute_environment: String,
    pub job: JobSettings,
    /// How long an image may fail to pull before the attempt fails.
    pub image_pull_timeout: Duration,
    /// The node directories attempts may mount as `hostPath` volumes.
    pub allowed_host_paths: Vec<String>,
}

pub struct KubernetesExecutor {
    config: KubernetesExecutorConfig,
    /// Connected on first use, so a server starts while the cluster is unreachable.
    client: Arc<OnceCell<Client>>,
    /// This environment's Jobs and pods, watched once for every attempt.
    cache: Arc<OnceCell<Arc<Cache>>>,
    /// The cluster's minor version, read once, for what multi-node attempts need.
    minor_version: Arc<OnceCell<u32>>,
}

impl KubernetesExecutor {
    pub fn new(config: KubernetesExecutorConfig) -> KubernetesExecutor {
        KubernetesExecutor {
            config,
            client: Arc::default(),
            cache: Arc::default(),
            minor_version: Arc::default(),
        }
    }

    async fn client(&self) -> Result<&Client, ExecutorError> {
        self.client
            .get_or_try_init(|| async {
                let options = KubeConfigOptions {
                    context: self.config.context.clone(),
                    ..KubeConfigOptions::default()
                };
                let config = match (&self.config.kubeconfig, &self.config.context) {
                    (Some(path), _) => {
                        let kubeconfig = Kubeconfig::read_from(path).map_err(|error| {
                            unavailable(format!(
                                "cannot read kubeconfig {}: {error}",
                                path.display()
                            ))
                        })?;
                        Config::from_custom_kubeconfig(kubeconfig, &options)
                            .await
                            .map_err(|error| unavailable(format!("kubeconfig: {error}")))?
                    }
                    (None, Some(_)) => Config::from_kubeconfig(&options)
                        .await
                        .map_err(|error| unavailable(format!("kubeconfig: {error}")))?,
                    (None, None) => Config::infer().await.map_err(|error| {
                        unavailable(format!("no kubeconfig and not in a cluster: {error}"))
                    })?,
                };
                Client::try_from(config).map_err(|error| unavailable(error.to_string()))
            })
            .await
    }

    /// Makes `job` the owner of its attempt's Secret, so that Kubernetes deletes the Secret with
    /// the Job (its `ttlSecondsAfterFinished`) should batchctl never remove the attempt. Failing is
    /// only logged: `remove` deletes the Secret too.
    async fn give_secret_to(&self, job: &Job) {
        let (Some(name), Some(uid)) = (&job.metadata.name, &job.metadata.uid) else {
            return;
        };
        let patch = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
        }]}});
        let result = match self.secrets().await {
            Ok(secrets) => secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(classify),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(attempt = %name, %error, "cannot make the Job own its Secret; it is deleted when the attempt is removed");
        }
    }

    /// The cluster's minor version (`1.31` → 31), read once.
    async fn minor_version(&self) -> Result<u32, ExecutorError> {
        let client = self.client().await?;
        self.minor_version
            .get_or_try_init(|| async {
                let info = client.apiserver_version().await.map_err(classify)?;
                // Some providers add a suffix (`31+`).
                let digits: String = info
                    .minor
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().map_err(|_| ExecutorError::Refused {
                    reason: format!(
                        "the Kubernetes API reports a version this executor cannot read: {}.{}",
                        info.major, info.minor
                    ),
                })
            })
            .await
            .copied()
    }

    /// The headless Service that names a multi-node attempt's pods, owned by its Job (so it goes
    /// with the Job); one left by an unrecorded start of the same attempt is kept.
    async fn create_node_service(
        &self,
        spec: &AttemptSpec,
        job: &Job,
    ) -> Result<(), ExecutorError> {
        let services: Api<Service> =
            Api::namespaced(self.client().await?.clone(), &self.config.namespace);
        let service = nodes::service_manifest(spec, &self.config.job, job);
        match services.create(&PostParams::default(), &service).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(kube::Error::Api(status)) if status.code < 500 => Err(ExecutorError::Refused {
                reason: format!(
                    "CannotStartContainerError: the Kubernetes API refused the nodes' Service: {} ({})",
                    status.message, status.reason
                ),
            }),
            Err(error) => Err(classify(error)),
        }
    }

    async fn secrets(&self) -> Result<Api<Secret>, ExecutorError> {
        Ok(Api::namespaced(
            self.client().await?.clone(),
            &self.config.namespace,
        ))
    }

    async fn apis(&self) -> Result<(Api<Job>, Api<Pod>), ExecutorError> {
        let client = self.client().await?.clone();
        Ok((
            Api::namespaced(client.clone(), &self.config.namespace),
            Api::namespaced(client, &self.config.namespace),
        ))
    }

    async fn cache(&self) -> Result<&Arc<Cache>, ExecutorError> {
        let (jobs, pods) = self.apis().await?;
        let selector = selector(&self.config.job.owner, &self.config.compute_environment);
        Ok(self
            .cache
            .get_or_init(|| async { Cache::start(jobs, pods, &self.config.namespace, selector) })
            .await)
    }

    /// The attempt's Job (if it still exists) and its pods, from the cache or, for what the cache
    /// lacks, from the API server; and the cache generation to wait for a change after.
    async fn read(&self, name: &str) -> Result<(Option<Job>, Vec<Pod>, u64), ExecutorError> {
        let cache = self.cache().await?;
        let generation = cache.generation();
        let job = match cache.get(name) {
            Some((job, pods)) if !observe::job_ended(&job) => {
                return Ok((Some(job), pods, generation))
            }
            // The Job's end and its pod's end come on two watches: the pod's may not have arrived
            // yet, and it says why (Evicted, OOMKilled, an exit code). Its pods are read once from
            // the server, so the outcome never rests on a lagging pod.
            Some((job, _)) => Some(job),
            None => {
                let (jobs, _) = self.apis().await?;
                jobs.get_opt(name).await.map_err(classify)?
            }
        };
        let (_, pods) = self.apis().await?;
        let listed = pods
            .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={name}")))
            .await
            .map_err(classify)?;
        Ok((job, listed.items, generation))
    }

    /// Where the attempt stands; `None` once neither its Job nor a pod of it exists.
    async fn observe(&self, name: &str) -> Result<(Option<Observation>, u64), ExecutorError> {
        let (job, pods, generation) = self.read(name).await?;
        if job.is_none() && pods.is_empty() {
            return Ok((None, generation));
        }
        let job = job.unwrap_or_default();
        // Kubernetes' timestamps have whole seconds: the Job was created at most a second after
        // the one it names. Counting from the end of that second, an image pull is given at
        // least its bounded wait (never less, which could fail it before it was seen waiting).
        let created = job
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0.as_millisecond() + 999)
            .unwrap_or_else(now_millis);
        let age = Duration::from_millis((now_millis() - created).max(0) as u64);
        let observation = observe(&job, &pods, age, self.config.image_pull_timeout);
        Ok((Some(observation), generation))
    }

    /// Resolves at the next change the cache sees after `generation`, or after `within` (a
    /// while, by default) without one: the attempt is then looked at again anyway.
    async fn next_change(&self, generation: u64, within: Option<Duration>) {
        let within = within.unwrap_or(RECHECK).max(Duration::from_millis(20));
        match self.cache().await {
            Ok(cache) => cache.changed_after(generation, within).await,
            Err(_) => tokio::time::sleep(within.min(Duration::from_secs(1))).await,
        }
    }

    /// An attempt's output (`node`: one node's of a multi-node attempt, else the attempt's pod's),
    /// copied by a task of its own.
    fn pod_logs(
        &self,
        handle: &AttemptHandle,
        node: Option<u32>,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let executor = Arc::new(KubernetesExecutor {
            config: self.config.clone(),
            // The same cells: a log stream started before the first look at the cluster must not
            // connect, or start watching, on its own.
            client: Arc::clone(&self.client),
            cache: Arc::clone(&self.cache),
            minor_version: Arc::clone(&self.minor_version),
        });
        let name = handle.0.clone();
        tokio::spawn(async move {
            if let Err(error) = executor.copy_logs((&name, node), from, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
        .boxed()
    }

    async fn delete_job(&self, name: &str, grace: Option<Duration>) -> Result<(), ExecutorError> {
        let (jobs, _) = self.apis().await?;
        let mut params = DeleteParams::background();
        if let Some(grace) = grace {
            params = params.grace_period(grace.as_secs().min(u64::from(u32::MAX)) as u32);
        }
        match jobs.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(classify(error)),
        }
    }
}

#[async_trait]
impl Executor for KubernetesExecutor {
    async fn start(&self, spec: &AttemptSpec) -> Result<AttemptHandle, ExecutorError> {
        if let Some(reason) = crate::privilege_refusal(spec, self.config.job.allow_privileged)
            .or_else(|| spec.linux.unsupported_on_kubernetes())
            .or_else(|| spec::pod_refusal(spec, &self.config.job))
            .or_else(|| {
                spec.storage.refusal(
                    batchctl_core::storage::StorageBackend::Kubernetes,
                    &self.config.compute_environment,
                    &self.config.allowed_host_paths,
                )
            })
        {
            return Err(ExecutorError::Refused { reason });
        }
        if let Some(group) = &spec.nodes {
            let minor = self.minor_version().await?;
            if let Some(reason) =
                nodes::uniformity_refusal(group).or_else(|| nodes::version_refusal(minor))
            {
                return Err(ExecutorError::Refused { reason });
            }
        }
        let (jobs, _) = self.apis().await?;
        let timeout = spec.timeout_seconds.map(Duration::from_secs);
        let manifest = job_manifest(spec, &self.config.job, timeout);
        // The Secret first: a pod that names a Secret not there yet waits (CreateContainerConfigError).
        if let Some(secret) = secret_manifest(spec, &self.config.job) {
            match self.secrets().await?.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                // Made by a start of this attempt that was never recorded; its values are the same
                // secrets', read moments apart.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(kube::Error::Api(status)) if status.code < 500 => {
                    return Err(ExecutorError::Refused {
                        reason: format!(
                            "CannotStartContainerError: the Kubernetes API refused the attempt's Secret: {} ({})",
                            status.message, status.reason
                        ),
                    })
                }
                Err(error) => return Err(classify(error)),
            }
        }
        let created = match jobs.create(&PostParams::default(), &manifest).await {
            Ok(job) => {
                if !spec.secrets.is_empty() {
                    self.give_secret_to(&job).await;
                }
                Some(job)
            }
            // This attempt's Job from a start that was never recorded: it is the same attempt.
            Err(kube::Error::Api(status)) if status.is_already_exists() => None,
            Err(kube::Error::Api(status)) if status.code < 500 => {
                return Err(ExecutorError::Refused {
                    reason: format!(
                        "CannotStartContainerError: the Kubernetes API refused the Job: {} ({})",
                        status.message, status.reason
                    ),
                })
            }
            Err(error) => return Err(classify(error)),
        };
        if spec.nodes.is_some() {
            let job = match created {
                Some(job) => job,
                None => jobs.get(&spec.attempt_id).await.map_err(classify)?,
            };
            self.create_node_service(spec, &job).await?;
        }
        Ok(AttemptHandle(spec.attempt_id.clone()))
    }

    async fn until_running(
        &self,
        handle: &AttemptHandle,
        waiting: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), ExecutorError> {
        let mut told: Option<String> = None;
        loop {
            let (observation, version) = self.observe(&handle.0).await?;
            match observation {
                None | Some(Observation::Running | Observation::Finished(_)) => return Ok(()),
                Some(Observation::Waiting { reason, recheck_in }) => {
                    if let Some(reason) = reason.filter(|r| told.as_ref() != Some(r)) {
                        waiting(reason.clone());
                        told = Some(reason);
                    }
                    self.next_change(version, recheck_in).await;
                }
            }
        }
    }

    async fn wait(&self, handle: &AttemptHandle) -> Result<AttemptOutcome, ExecutorError> {
        loop {
            let (observation, version) = self.observe(&handle.0).await?;
            match observation {
                None => {
                    return Err(ExecutorError::UnknownAttempt {
                        handle: handle.0.clone(),
                    })
                }
                Some(Observation::Finished(outcome)) => {
                    if matches!(outcome, AttemptOutcome::StartFailed { .. }) {
                        // Stop the kubelet from trying to pull or start it any longer.
                        self.delete_job(&handle.0, None).await?;
                    }
                    return Ok(outcome);
                }
                Some(Observation::Running) => self.next_change(version, None).await,
                Some(Observation::Waiting { recheck_in, .. }) => {
                    self.next_change(version, recheck_in).await
                }
            }
        }
    }

    fn logs(
        &self,
        handle: &AttemptHandle,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        self.pod_logs(handle, None, from)
    }

    fn node_logs(
        &self,
        handle: &AttemptHandle,
        node: u32,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        self.pod_logs(handle, Some(node), from)
    }

    async fn kill(&self, handle: &AttemptHandle, grace: Duration) -> Result<(), ExecutorError> {
        self.delete_job(&handle.0, Some(grace)).await?;
        // The pods go with their Job (background propagation), each after its grace period.
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let (_, pods, _) = self.read(&handle.0).await?;
            if pods.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ListedAttempt>, ExecutorError> {
        let (jobs, _) = self.apis().await?;
        let listed = jobs
            .list(&ListParams::default().labels(&selector(
                &self.config.job.owner,
                &self.config.compute_environment,
            )))
            .await
            .map_err(classify)?;
        let mut attempts = Vec::with_capacity(listed.items.len());
        for job in listed.items {
            let Some(name) = job.metadata.name.clone() else {
                continue;
            };
            let job_id = job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_JOB_ID).cloned())
                .unwrap_or_default();
            let attempt_number = job
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_ATTEMPT))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let state = match self.observe(&name).await?.0 {
                Some(Observation::Finished(outcome)) => ObservedState::Finished(outcome),
                // A Job exists, so Kubernetes will run it: adopt it rather than start another.
                Some(Observation::Running | Observation::Waiting { .. }) => ObservedState::Running,
                None => continue,
            };
            attempts.push(ListedAttempt {
                handle: AttemptHandle(name),
                job_id,
                attempt_number,
                state,
            });
        }
        Ok(attempts)
    }

    async fn remove(&self, handle: &AttemptHandle) -> Result<(), ExecutorError> {
        self.delete_job(&handle.0, None).await?;
        // The attempt's Secret, if it had one.
        match self
            .secrets()
            .await?
            .delete(&handle.0, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(classify(error)),
        }
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unavailable(reason: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Unavailable {
        reason: format!("the Kubernetes API does not answer: {reason}"),
    }
}

/// API errors: a 4xx is an answer, anything else may pass.
fn classify(error: kube::Error) -> ExecutorError {
    match error {
        kube::Error::Api(status) if (400..500).contains(&status.code) => ExecutorError::Refused {
            reason: format!(
                "the Kubernetes API refused: {} ({})",
                status.message, status.reason
            ),
        },
        other => unavailable(other),
    }
}
