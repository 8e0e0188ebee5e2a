//! Every object the executor makes, checked as a real API server would: strictly against
//! Kubernetes' schemas (`kubernetes-validate`), and by checkov.

use super::*;
use crate::multinode::multinode;

/// Whether `program` runs; in CI its absence fails the test, elsewhere the test is skipped after
/// saying so loudly.
fn required_program(program: &str, install: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {program} is missing ({install})");
        }
        eprintln!("\n!!! SKIPPING a test: {program} is not installed ({install}) !!!\n");
    }
    found
}

/// Every object the executor makes — a plain attempt's Job, a GPU one's, a secret-using one's Job
/// and Secret, one mounting every kind of volume with Linux settings, pod options and tags —
/// validates strictly against the schemas of Kubernetes 1.30 and of the newest release
/// kubernetes-validate ships, as a real API server would take them.
#[test]
fn every_object_the_executor_makes_validates_against_kubernetes_schemas() {
    use batchctl_core::pod::{PodOptions, PodSecurity, Toleration};
    use batchctl_core::storage::{MountPoint, Storage, Volume, VolumeSource};
    use batchctl_executor::kubernetes::spec::{job_manifest, secret_manifest};
    if !required_program("kubernetes-validate", "pip install kubernetes-validate") {
        return;
    }
    let settings = JobSettings {
        owner: "0b9e2c4e-5d7a-4c3e-9f11-2a6b8c9d0e1f".into(),
        service_account_name: Some("batch-jobs".into()),
        allow_privileged: false,
        ttl_seconds_after_finished: 3600,
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
            ..PodOptions::default()
        },
    };
    let plain = spec("6f1c2d3e-aaaa-4bbb-8ccc-000000000001", "busybox", "true");
    let mut gpu = spec(
        "6f1c2d3e-aaaa-4bbb-8ccc-000000000002:7",
        "trainer:1",
        "train",
    );
    gpu.resources.gpus = 2;
    gpu.timeout_seconds = Some(600);
    let mut secret = spec("6f1c2d3e-aaaa-4bbb-8ccc-000000000003", "busybox", "true");
    secret.secrets = vec![batchctl_executor::SecretVariable {
        name: "DB_PASSWORD".into(),
        value: "hunter2-hunter2".into(),
    }];
    let mut volumes = spec("6f1c2d3e-aaaa-4bbb-8ccc-000000000004", "busybox", "true");
    let volume = |name: &str, source| Volume {
        name: name.into(),
        source,
    };
    volumes.storage = Storage {
        volumes: vec![
            volume(
                "input",
                VolumeSource::Host {
                    path: "/data/in".into(),
                },
            ),
            volume(
                "scratch",
                VolumeSource::Scratch {
                    memory: true,
                    size_mib: Some(64),
                },
            ),
            volume(
                "results",
                VolumeSource::PersistentVolumeClaim {
                    claim_name: "results".into(),
                    read_only: false,
                },
            ),
            volume(
                "settings",
                VolumeSource::ConfigMap {
                    name: "settings".into(),
                },
            ),
            volume(
                "creds",
                VolumeSource::Secret {
                    secret_name: "creds".into(),
                },
            ),
        ],
        mount_points: ["input", "scratch", "results", "settings", "creds"]
            .iter()
            .map(|name| MountPoint {
                source_volume: name.to_string(),
                container_path: format!("/mnt/{name}"),
                read_only: *name == "input",
            })
            .collect(),
    };
    volumes.linux = batchctl_core::linux::LinuxSettings {
        read_only_root_filesystem: true,
        init_process_enabled: true,
        shared_memory_mib: Some(128),
        tmpfs: vec![batchctl_core::linux::Tmpfs {
            container_path: "/tmp".into(),
            size_mib: 32,
            mount_options: vec![],
        }],
        ..Default::default()
    };
    volumes.pod = PodOptions {
        affinity: Some(r#"{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}"#.into()),
        security_context: PodSecurity {
            run_as_user: Some(1000),
            run_as_group: Some(1000),
            fs_group: Some(2000),
            supplemental_groups: vec![3000],
        },
        ..PodOptions::default()
    };
    volumes.tags = [
        ("team", "graphics"),
        ("note", "spaces are not label values"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for attempt in [&plain, &gpu, &secret, &volumes] {
        let job = serde_json::to_string_pretty(&job_manifest(
            attempt,
            &settings,
            attempt.timeout_seconds.map(Duration::from_secs),
        ))
        .unwrap();
        let path = dir.path().join(format!("{}-job.json", attempt.attempt_id));
        std::fs::write(&path, job).unwrap();
        files.push(path);
        if let Some(secret) = secret_manifest(attempt, &settings) {
            let path = dir
                .path()
                .join(format!("{}-secret.json", attempt.attempt_id));
            std::fs::write(&path, serde_json::to_string_pretty(&secret).unwrap()).unwrap();
            files.push(path);
        }
    }
    assert_eq!(files.len(), 5);
    // A multi-node attempt: its Indexed Job and its headless Service. (1.30's schema has the
    // Job's successPolicy, alpha and off by default there; the executor refuses multi-node
    // attempts below 1.31, where it is on.)
    let multi = multinode("6f1c2d3e-aaaa-4bbb-8ccc-000000000005", 3, "true");
    let mut job = job_manifest(&multi, &settings, None);
    job.metadata.uid = Some("8c1d2e3f-0000-4000-8000-000000000005".into());
    let service = batchctl_executor::kubernetes::nodes::service_manifest(&multi, &settings, &job);
    let path = dir.path().join("multinode-service.json");
    std::fs::write(&path, serde_json::to_string_pretty(&service).unwrap()).unwrap();
    files.push(path);
    let path = dir.path().join("multinode-job.json");
    std::fs::write(&path, serde_json::to_string_pretty(&job).unwrap()).unwrap();
    files.push(path);
    for version in [Some("1.30.0"), None] {
        let mut command = std::process::Command::new("kubernetes-validate");
        command.arg("--strict");
        if let Some(version) = version {
            command.args(["-k", version]);
        }
        let output = command.args(&files).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && !said.contains("ERROR") && !said.contains("WARN"),
            "Kubernetes {version:?}: {said}"
        );
    }
    // checkov over the Jobs: no check fails but those that do not fit a batch attempt's pod, each
    // skipped here with why.
    if !required_program("checkov", "pip install checkov") {
        return;
    }
    // What the job definition decides, not the executor, or what does not fit one attempt's pod.
    let skipped = [
        ("CKV_K8S_14", "the image and its tag are the job definition's"),
        ("CKV_K8S_43", "naming the image by digest is the job definition's choice"),
        ("CKV_K8S_15", "imagePullPolicy is the definition's (IfNotPresent by default)"),
        ("CKV_K8S_22", "readonlyRootFilesystem is the definition's (the volume attempt sets it)"),
        ("CKV_K8S_40", "the user id is the definition's; runAsNonRoot is always set"),
        ("CKV_K8S_21", "the namespace is the environment's, sent in the request path, not the manifest"),
        ("CKV_K8S_35", "AWS Batch's secrets are environment variables; they come from the attempt's own Secret"),
        ("CKV2_K8S_6", "NetworkPolicies for job pods are the namespace owner's, not one per attempt"),
    ];
    let output = std::process::Command::new("checkov")
        .args([
            "--framework",
            "kubernetes",
            "--compact",
            "--quiet",
            "-o",
            "json",
            "--skip-download",
        ])
        .arg("--skip-check")
        .arg(skipped.map(|(id, _)| id).join(","))
        // Each file by name: checkov passes over hidden directories, as temporary ones are.
        .args(
            files
                .iter()
                .flat_map(|file| [std::ffi::OsStr::new("-f"), file.as_os_str()]),
        )
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "checkov did not report: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let reports = match report {
        serde_json::Value::Array(reports) => reports,
        report => vec![report],
    };
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|report| {
            report["results"]["failed_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|check| {
            format!(
                "{} {} {}",
                check["check_id"], check["check_name"], check["resource"]
            )
        })
        .collect();
    assert!(failed.is_empty(), "checkov: {failed:#?}");
}
