//! The domain: compute environments, queues, job definitions and jobs, already validated.
//! Nothing here does I/O; the wire forms live in the scheduler's `manifest` and `api`.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::contract::ImagePullPolicy;
pub use crate::retry_policy::{
    Backoff, ExitRule, ResourceAdjustments, RetryAction, RetryPolicy, DEFAULT_MAX_DISRUPTIONS,
    MAX_DISRUPTIONS,
};
use serde::{Deserialize, Serialize};

/// Declares a validated name type: 1 to 128 letters, digits, hyphens and underscores, as AWS Batch.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                validate_name(&value).map(|()| $name(value))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The name of a compute environment.
    EnvironmentName
);
name_type!(
    /// The name of a job queue.
    QueueName
);
name_type!(
    /// The name of a job definition (all its revisions share it).
    DefinitionName
);
name_type!(
    /// A job's name, chosen by whoever submits it; not unique.
    JobName
);

pub fn validate_name(value: &str) -> Result<(), String> {
    let valid_characters = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match (value.len(), valid_characters) {
        (0, _) => Err("must not be empty".into()),
        (129.., _) => Err(format!("is {} characters long; 128 at most", value.len())),
        (_, false) => Err(format!(
            "{value:?} may only contain letters, digits, hyphens and underscores"
        )),
        (_, true) => Ok(()),
    }
}

/// A job's id: a UUID, as AWS Batch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job needs or an environment offers. vCPUs in thousandths, so 0.25 is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub vcpu_millis: u64,
    pub memory_mib: u64,
    pub gpus: u64,
}

impl Resources {
    pub fn fits_within(&self, available: &Resources) -> bool {
        self.vcpu_millis <= available.vcpu_millis
            && self.memory_mib <= available.memory_mib
            && self.gpus <= available.gpus
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        Resources {
            vcpu_millis: self.vcpu_millis + other.vcpu_millis,
            memory_mib: self.memory_mib + other.memory_mib,
            gpus: self.gpus + other.gpus,
        }
    }

