//! The Job, Secret and pod an attempt becomes, checked field by field.
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
        timeout_seconds: Some(3600),
        ..AttemptSpec::default()
    }
}

fn settings() -> JobSettings {
    JobSettings {
        owner: "0b9e2c4e-installation".into(),
        service_account_name: Some("batch-jobs".into()),
        allow_privileged: false,
        ttl_seconds_after_finished: 3600,
        pod_defaults: Default::default(),
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
    let quantities = serde_json::json!({"cpu": "1500m", "memory": "2048Mi", "nvidia.com/gpu": "1"});
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
fn secret_values_go_to_a_secret_and_the_job_only_names_it() {
    let mut spec = spec();
    spec.secrets = vec![crate::SecretVariable {
        name: "DB PASSWORD".into(),
        value: "hunter2-hunter2".into(),
    }];
    let job = serde_json::to_value(job_manifest(&spec, &settings(), None)).unwrap();
    assert!(!job.to_string().contains("hunter2"));
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["env"][1],
        serde_json::json!({
            "name": "DB PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "6f1c.3-2", "key": "v0", "optional": false}},
        })
    );
    let secret = serde_json::to_value(secret_manifest(&spec, &settings()).unwrap()).unwrap();
    assert_eq!(secret["metadata"]["name"], "6f1c.3-2");
    assert_eq!(
        secret["metadata"]["labels"]["batchctl.io/owner"],
        "0b9e2c4e-installation"
    );
    // base64 of the value, as the API server takes `data`.
    assert_eq!(secret["data"]["v0"], "aHVudGVyMi1odW50ZXIy");
    assert_eq!(secret["immutable"], true);
    assert!(secret_manifest(&self::spec(), &settings()).is_none());
}

#[test]
fn propagated_tags_become_labels_or_annotations_under_batchctls() {
    let mut spec = spec();
    spec.tags = [
        ("team", "graphics"),
        ("example.com/cost-centre", "cc-17"),
        ("note", "a value with spaces"),
        ("Not A Key", "x"),
        (LABEL_OWNER, "spoofed"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let job = job_manifest(&spec, &settings(), None);
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "graphics");
    assert_eq!(labels["example.com/cost-centre"], "cc-17");
    assert_eq!(
        labels[LABEL_OWNER], "0b9e2c4e-installation",
        "batchctl's label wins"
    );
    assert!(!labels.contains_key("note") && !labels.contains_key("Not A Key"));
    let annotations = job.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["note"], "a value with spaces");
    assert!(!annotations.contains_key("Not A Key"));
    let pod = job.spec.unwrap().template.metadata.unwrap();
    assert_eq!(pod.labels.unwrap()["team"], "graphics");
}

#[test]
fn linux_parameters_a_pod_can_express() {
    let mut spec = spec();
    spec.linux = batchctl_core::linux::LinuxSettings {
        read_only_root_filesystem: true,
        init_process_enabled: true,
        shared_memory_mib: Some(256),
        tmpfs: vec![batchctl_core::linux::Tmpfs {
            container_path: "/scratch".into(),
            size_mib: 64,
            mount_options: vec![],
        }],
        ..Default::default()
    };
    let job = serde_json::to_value(job_manifest(&spec, &settings(), None)).unwrap();
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["shareProcessNamespace"], true);
    assert_eq!(
        pod["volumes"],
        serde_json::json!([
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
            {"name": "tmpfs-0", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ])
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["volumeMounts"],
        serde_json::json!([
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmpfs-0", "mountPath": "/scratch"},
        ])
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
}

#[test]
fn volumes_and_mount_points_become_the_pods() {
    use batchctl_core::storage::{MountPoint, Volume};
    let mut spec = spec();
    let volume = |name: &str, source| Volume {
        name: name.into(),
        source,
    };
    spec.storage = Storage {
        volumes: vec![
            volume(
                "Data_In",
                VolumeSource::Host {
                    path: "/data/in".into(),
                },
            ),
            volume(
                "claim",
                VolumeSource::PersistentVolumeClaim {
                    claim_name: "results".into(),
                    read_only: true,
                },
            ),
            volume(
                "cfg",
                VolumeSource::ConfigMap {
                    name: "settings".into(),
                },
            ),
            volume(
                "creds",
                VolumeSource::Secret {
                    secret_name: "db".into(),
                },
            ),
            volume(
                "scratch",
                VolumeSource::Scratch {
                    memory: false,
                    size_mib: Some(512),
                },
            ),
        ],
        mount_points: vec![
            MountPoint {
                source_volume: "Data_In".into(),
                container_path: "/in".into(),
                read_only: true,
            },
            MountPoint {
                source_volume: "scratch".into(),
                container_path: "/tmp/work".into(),
                read_only: false,
            },
        ],
    };
    let job = serde_json::to_value(job_manifest(&spec, &settings(), None)).unwrap();
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        serde_json::json!([
            {"name": "vol-0", "hostPath": {"path": "/data/in"}},
            {"name": "vol-1", "persistentVolumeClaim": {"claimName": "results", "readOnly": true}},
            {"name": "vol-2", "configMap": {"name": "settings"}},
            {"name": "vol-3", "secret": {"secretName": "db"}},
            {"name": "vol-4", "emptyDir": {"sizeLimit": "512Mi"}},
        ])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        serde_json::json!([
            {"name": "vol-0", "mountPath": "/in", "readOnly": true},
            {"name": "vol-4", "mountPath": "/tmp/work"},
        ])
    );
}

#[test]
fn pod_options_over_the_environments() {
    use batchctl_core::pod::{PodSecurity, Toleration};
    let mut spec = spec();
    spec.pod = PodOptions {
        node_selector: [("zone".to_string(), "b".to_string())].into(),
        affinity: Some(
            r#"{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}]}}}"#
                .into(),
        ),
        security_context: PodSecurity {
            run_as_user: Some(1001),
            ..PodSecurity::default()
        },
        ..PodOptions::default()
    };
    let settings = JobSettings {
        pod_defaults: PodOptions {
            node_selector: [("pool".to_string(), "batch".to_string())].into(),
            tolerations: vec![Toleration {
                key: Some("batch".into()),
                operator: Some("Exists".into()),
                value: None,
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }],
            priority_class_name: Some("batch-low".into()),
            security_context: PodSecurity {
                fs_group: Some(2000),
                ..PodSecurity::default()
            },
            ..PodOptions::default()
        },
        ..settings()
    };
    assert_eq!(pod_refusal(&spec, &settings), None);
    let job = serde_json::to_value(job_manifest(&spec, &settings, None)).unwrap();
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"],
        serde_json::json!({"pool": "batch", "zone": "b"})
    );
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}])
    );
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        serde_json::json!(["a100"])
    );
    assert_eq!(pod["priorityClassName"], "batch-low");
    assert_eq!(
        pod["securityContext"],
        serde_json::json!({"runAsNonRoot": true, "runAsUser": 1001, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    spec.pod.affinity =
        Some(r#"{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": 7}}"#.into());
    assert!(pod_refusal(&spec, &settings)
        .unwrap()
        .contains("podProperties.affinity"));
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
