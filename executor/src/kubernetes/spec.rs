//! What an attempt is in Kubernetes: the `batch/v1` Job of an `AttemptSpec`, its labels and
//! selector. Pure: no API calls.

use std::collections::BTreeMap;
use std::time::Duration;

use batchctl_core::pod::PodOptions;
use batchctl_core::storage::{Storage, VolumeSource};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HostPathVolumeSource, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use crate::{AttemptSpec, ImagePullPolicy};

pub const LABEL_JOB_ID: &str = "batchctl.io/job-id";
pub const LABEL_ATTEMPT: &str = "batchctl.io/attempt";
pub const LABEL_COMPUTE_ENVIRONMENT: &str = "batchctl.io/compute-environment";
/// The installation that made the Job; `list` only sees its own installation's Jobs.
pub const LABEL_OWNER: &str = "batchctl.io/owner";
/// The exact job id (a label value cannot hold an array child's `:`).
pub const ANNOTATION_JOB_ID: &str = "batchctl.io/job-id";
/// The container that runs the work.
pub const CONTAINER: &str = "main";

/// What the Job manifest depends on beyond the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub owner: String,
    pub service_account_name: Option<String>,
    /// Whether definitions asking for `privileged: true` may run here; otherwise they are refused.
    pub allow_privileged: bool,
    /// How long Kubernetes keeps a finished Job if batchctl does not remove it first.
    pub ttl_seconds_after_finished: i32,
    /// The environment's `podDefaults`, under each definition's `podProperties`.
    pub pod_defaults: PodOptions,
}

/// Why the pod options of an attempt cannot be sent: an affinity that is not Kubernetes'
/// `Affinity`, named with serde's reason.
pub fn pod_refusal(spec: &AttemptSpec, settings: &JobSettings) -> Option<String> {
    let options = spec.pod.over(&settings.pod_defaults);
    let affinity = options.affinity.as_deref()?;
    serde_json::from_str::<Affinity>(affinity).err().map(|error| {
        format!("CannotStartContainerError: podProperties.affinity is not a Kubernetes Affinity: {error}")
    })
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '.'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The Secret that holds an attempt's secret values, named after the attempt and labelled as its
/// Job; `None` when the attempt sets no variable from a secret. Its keys are `v0`, `v1`, … in the
/// order of `spec.secrets` (a variable's name may hold characters a Secret key may not). The
/// values never enter the Job, whose readers need not be the Secret's.
pub fn secret_manifest(spec: &AttemptSpec, settings: &JobSettings) -> Option<Secret> {
    if spec.secrets.is_empty() {
        return None;
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(spec.attempt_id.clone()),
            labels: Some(attempt_labels(spec, settings)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        immutable: Some(true),
        data: Some(
            spec.secrets
                .iter()
                .enumerate()
                .map(|(index, variable)| {
                    (
                        secret_key(index),
                        ByteString(variable.value.expose().as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    })
}

/// A job's propagated tags as Kubernetes metadata: a tag whose key is a valid label key and whose
/// value a valid label value is a label (selectable: `kubectl get pods -l team=graphics`); one
/// whose value is not (longer than 63 characters, spaces, …) is an annotation; one whose key is
/// not a qualified name (`prefix/name`) cannot be either and is left out.
pub fn tag_labels(
    tags: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    for (key, value) in tags {
        if !is_qualified_name(key) {
            continue;
        }
        if is_label_name(value) || value.is_empty() {
            labels.insert(key.clone(), value.clone());
        } else {
            annotations.insert(key.clone(), value.clone());
        }
    }
    (labels, annotations)
}

/// Kubernetes' qualified name: an optional DNS subdomain prefix and `/`, then a name.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|prefix| {
        !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && is_label_name(name)
}

/// 1 to 63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
fn is_label_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The pod's volume for each of the definition's, named `vol-N` (a definition's volume names need
/// not be DNS labels). A Docker named volume was refused before (`Storage::refusal`).
fn storage_volumes(storage: &Storage) -> impl Iterator<Item = Volume> + '_ {
    storage
        .volumes
        .iter()
        .enumerate()
        .filter_map(|(index, volume)| {
            let base = Volume {
                name: format!("vol-{index}"),
                ..Volume::default()
            };
            Some(match &volume.source {
                VolumeSource::Host { path } => Volume {
                    host_path: Some(HostPathVolumeSource {
                        path: path.clone(),
                        type_: None,
                    }),
                    ..base
                },
                VolumeSource::Scratch { memory, size_mib } => Volume {
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: memory.then(|| "Memory".to_string()),
                        size_limit: size_mib.map(|mib| Quantity(format!("{mib}Mi"))),
                    }),
                    ..base
                },
                VolumeSource::PersistentVolumeClaim {
                    claim_name,
                    read_only,
                } => Volume {
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name.clone(),
                        read_only: read_only.then_some(true),
                    }),
                    ..base
                },
                VolumeSource::ConfigMap { name } => Volume {
                    config_map: Some(ConfigMapVolumeSource {
                        name: name.clone(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..base
                },
                VolumeSource::Secret { secret_name } => Volume {
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret_name.clone()),
                        ..SecretVolumeSource::default()
                    }),
                    ..base
                },
                VolumeSource::Named { .. } => return None,
            })
        })
}

/// The container's mount of each mount point, by the pod volume `storage_volumes` names.
fn storage_mounts(storage: &Storage) -> impl Iterator<Item = VolumeMount> + '_ {
    storage.mount_points.iter().filter_map(|point| {
        let index = storage
            .volumes
            .iter()
            .position(|volume| volume.name == point.source_volume)?;
        Some(VolumeMount {
            name: format!("vol-{index}"),
            mount_path: point.container_path.clone(),
            read_only: point.read_only.then_some(true),
            ..VolumeMount::default()
        })
    })
}

