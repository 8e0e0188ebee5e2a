//! What a Job and its pods say about an attempt: waiting (and why), running, or finished with an
//! outcome. Pure: no API calls.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

use super::spec::CONTAINER;
use crate::AttemptOutcome;

/// Where an attempt stands, from its Job and pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Not running yet; the reason, when Kubernetes gives one (unschedulable, pulling), and when
    /// to look again even if nothing changes (an image pull's bounded wait ends).
    Waiting {
        reason: Option<String>,
        recheck_in: Option<Duration>,
    },
    Running,
    Finished(AttemptOutcome),
}

/// Waiting reasons that mean the image cannot be had (for now).
const PULL_FAILURES: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];
/// Waiting reasons that cannot pass by themselves.
const START_FAILURES: [&str; 4] = [
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Classifies an attempt. `age` is how long ago its Job was created: an image that cannot be
/// pulled fails the attempt once that is longer than `pull_timeout`.
pub fn observe(job: &Job, pods: &[Pod], age: Duration, pull_timeout: Duration) -> Observation {
    // The newest pod is the attempt's (there is one: backoffLimit 0, restartPolicy Never); of a
    // multi-node attempt, its main node's, whose outcome is the attempt's.
    let main_node = super::nodes::main_node_of(job);
    let pod = pods
        .iter()
        .filter(|pod| main_node.is_none() || super::nodes::node_of(pod) == main_node)
        .max_by_key(|pod| {
            pod.metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0.as_millisecond())
        });
    let main = pod
        .and_then(|pod| pod.status.as_ref())
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == CONTAINER));
    // The Job's deadline kills the pod: its exit code is the kill's, the reason is the deadline.
    if let Some(condition) = job_condition(job, "Failed")
        .filter(|condition| condition.reason.as_deref() == Some("DeadlineExceeded"))
    {
        return Observation::Finished(AttemptOutcome::Stopped {
            reason: format!(
                "DeadlineExceeded: {}",
                condition
                    .message
                    .as_deref()
                    .unwrap_or("the Job ran past activeDeadlineSeconds")
            ),
            exit_code: None,
        });
    }
    if let Some(terminated) = main
        .and_then(|status| status.state.as_ref())
        .and_then(|state| state.terminated.as_ref())
    {
        return Observation::Finished(terminated_outcome(terminated));
    }
    let pod_status = pod.and_then(|pod| pod.status.as_ref());
    if let Some(status) = pod_status {
        if status.phase.as_deref() == Some("Failed") && status.reason.is_some() {
            // Evicted (node pressure) or a deadline before the container ever ran.
            return stopped(status.reason.as_deref(), status.message.as_deref());
        }
    }
    if let Some(condition) = job_condition(job, "Failed") {
        return stopped(condition.reason.as_deref(), condition.message.as_deref());
    }
    if let Some(waiting) = main
        .and_then(|status| status.state.as_ref())
        .and_then(|state| state.waiting.as_ref())
    {
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        if START_FAILURES.contains(&reason.as_str()) {
            return Observation::Finished(AttemptOutcome::StartFailed {
                reason: format!("CannotStartContainerError: {reason}: {message}"),
            });
        }
        if PULL_FAILURES.contains(&reason.as_str()) {
            if age >= pull_timeout {
                return Observation::Finished(AttemptOutcome::StartFailed {
                    reason: format!(
                        "CannotPullContainerError: the image could not be pulled within {}s: {reason}: {message}",
                        pull_timeout.as_secs()
                    ),
                });
            }
            return Observation::Waiting {
                reason: Some(format!("{reason}: {message}")),
                recheck_in: Some(pull_timeout - age),
            };
        }
    }
    if main
        .and_then(|status| status.state.as_ref())
        .is_some_and(|state| state.running.is_some())
    {
        return Observation::Running;
    }
    let unschedulable = pod_status
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .map(|condition| {
            format!(
                "{}: {}",
                condition.reason.as_deref().unwrap_or("Unschedulable"),
                condition.message.as_deref().unwrap_or("")
            )
            .trim_end_matches(": ")
            .to_string()
        });
    Observation::Waiting {
        reason: unschedulable.or_else(|| {
            pod.is_none()
                .then(|| "waiting for the Job's pod".to_string())
        }),
        recheck_in: None,
    }
}

/// Stopped by Kubernetes for `reason` (`Evicted`, …), with its message when there is one.
fn stopped(reason: Option<&str>, message: Option<&str>) -> Observation {
    let reason = match (
        reason.unwrap_or_default(),
        message.filter(|m| !m.is_empty()),
    ) {
        (reason, Some(message)) => format!("{reason}: {message}"),
        (reason, None) => reason.to_string(),
    };
    Observation::Finished(AttemptOutcome::Stopped {
        reason,
        exit_code: None,
    })
}

fn terminated_outcome(terminated: &ContainerStateTerminated) -> AttemptOutcome {
    match terminated.reason.as_deref() {
        Some("OOMKilled") => AttemptOutcome::OutOfMemory {
            exit_code: Some(terminated.exit_code),
        },
        _ => AttemptOutcome::Exited {
            exit_code: terminated.exit_code,
            signal: terminated.signal,
        },
    }
}

/// Whether the Job has ended (a `Complete` or `Failed` condition).
pub fn job_ended(job: &Job) -> bool {
    job_condition(job, "Complete").is_some() || job_condition(job, "Failed").is_some()
}

fn job_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}
