//! The executor contract's data: what the scheduler hands a backend to run one attempt, and what
//! a backend reports back. Pure types (the `Executor` trait and its I/O live in
//! `batchctl-executor`, which re-exports these), so the model and the decisions can name them
//! without depending on any backend.

use serde::{Deserialize, Serialize};

/// What an attempt may use: the model's one resources type (vCPUs in thousandths, so 0.25 is
/// exact), the same a job needs and an environment offers.
pub use crate::model::Resources;

/// Everything a backend needs to run one attempt of a job. Built by the scheduler, which has already
/// applied parameter substitution, overrides and the `BATCH_*` environment. (`Default` is for
/// tests, which name what they need and take the rest.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptSpec {
    /// A name unique to this attempt, usable as a directory, container or Kubernetes object name.
    pub attempt_id: String,
    pub job_id: String,
    pub attempt_number: u32,
    pub compute_environment: String,
    pub image: String,
    pub command: Vec<String>,
    /// Ordered, later entries win; the scheduler has already removed duplicates.
    pub environment: Vec<EnvironmentVariable>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub resources: Resources,
    /// Container backends only; the process backend ignores it.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,
    /// Container backends only: run privileged (the environment must allow it).
    #[serde(default)]
    pub privileged: bool,
    /// Container backends only: Linux capabilities added back after all are dropped.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The attempt timeout. The scheduler enforces it; a backend that can also enforce it itself
    /// (Kubernetes' `activeDeadlineSeconds`) does, so it holds while no scheduler runs.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Variables whose values come from stored secrets, kept apart from `environment` so a
    /// backend can hand them over its own way (a Kubernetes Secret) and nothing prints them.
    #[serde(default)]
    pub secrets: Vec<SecretVariable>,
    /// The job's tags when it propagates them (`propagateTags`): container backends label the
    /// container, Job and pod with them, under batchctl's own labels.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// ulimits, a read-only root filesystem, devices, an init process, `/dev/shm`, tmpfs, swap.
    #[serde(default)]
    pub linux: crate::linux::LinuxSettings,
    /// Volumes and where they are mounted; each backend mounts what it can or refuses the start
    /// (`Storage::refusal`).
    #[serde(default)]
    pub storage: crate::storage::Storage,
    /// Kubernetes only: the definition's pod options (the environment's defaults are the
    /// backend's to add).
    #[serde(default)]
    pub pod: crate::pod::PodOptions,
    /// The GPUs it gets by id (Docker: device requests for these ids); empty where a backend
    /// picks devices itself.
    #[serde(default)]
    pub gpu_ids: Vec<String>,
    /// A multi-node attempt's nodes, started together (`core::multinode`); `None` for a job of one
    /// container. The attempt's own fields are then its main node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeGroup>,
}

/// The nodes of a multi-node attempt: each node's own spec (its container, resources, secrets and
/// `AWS_BATCH_JOB_NODE_*` variables; `attempt_id` is what its container is called), in node order.
/// A backend starts the main node first and gives the others
/// `AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS`; the attempt ends with the main node, whose
/// outcome is the attempt's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    pub main_node: u32,
    pub nodes: Vec<AttemptSpec>,
}

impl NodeGroup {
    pub fn main(&self) -> &AttemptSpec {
        &self.nodes[self.main_node as usize]
    }
}

/// The variable that tells a node where its main node is (AWS Batch's name); a backend sets it on
/// every node but the main one once the main node has an address.
pub const MAIN_NODE_ADDRESS_VARIABLE: &str = "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS";

/// When to pull an attempt's image, as Kubernetes' imagePullPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ImagePullPolicy {
    #[default]
    IfNotPresent,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    pub name: String,
    pub value: String,
}

/// A variable set from a secret when the attempt starts. Its value never prints (`SecretText`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVariable {
    pub name: String,
    pub value: crate::secret::SecretText,
}

/// The backend's name for a started attempt, stored by the scheduler and handed back on every call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptHandle(pub String);

/// How an attempt's work ended, as the backend saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum AttemptOutcome {
    /// The work exited by itself or because it was signalled.
    Exited { exit_code: i32, signal: Option<i32> },
    /// The backend killed the work because it ran out of memory.
    OutOfMemory { exit_code: Option<i32> },
    /// The work could not be started at all (missing command, image not available, bad user).
    StartFailed { reason: String },
    /// The backend stopped the work for a reason of its own: Kubernetes' `DeadlineExceeded` or a
    /// pod `Evicted` from its node. The reason names it; a retry may well succeed.
    Stopped {
        reason: String,
        exit_code: Option<i32>,
    },
    /// The backend lost track of the work: it may or may not have run to completion.
    Lost { reason: String },
}