fn secret_key(index: usize) -> String {
    format!("v{index}")
}

fn attempt_labels(spec: &AttemptSpec, settings: &JobSettings) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_JOB_ID.to_string(), label_value(&spec.job_id)),
        (LABEL_ATTEMPT.to_string(), spec.attempt_number.to_string()),
        (
            LABEL_COMPUTE_ENVIRONMENT.to_string(),
            label_value(&spec.compute_environment),
        ),
        (LABEL_OWNER.to_string(), label_value(&settings.owner)),
    ])
}

/// The selector of every Job this installation made for one compute environment.
pub fn selector(owner: &str, compute_environment: &str) -> String {
    format!(
        "{LABEL_OWNER}={},{LABEL_COMPUTE_ENVIRONMENT}={}",
        label_value(owner),
        label_value(compute_environment)
    )
}

/// The Job of one attempt: one pod, never retried by Kubernetes (`backoffLimit: 0`; retries are
/// batchctl's), the attempt timeout as `activeDeadlineSeconds`, requests equal to limits, and the
/// Restricted pod security profile unless the environment allows privileged jobs and the job asks.
pub fn job_manifest(spec: &AttemptSpec, settings: &JobSettings, timeout: Option<Duration>) -> Job {
    // Propagated tags first, so that batchctl's own labels and annotation win over any of them.
    let (mut labels, mut annotations) = tag_labels(&spec.tags);
    labels.extend(attempt_labels(spec, settings));
    annotations.insert(ANNOTATION_JOB_ID.to_string(), spec.job_id.clone());
    let metadata = ObjectMeta {
        name: Some(spec.attempt_id.clone()),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..ObjectMeta::default()
    };
    let mut quantities = BTreeMap::new();
    if spec.resources.vcpu_millis > 0 {
        quantities.insert(
            "cpu".to_string(),
            Quantity(format!("{}m", spec.resources.vcpu_millis)),
        );
    }
    if spec.resources.memory_mib > 0 {
        quantities.insert(
            "memory".to_string(),
            Quantity(format!("{}Mi", spec.resources.memory_mib)),
        );
    }
    if spec.resources.gpus > 0 {
        quantities.insert(
            "nvidia.com/gpu".to_string(),
            Quantity(spec.resources.gpus.to_string()),
        );
    }
    let privileged = spec.privileged && settings.allow_privileged;
    let pod = spec.pod.over(&settings.pod_defaults);
    let read_only_root = spec.linux.read_only_root_filesystem.then_some(true);
    // `/dev/shm` and tmpfs mounts as memory-backed emptyDir volumes: (name, path, MiB).
    let memory_volumes: Vec<(String, String, u32)> = spec
        .linux
        .shared_memory_mib
        .map(|mib| ("dshm".to_string(), "/dev/shm".to_string(), mib))
        .into_iter()
        .chain(spec.linux.tmpfs.iter().enumerate().map(|(index, tmpfs)| {
            (
                format!("tmpfs-{index}"),
                tmpfs.container_path.clone(),
                tmpfs.size_mib,
            )
        }))
        .collect();
    let numeric_user = spec
        .user
        .as_deref()
        .and_then(|user| user.parse::<i64>().ok());
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(spec.image.clone()),
        // `command` replaces the image's entrypoint, as a job definition's command does in AWS
        // Batch on Kubernetes (EKS).
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(
            spec.environment
                .iter()
                .map(|variable| EnvVar {
                    name: variable.name.clone(),
                    value: Some(variable.value.clone()),
                    ..EnvVar::default()
                })
                .chain(
                    spec.secrets
                        .iter()
                        .enumerate()
                        .map(|(index, variable)| EnvVar {
                            name: variable.name.clone(),
                            value_from: Some(EnvVarSource {
                                secret_key_ref: Some(SecretKeySelector {
                                    name: spec.attempt_id.clone(),
                                    key: secret_key(index),
                                    optional: Some(false),
                                }),
                                ..EnvVarSource::default()
                            }),
                            ..EnvVar::default()
                        }),
                )
                .collect(),
        ),
        working_dir: spec.working_dir.clone(),
        image_pull_policy: Some(
            match spec.image_pull_policy {
                ImagePullPolicy::IfNotPresent => "IfNotPresent",
                ImagePullPolicy::Always => "Always",
                ImagePullPolicy::Never => "Never",
            }
            .to_string(),
        ),
        resources: (!quantities.is_empty()).then(|| ResourceRequirements {
            requests: Some(quantities.clone()),
            limits: Some(quantities),
            ..ResourceRequirements::default()
        }),
        volume_mounts: {
            let mounts: Vec<VolumeMount> = memory_volumes
                .iter()
                .map(|(name, path, _)| VolumeMount {
                    name: name.clone(),
                    mount_path: path.clone(),
                    ..VolumeMount::default()
                })
                .chain(storage_mounts(&spec.storage))
                .collect();
            (!mounts.is_empty()).then_some(mounts)
        },
        security_context: Some(if privileged {
            SecurityContext {
                privileged: Some(true),
                read_only_root_filesystem: read_only_root,
                ..SecurityContext::default()
            }
        } else {
            SecurityContext {
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                read_only_root_filesystem: read_only_root,
                run_as_non_root: Some(true),
                run_as_user: numeric_user,
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_string()]),
                    add: (!spec.capabilities.is_empty()).then(|| spec.capabilities.clone()),
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..SeccompProfile::default()
                }),
                ..SecurityContext::default()
            }
        }),
        ..Container::default()
    };
    let mut job = Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: timeout.map(|t| t.as_secs().max(1) as i64),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    service_account_name: settings.service_account_name.clone(),
                    automount_service_account_token: Some(false),
                    node_selector: (!pod.node_selector.is_empty())
                        .then(|| pod.node_selector.clone()),
                    tolerations: (!pod.tolerations.is_empty()).then(|| {
                        pod.tolerations
                            .iter()
                            .map(|toleration| Toleration {
                                key: toleration.key.clone(),
                                operator: toleration.operator.clone(),
                                value: toleration.value.clone(),
                                effect: toleration.effect.clone(),
                                toleration_seconds: toleration.toleration_seconds,
                            })
                            .collect()
                    }),
                    // Checked by `pod_refusal` before the Job is made.
                    affinity: pod
                        .affinity
                        .as_deref()
                        .and_then(|affinity| serde_json::from_str(affinity).ok()),
                    priority_class_name: pod.priority_class_name.clone(),
                    security_context: (!privileged).then(|| PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: pod.security_context.run_as_user,
                        run_as_group: pod.security_context.run_as_group,
                        fs_group: pod.security_context.fs_group,
                        supplemental_groups: (!pod.security_context.supplemental_groups.is_empty())
                            .then(|| pod.security_context.supplemental_groups.clone()),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_string(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: {
                        let volumes: Vec<Volume> = memory_volumes
                            .iter()
                            .map(|(name, _, mib)| Volume {
                                name: name.clone(),
                                empty_dir: Some(EmptyDirVolumeSource {
                                    medium: Some("Memory".to_string()),
                                    size_limit: Some(Quantity(format!("{mib}Mi"))),
                                }),
                                ..Volume::default()
                            })
                            .chain(storage_volumes(&spec.storage))
                            .collect();
                        (!volumes.is_empty()).then_some(volumes)
                    },
                    // The first process of a shared process namespace (the pod's pause
                    // container) reaps orphans and is PID 1, as Docker's --init.
                    share_process_namespace: spec.linux.init_process_enabled.then_some(true),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    };
    if let Some(group) = &spec.nodes {
        super::nodes::make_indexed(&mut job, spec, group);
    }
    job
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