    pub fn saturating_minus(&self, other: &Resources) -> Resources {
        Resources {
            vcpu_millis: self.vcpu_millis.saturating_sub(other.vcpu_millis),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentType {
    Process,
    Docker,
    Kubernetes,
}

/// What runs an environment's attempts, with the settings of that kind of backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Backend {
    Process,
    Docker(DockerSettings),
    Kubernetes(KubernetesSettings),
}

impl Backend {
    pub fn environment_type(&self) -> EnvironmentType {
        match self {
            Backend::Process => EnvironmentType::Process,
            Backend::Docker(_) => EnvironmentType::Docker,
            Backend::Kubernetes(_) => EnvironmentType::Kubernetes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DockerSettings {
    /// The engine's address (`unix:///var/run/docker.sock`, `tcp://…`); `DOCKER_HOST` or the local
    /// socket when absent.
    pub host: Option<String>,
    /// Whether definitions that ask for `privileged: true` may run here.
    pub allow_privileged: bool,
    /// Keep the containers of failed attempts for debugging instead of removing them.
    pub keep_failed_containers: bool,
    /// The host directories jobs may mount (`host: {sourcePath}` volumes), each with what is
    /// below it; none when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_host_paths: Vec<String>,
    /// The ids of the engine host's GPUs jobs may get (`core::gpus`); `0` to `maxGpus - 1` when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_ids: Vec<String>,
}

/// Where a kubernetes environment's Jobs go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubernetesSettings {
    pub namespace: String,
    /// A kubeconfig file; `KUBECONFIG`, `~/.kube/config` or the pod's service account when absent.
    pub kubeconfig: Option<String>,
    /// A context of the kubeconfig; its current context when absent.
    pub context: Option<String>,
    /// The service account the Jobs' pods run as; the namespace's default when absent.
    pub service_account_name: Option<String>,
    /// Whether definitions that ask for `privileged: true` may run here.
    pub allow_privileged: bool,
    /// The node directories jobs may mount as `hostPath` volumes; none when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_host_paths: Vec<String>,
    /// Node selector, tolerations, affinity, priority class and pod user for every job here; a
    /// definition's `podProperties` go over them.
    #[serde(default, skip_serializing_if = "is_default_pod")]
    pub pod_defaults: Box<crate::pod::PodOptions>,
}

fn is_default_pod(options: &crate::pod::PodOptions) -> bool {
    *options == crate::pod::PodOptions::default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ResourceState {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeEnvironment {
    pub name: EnvironmentName,
    pub backend: Backend,
    pub state: ResourceState,
    pub capacity: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobQueue {
    pub name: QueueName,
    pub priority: i64,
    pub state: ResourceState,
    /// In the order they are tried: the first with room wins.
    pub compute_environments: Vec<EnvironmentName>,
    /// `jobStateTimeLimitActions` (state RUNNABLE, action CANCEL): a job RUNNABLE for longer is
    /// cancelled with the reason, so a job that cannot be placed does not wait forever.
    #[serde(default)]
    pub runnable_time_limits: Vec<RunnableTimeLimit>,
    /// With a fair-share policy, jobs carry a share identifier and shares take turns by usage
    /// (see `crate::fair_share`); without one, the queue is FIFO.
    #[serde(default)]
    pub fair_share: Option<FairSharePolicy>,
    /// How long this queue's finished jobs are kept, where it differs from the server's default.
    #[serde(default)]
    pub job_retention: JobRetention,
    /// Kueue's `stopPolicy: Hold`: nothing new is placed from the queue; what runs goes on, and
    /// submits are still taken.
    #[serde(default)]
    pub held: bool,
    /// `stopPolicy: HoldAndDrain`: held, and what runs is stopped and requeued
    /// (`retry::StopCause::Drained`).
    #[serde(default)]
    pub drain: bool,
    /// `maxRunningJobs`: at most this many of the queue's jobs STARTING or RUNNING at once.
    #[serde(default)]
    pub max_running_jobs: Option<u32>,
}

/// A queue's `jobRetention`: seconds its finished jobs are kept, by outcome; `None` keeps the
/// server's default (`core::lifecycle::Retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobRetention {
    pub succeeded_seconds: Option<u64>,
    pub failed_seconds: Option<u64>,
}

/// AWS Batch's FairsharePolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FairSharePolicy {
    /// The half-life of past usage; 0 counts only what runs now.
    pub share_decay_seconds: u64,
    /// Percent: `(computeReservation/100)^activeShares` of the queue's vCPUs is kept for shares
    /// that are not active yet.
    pub compute_reservation: u32,
    pub share_distribution: Vec<ShareWeight>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareWeight {
    /// A share, or a prefix of shares ending in `*`.
    pub share_identifier: String,
    /// Lower gets more: weight 1 gets twice the vCPU-seconds of weight 2.
    pub weight_factor: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnableTimeLimit {
    pub max_seconds: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    pub image: String,
    pub command: Vec<String>,
    /// Name and value, in the order given; names are unique.
    pub environment: Vec<(String, String)>,
    pub resources: Resources,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,
    #[serde(default)]
    pub privileged: bool,
    /// Linux capabilities added back after all are dropped (`NET_ADMIN`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Variables set from stored secrets when an attempt starts (AWS Batch's `secrets`).
    #[serde(default)]
    pub secrets: Vec<crate::secret::SecretReference>,
    /// ulimits, a read-only root filesystem and the rest of `linuxParameters`.
    #[serde(default)]
    pub linux: crate::linux::LinuxSettings,
    /// `volumes` and `mountPoints`.
    #[serde(default)]
    pub storage: crate::storage::Storage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDefinition {
    pub name: DefinitionName,
    pub revision: u32,
    pub spec: DefinitionSpec,
}

/// The revision-independent part of a job definition: applying an equal spec creates no revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionSpec {
    pub parameters: BTreeMap<String, String>,
    pub container: ContainerProperties,
    pub retry: RetryPolicy,
    pub timeout_seconds: Option<u64>,
    /// Order within a share of a fair-share queue; higher first.
    #[serde(default)]
    pub scheduling_priority: i64,
    /// What one attempt's output may take in the store; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_bytes: Option<u64>,
    /// Consumable resources each job asks for (`consumableResourceProperties`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumable_resources: Vec<crate::consumable::ConsumableRequest>,
    /// Tags each job of the definition carries (a submit's own tags win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Whether jobs' tags become their containers' labels (AWS Batch's `propagateTags`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub propagate_tags: bool,
    /// Where and how a Kubernetes attempt's pod runs (`podProperties`); other backends ignore it.
    #[serde(default, skip_serializing_if = "is_default_pod")]
    pub pod: crate::pod::PodOptions,
    /// A multi-node parallel definition's nodes (`type: multinode`). `container` is then its main
    /// node's, except `resources`: the sum of all nodes', which a job reserves as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<crate::multinode::NodeProperties>,
}

/// Which revision of a definition a submit names: `hello` (latest) or `hello:3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRef {
    pub name: DefinitionName,
    pub revision: Option<u32>,
}

impl DefinitionRef {
    pub fn parse(text: &str) -> Result<DefinitionRef, String> {
        let (name, revision) = match text.split_once(':') {
            Some((name, revision)) => {
                let revision =
                    revision
                        .parse::<u32>()
                        .ok()
                        .filter(|r| *r > 0)
                        .ok_or_else(|| {
                            format!("{text:?}: the revision after ':' must be a positive integer")
                        })?;
                (name, Some(revision))
            }
            None => (text, None),
        };
        let name = DefinitionName::try_from(name.to_string())
            .map_err(|reason| format!("{text:?}: the name {reason}"))?;
        Ok(DefinitionRef { name, revision })
    }
}

/// AWS Batch's job states. A job only ever moves along `crate::state_machine::transition`.
/// Ordered as a job moves through them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    Submitted,
    Pending,
    Runnable,
    Starting,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Submitted,
        JobStatus::Pending,
        JobStatus::Runnable,
        JobStatus::Starting,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Submitted => "SUBMITTED",
            JobStatus::Pending => "PENDING",
            JobStatus::Runnable => "RUNNABLE",
            JobStatus::Starting => "STARTING",
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
    }

    pub fn is_terminal(&self) -> bool {
        match self {
            JobStatus::Succeeded | JobStatus::Failed => true,
            JobStatus::Submitted
            | JobStatus::Pending
            | JobStatus::Runnable
            | JobStatus::Starting
            | JobStatus::Running => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job runs, fixed at submit: the definition's spec with the submit's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub definition: DefinitionName,
    pub definition_revision: u32,
    pub parameters: BTreeMap<String, String>,
    pub container: ContainerProperties,
    pub retry: RetryPolicy,
    pub timeout_seconds: Option<u64>,
    /// What must SUCCEED before this job (or, for an array, each child) may run.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    /// For an array job, how many children it has (2 to `MAX_ARRAY_SIZE`).
    #[serde(default)]
    pub array_size: Option<u32>,
    /// For an array job, when it SUCCEEDS although some children failed (`crate::array`).
    #[serde(default, skip_serializing_if = "ArraySuccessPolicy::is_default")]
    pub array_success_policy: ArraySuccessPolicy,
    /// For an array job, how many of its children may be RUNNABLE, STARTING or RUNNING at once
    /// (`arrayProperties.maxConcurrency`, Slurm's `--array=…%N`); the others wait PENDING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_max_concurrency: Option<u32>,
    /// The share of a fair-share queue the job counts against.
    #[serde(default)]
    pub share_identifier: Option<String>,
    /// Order within its share; higher first.
    #[serde(default)]
    pub scheduling_priority: i64,
    /// What one attempt's output may take in the store (`core::output_limit`); the server's
    /// default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_bytes: Option<u64>,
    /// How many rule deliveries in a row led to this job (0: submitted by a person, a schedule,
    /// or a rule on an event from elsewhere — see `events::chain_step`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chain_depth: u32,
    /// Consumable resources each attempt asks for beside vCPUs and memory (`core::consumable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumable_resources: Vec<crate::consumable::ConsumableRequest>,
    /// The job's tags: its definition's, with the submit's over them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Whether its tags become labels of its attempts' containers, Jobs and pods: the submit's
    /// `propagateTags`, else its definition's.
    #[serde(default, skip_serializing_if = "is_false")]
    pub propagate_tags: bool,
    /// Its definition's `podProperties`.
    #[serde(default, skip_serializing_if = "is_default_pod")]
    pub pod: crate::pod::PodOptions,
    /// A multi-node parallel job's nodes, from its definition. `container` is then its main
    /// node's, except `resources`: the sum of all nodes', placed together (gang placement) —
    /// and, as for every job, the store's columns are the truth for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<crate::multinode::NodeProperties>,
}

fn is_false(value: &bool) -> bool {
    !value
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// The most children an array job may have (AWS Batch stops at 10,000).
pub const MAX_ARRAY_SIZE: u32 = 100_000;

/// One entry of AWS Batch's `dependsOn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Absent only for `Sequential`, which is about the job's own children.
    pub job_id: Option<JobId>,
    pub kind: DependencyKind,
    /// Which end of the job depended on lets this one run (`crate::dependencies`).
    #[serde(default)]
    pub condition: DependencyCondition,
}

/// Slurm's dependency conditions: which end of the job depended on lets the dependent run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyCondition {
    /// Once it SUCCEEDED (AWS Batch's only kind, and the default).
    #[default]
    AfterOk,
    /// Once it ended, SUCCEEDED or FAILED.
    AfterAny,
    /// Once it FAILED.
    AfterNotOk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependencyKind {
    /// Wait for the whole job (for an array job: every child).
    Whole,
    /// Child i of this array waits for child i of the other array, of the same size.
    NToN,
    /// Child i of this array waits for child i-1 of the same array.
    Sequential,
}

impl DependencyKind {
    /// The name AWS Batch gives it in `dependsOn[].type`; a whole-job dependency has none.
    pub fn aws_name(&self) -> Option<&'static str> {
        match self {
            DependencyKind::Whole => None,
            DependencyKind::NToN => Some("N_TO_N"),
            DependencyKind::Sequential => Some("SEQUENTIAL"),
        }
    }
}

/// `arrayProperties.successPolicy`: when an array job whose children have all ended SUCCEEDS
/// (Kubernetes Indexed Jobs' `successPolicy`; AWS Batch knows only the first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArraySuccessPolicy {
    /// Every child must succeed.
    #[default]
    AllChildren,
    /// At most this many children may fail.
    MaxFailedChildren(u32),
    /// The children in these inclusive index ranges must succeed; the others may fail.
    SucceededIndexes(Vec<(u32, u32)>),
}

impl ArraySuccessPolicy {
    pub fn is_default(&self) -> bool {
        *self == ArraySuccessPolicy::AllChildren
    }
}

/// Where a job stands in an array job, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayRole {
    Single,
    /// Never runs itself; it ends when its children have, SUCCEEDED if they all did.
    Parent {
        size: u32,
    },
    /// Runs the parent's spec with `BATCH_JOB_ARRAY_INDEX` set to `index`.
    Child {
        parent: JobId,
        index: u32,
    },
}

impl ArrayRole {
    pub fn child_id(parent: &JobId, index: u32) -> JobId {
        JobId(format!("{}:{index}", parent.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: JobId,
    pub job_name: JobName,
    pub queue: QueueName,
    pub status: JobStatus,
    pub status_reason: Option<String>,
    pub spec: JobSpec,
    pub created_at: i64,
    /// When the first attempt started running.
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// How many attempts have ended.
    pub n_attempts: u32,
    /// How many of them were retried without counting (`RetryAction::RetryWithoutCount`).
    pub disruptions: u32,
    /// Finished attempts, oldest first; loaded only where a caller asks for them.
    pub attempts: Vec<Attempt>,
    pub current_attempt: Option<CurrentAttempt>,
    /// Set by terminate while the job is STARTING or RUNNING; the attempt is then stopped.
    pub stop_requested: Option<String>,
    pub idempotency_key: Option<String>,
    /// A RUNNABLE job waiting out a retry backoff is not placed before this time.
    pub runnable_after: Option<i64>,
    /// Held (`batchctl suspend`): keeps its place in its queue but is never placed.
    pub suspended: bool,
    pub array: ArrayRole,
}

/// The attempt a STARTING or RUNNING job is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentAttempt {
    pub number: u32,
    pub compute_environment: EnvironmentName,
    pub executor_handle: String,
    pub placed_at: i64,
    pub started_at: Option<i64>,
    /// The GPUs placement gave it by id (Docker environments; `core::gpus`).
    pub gpu_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    pub compute_environment: EnvironmentName,
    pub exit_code: Option<i32>,
    pub status_reason: String,
    pub started_at: Option<i64>,
    pub stopped_at: i64,
    /// What it ran with (a retry's may have grown, `ResourceAdjustments`); unknown for attempts
    /// recorded before batchctl kept it.
    pub resources: Option<Resources>,
}