/// What a backend knows about an attempt it holds, for reconciliation after a scheduler restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    Running,
    Finished(AttemptOutcome),
    /// The attempt was recorded but its work never began; it is safe to start it again.
    NeverStarted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedAttempt {
    pub handle: AttemptHandle,
    pub job_id: String,
    pub attempt_number: u32,
    pub state: ObservedState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A position in an attempt's output, opaque to the scheduler. It is stored with each chunk so that
/// log collection resumes where it stopped after a restart. A backend decides what the number means
/// (a byte offset for processes, a timestamp for containers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct LogCursor(pub u64);

/// Capabilities a container may add without the environment allowing privileged jobs, as
/// Kubernetes' Restricted pod security profile allows: binding ports below 1024, nothing that
/// reaches past the container.
pub const UNPRIVILEGED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// Why a container backend must refuse `spec` on an environment with `allow_privileged` as given,
/// or `None`: a privileged container, or any added capability beyond
/// `UNPRIVILEGED_CAPABILITIES` (`ALL` included), needs `allowPrivileged: true`.
pub fn privilege_refusal(spec: &AttemptSpec, allow_privileged: bool) -> Option<String> {
    if allow_privileged {
        return None;
    }
    if spec.privileged {
        return Some(format!(
            "CannotStartContainerError: the job asks for a privileged container, which compute environment {} does not allow; set allowPrivileged: true on it",
            spec.compute_environment
        ));
    }
    if !spec.linux.devices.is_empty() {
        let paths: Vec<&str> = spec
            .linux
            .devices
            .iter()
            .map(|device| device.host_path.as_str())
            .collect();
        return Some(format!(
            "CannotStartContainerError: the job asks for host devices {}, which compute environment {} does not allow; set allowPrivileged: true on it",
            paths.join(", "),
            spec.compute_environment
        ));
    }
    let beyond: Vec<&str> = spec
        .capabilities
        .iter()
        .map(String::as_str)
        .filter(|capability| {
            let name = capability.trim_start_matches("CAP_").to_ascii_uppercase();
            !UNPRIVILEGED_CAPABILITIES.contains(&name.as_str())
        })
        .collect();
    (!beyond.is_empty()).then(|| {
        format!(
            "CannotStartContainerError: the job adds capabilities {}, which compute environment {} does not allow (without allowPrivileged: true only {} may be added)",
            beyond.join(", "),
            spec.compute_environment,
            UNPRIVILEGED_CAPABILITIES.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(privileged: bool, capabilities: &[&str]) -> AttemptSpec {
        AttemptSpec {
            attempt_id: "job-1".into(),
            job_id: "job".into(),
            attempt_number: 1,
            compute_environment: "local".into(),
            image: "busybox".into(),
            command: vec!["true".into()],
            environment: vec![],
            working_dir: None,
            user: None,
            resources: Resources {
                vcpu_millis: 1000,
                memory_mib: 64,
                gpus: 0,
            },
            privileged,
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            ..AttemptSpec::default()
        }
    }

    #[test]
    fn capabilities_beyond_the_restricted_profile_need_allow_privileged() {
        // (privileged, capabilities, environment allows privileged, refused because of)
        let cases: &[(bool, &[&str], bool, Option<&str>)] = &[
            (false, &[], false, None),
            (false, &["NET_BIND_SERVICE"], false, None),
            (false, &["CAP_NET_BIND_SERVICE"], false, None),
            (false, &["SYS_ADMIN"], false, Some("SYS_ADMIN")),
            (
                false,
                &["NET_BIND_SERVICE", "SYS_PTRACE", "DAC_READ_SEARCH"],
                false,
                Some("SYS_PTRACE, DAC_READ_SEARCH"),
            ),
            (false, &["NET_ADMIN"], false, Some("NET_ADMIN")),
            (false, &["ALL"], false, Some("ALL")),
            (true, &[], false, Some("privileged container")),
            (false, &["SYS_ADMIN", "ALL"], true, None),
            (true, &[], true, None),
        ];
        for (privileged, capabilities, allowed, expected) in cases {
            let refusal = privilege_refusal(&spec(*privileged, capabilities), *allowed);
            match expected {
                None => assert_eq!(refusal, None, "{capabilities:?}"),
                Some(part) => assert!(
                    refusal.as_deref().is_some_and(|r| r.contains(part)),
                    "{capabilities:?}: {refusal:?}"
                ),
            }
        }
    }
}
