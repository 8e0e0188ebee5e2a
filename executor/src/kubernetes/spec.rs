//! What an attempt is in Kubernetes: the `batch/v1` Job of an `AttemptSpec`, its labels and
//! selector. Pure: no API calls.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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
    let labels = BTreeMap::from([
        (LABEL_JOB_ID.to_string(), label_value(&spec.job_id)),
        (LABEL_ATTEMPT.to_string(), spec.attempt_number.to_string()),
        (
            LABEL_COMPUTE_ENVIRONMENT.to_string(),
            label_value(&spec.compute_environment),
        ),
        (LABEL_OWNER.to_string(), label_value(&settings.owner)),
    ]);
    let annotations = BTreeMap::from([(ANNOTATION_JOB_ID.to_string(), spec.job_id.clone())]);
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
        security_context: Some(if privileged {
            SecurityContext {
                privileged: Some(true),
                ..SecurityContext::default()
            }
        } else {
            SecurityContext {
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
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
    Job {
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
                    security_context: (!privileged).then(|| PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_string(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnvironmentVariable, Resources};

    fn spec() -> AttemptSpec {
        AttemptSpec {
            attempt_id: "6f1c.3-2".into(),
            job_id: "6f1c:3".into(),
            attempt_number: 2,
            compute_environment: "gpu-cluster".into(),
            image: "registry.example/train:1.4".into(),
            command: vec!["python".into(), "train.py".into()],
            environment: vec![EnvironmentVariable {
                name: "BATCH_JOB_ID".into(),
                value: "6f1c:3".into(),
            }],
            working_dir: Some("/work".into()),
            user: Some("1000".into()),
            resources: Resources {
                vcpu_millis: 1500,
                memory_mib: 2048,
                gpus: 1,
            },
            image_pull_policy: ImagePullPolicy::Always,
            privileged: false,
            capabilities: vec![],
            timeout_seconds: Some(3600),
        }
    }

    fn settings() -> JobSettings {
        JobSettings {
            owner: "0b9e2c4e-installation".into(),
            service_account_name: Some("batch-jobs".into()),
            allow_privileged: false,
            ttl_seconds_after_finished: 3600,
        }
    }

    /// The whole manifest, as the API server receives it.
    #[test]
    fn job_manifest_snapshot() {
        let job = job_manifest(&spec(), &settings(), Some(Duration::from_secs(3600)));
        let labels = serde_json::json!({
            "batchctl.io/attempt": "2",
            "batchctl.io/compute-environment": "gpu-cluster",
            "batchctl.io/job-id": "6f1c.3",
            "batchctl.io/owner": "0b9e2c4e-installation",
        });
        let annotations = serde_json::json!({"batchctl.io/job-id": "6f1c:3"});
        let quantities =
            serde_json::json!({"cpu": "1500m", "memory": "2048Mi", "nvidia.com/gpu": "1"});
        assert_eq!(
            serde_json::to_value(&job).unwrap(),
            serde_json::json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "6f1c.3-2", "labels": labels, "annotations": annotations},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 3600,
                    "ttlSecondsAfterFinished": 3600,
                    "template": {
                        "metadata": {"labels": labels, "annotations": annotations},
                        "spec": {
                            "restartPolicy": "Never",
                            "serviceAccountName": "batch-jobs",
                            "automountServiceAccountToken": false,
                            "securityContext": {
                                "runAsNonRoot": true,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "containers": [{
                                "name": "main",
                                "image": "registry.example/train:1.4",
                                "imagePullPolicy": "Always",
                                "command": ["python", "train.py"],
                                "env": [{"name": "BATCH_JOB_ID", "value": "6f1c:3"}],
                                "workingDir": "/work",
                                "resources": {"requests": quantities, "limits": quantities},
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "privileged": false,
                                    "runAsNonRoot": true,
                                    "runAsUser": 1000,
                                    "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"},
                                },
                            }],
                        },
                    },
                },
            })
        );
    }

    #[test]
    fn privileged_only_where_allowed() {
        let mut spec = spec();
        spec.privileged = true;
        let refused = job_manifest(&spec, &settings(), None);
        let pod = refused.spec.unwrap().template.spec.unwrap();
        let context = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(context.privileged, Some(false));
        assert_eq!(context.run_as_non_root, Some(true));
        let allowed = job_manifest(
            &spec,
            &JobSettings {
                allow_privileged: true,
                ..settings()
            },
            None,
        );
        let job_spec = allowed.spec.unwrap();
        assert_eq!(job_spec.active_deadline_seconds, None);
        let pod = job_spec.template.spec.unwrap();
        assert_eq!(
            pod.containers[0]
                .security_context
                .clone()
                .unwrap()
                .privileged,
            Some(true)
        );
        assert!(pod.security_context.is_none());
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("parent:17"), "parent.17");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(
            selector("inst", "env"),
            "batchctl.io/owner=inst,batchctl.io/compute-environment=env"
        );
    }
}
