//! The Kubernetes executor through the real kube client, over real HTTP, against an in-process
//! fake API server (see `support/fake_kube/`): no cluster can run here.
#![cfg(feature = "kubernetes")]

mod multinode;
mod schemas;
#[path = "../support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchctl_executor::kubernetes::spec::JobSettings;
use batchctl_executor::kubernetes::{KubernetesExecutor, KubernetesExecutorConfig};
use batchctl_executor::{
    AttemptHandle, AttemptOutcome, AttemptSpec, EnvironmentVariable, Executor, ExecutorError,
    LogCursor, ObservedState, Resources,
};
use futures::StreamExt;
use support::fake_kube::FakeApiServer;

struct Fixture {
    api: FakeApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

async fn fixture() -> Fixture {
    let api = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    Fixture {
        api,
        _dir: dir,
        kubeconfig,
    }
}

impl Fixture {
    fn executor(&self, owner: &str) -> KubernetesExecutor {
        KubernetesExecutor::new(KubernetesExecutorConfig {
            namespace: "batch".into(),
            kubeconfig: Some(self.kubeconfig.clone()),
            context: Some("fake".into()),
            compute_environment: "cluster".into(),
            job: JobSettings {
                owner: owner.into(),
                service_account_name: Some("batch-jobs".into()),
                allow_privileged: false,
                ttl_seconds_after_finished: 3600,
                pod_defaults: Default::default(),
            },
            image_pull_timeout: Duration::from_secs(1),
            allowed_host_paths: vec!["/data".into()],
        })
    }
}

fn spec(job_id: &str, image: &str, script: &str) -> AttemptSpec {
    AttemptSpec {
        attempt_id: format!("{}-1", job_id.replace(':', ".")),
        job_id: job_id.into(),
        attempt_number: 1,
        compute_environment: "cluster".into(),
        image: image.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        environment: vec![EnvironmentVariable {
            name: "WHO".into(),
            value: "you".into(),
        }],
        working_dir: None,
        user: Some("1000".into()),
        resources: Resources {
            vcpu_millis: 500,
            memory_mib: 64,
            gpus: 0,
        },
        ..AttemptSpec::default()
    }
}

async fn output(executor: &KubernetesExecutor, handle: &AttemptHandle, from: u64) -> String {
    let chunks: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        executor.logs(handle, LogCursor(from)).collect::<Vec<_>>(),
    )
    .await
    .expect("the log stream ends after the pod");
    let mut text = Vec::new();
    for chunk in chunks {
        text.extend_from_slice(&chunk.unwrap().data);
    }
    String::from_utf8(text).unwrap()
}

/// `until_running` within `limit` (`None` if it did not end), with the reasons it told meanwhile.
async fn until_running(
    executor: &KubernetesExecutor,
    handle: &AttemptHandle,
    limit: Duration,
) -> (Option<Result<(), ExecutorError>>, Vec<String>) {
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let told = Arc::clone(&reasons);
    let running = tokio::time::timeout(
        limit,
        executor.until_running(handle, &move |reason| told.lock().unwrap().push(reason)),
    )
    .await
    .ok();
    let reasons = reasons.lock().unwrap().clone();
    (running, reasons)
}

async fn wait(
    executor: &KubernetesExecutor,
    handle: &AttemptHandle,
) -> Result<AttemptOutcome, ExecutorError> {
    tokio::time::timeout(Duration::from_secs(20), executor.wait(handle))
        .await
        .expect("wait ends")
}

#[tokio::test]
async fn runs_an_attempt_as_a_job_with_its_output_and_exit_code() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-a");
    let handle = executor
        .start(&spec(
            "job-a",
            "busybox",
            "echo hello $WHO; echo oops >&2; sleep 0.3; echo bye; exit 3",
        ))
        .await
        .unwrap();
    assert_eq!(handle.0, "job-a-1");
    executor
        .until_running(&handle, &|reason| panic!("waiting: {reason}"))
        .await
        .unwrap();
    let job = fixture.api.job("job-a-1").expect("the Job exists");
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(
        job.metadata.labels.unwrap()["batchctl.io/owner"],
        "installation-a"
    );

    let text = output(&executor, &handle, 0).await;
    assert!(
        text.contains("hello you\n") && text.contains("oops\n") && text.ends_with("bye\n"),
        "{text:?}"
    );
    // A cursor resumes after what was read.
    let cursor = "hello you\n".len() as u64;
    assert_eq!(
        output(&executor, &handle, cursor).await,
        text[cursor as usize..]
    );
    assert_eq!(
        wait(&executor, &handle).await.unwrap(),
        AttemptOutcome::Exited {
            exit_code: 3,
            signal: None
        }
    );
    executor.remove(&handle).await.unwrap();
    assert!(fixture.api.job("job-a-1").is_none());
    assert!(fixture
        .api
        .requests()
        .iter()
        .any(|r| r.contains("DELETE job job-a-1 in batch propagation=Background")));
}

#[tokio::test]
async fn an_unschedulable_pod_keeps_the_attempt_waiting_with_the_reason() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-a");
    let handle = executor
        .start(&spec("job-gpu", "unschedulable/gpu", "true"))
        .await
        .unwrap();
    let (running, reasons) = until_running(&executor, &handle, Duration::from_secs(2)).await;
    assert!(running.is_none(), "an unschedulable pod does not run");
    assert!(
        reasons
            .iter()
            .any(|r| r == "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        "{reasons:?}"
    );
    // Terminating it deletes the Job, and with it the pod.
    executor
        .kill(&handle, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(fixture.api.job("job-gpu-1").is_none());
    assert!(fixture.api.pods_of("job-gpu-1").is_empty());
    assert!(matches!(
        wait(&executor, &handle).await,
        Err(ExecutorError::UnknownAttempt { .. })
    ));
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_attempt_after_the_bounded_wait() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-a");
    let handle = executor
        .start(&spec("job-pull", "missing/image:1", "true"))
        .await
        .unwrap();
    // While the pull fails the attempt waits with the reason, for at least the bounded time
    // (Kubernetes' timestamps have whole seconds: the wait counts from the end of the second the
    // Job's names, so it may run up to a second longer, never shorter).
    let (running, reasons) = until_running(&executor, &handle, Duration::from_secs(20)).await;
    running
        .expect("until_running ends when the pull's bounded wait does")
        .unwrap();
    assert!(
        reasons.iter().any(|r| (r.starts_with("ErrImagePull: ")
            || r.starts_with("ImagePullBackOff: "))
            && r.contains("\"missing/image:1\"")),
        "{reasons:?}"
    );
    match wait(&executor, &handle).await.unwrap() {
        AttemptOutcome::StartFailed { reason } => {
            assert!(
                reason.starts_with(
                    "CannotPullContainerError: the image could not be pulled within 1s"
                ),
                "{reason}"
            );
            assert!(reason.contains("missing/image:1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        fixture.api.job("job-pull-1").is_none(),
        "the failed Job is deleted"
    );
}

#[tokio::test]
async fn oom_eviction_and_deadline_are_reasons() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-a");
    let oom = executor
        .start(&spec("job-oom", "oom/eater", "true"))
        .await
        .unwrap();
    assert_eq!(
        wait(&executor, &oom).await.unwrap(),
        AttemptOutcome::OutOfMemory {
            exit_code: Some(137)
        }
    );

    let evicted = executor
        .start(&spec("job-evicted", "evicted/img", "true"))
        .await
        .unwrap();
    match wait(&executor, &evicted).await.unwrap() {
        AttemptOutcome::Stopped { reason, .. } => {
            assert_eq!(reason, "Evicted: The node was low on resource: memory.")
        }
        other => panic!("{other:?}"),
    }

    let mut slow = spec("job-slow", "busybox", "sleep 30");
    slow.timeout_seconds = Some(1);
    let slow = executor.start(&slow).await.unwrap();
    assert_eq!(
        fixture
            .api
            .job("job-slow-1")
            .unwrap()
            .spec
            .unwrap()
            .active_deadline_seconds,
        Some(1)
    );
    match wait(&executor, &slow).await.unwrap() {
        AttemptOutcome::Stopped { reason, .. } => {
            assert!(reason.starts_with("DeadlineExceeded"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn terminate_deletes_the_job_and_stops_the_work() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-a");
    let handle = executor
        .start(&spec("job-kill", "busybox", "echo started; sleep 30"))
        .await
        .unwrap();
    executor.until_running(&handle, &|_| {}).await.unwrap();
    let started = std::time::Instant::now();
    executor
        .kill(&handle, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM stops sleep at once"
    );
    assert!(fixture.api.pods_of("job-kill-1").is_empty());
    assert!(fixture
        .api
        .requests()
        .iter()
        .any(|r| r == "DELETE job job-kill-1 in batch propagation=Background grace=2"));
}

#[tokio::test]
async fn list_finds_this_installations_jobs_after_a_restart() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-a");
    let child = executor
        .start(&spec("parent:7", "busybox", "sleep 30"))
        .await
        .unwrap();
    let done = executor
        .start(&spec("job-done", "busybox", "exit 0"))
        .await
        .unwrap();
    wait(&executor, &done).await.unwrap();
    executor.until_running(&child, &|_| {}).await.unwrap();

    // A new executor, as after a scheduler restart, finds both from the API server alone.
    let restarted = fixture.executor("installation-a");
    let mut listed = restarted.list().await.unwrap();
    listed.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let summary: Vec<_> = listed
        .iter()
        .map(|a| {
            (
                a.handle.0.as_str(),
                a.job_id.as_str(),
                a.attempt_number,
                &a.state,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "job-done-1",
                "job-done",
                1,
                &ObservedState::Finished(AttemptOutcome::Exited {
                    exit_code: 0,
                    signal: None
                })
            ),
            ("parent.7-1", "parent:7", 1, &ObservedState::Running),
        ]
    );
    assert!(
        fixture
            .executor("installation-b")
            .list()
            .await
            .unwrap()
            .is_empty(),
        "another installation's Jobs are not ours"
    );
    restarted
        .kill(&child, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {server: \"http://127.0.0.1:9\"}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: gone\n  context: {cluster: gone, user: u}\ncurrent-context: gone\n").unwrap();
    let executor = KubernetesExecutor::new(KubernetesExecutorConfig {
        namespace: "batch".into(),
        kubeconfig: Some(path),
        context: None,
        compute_environment: "cluster".into(),
        job: JobSettings {
            owner: "i".into(),
            service_account_name: None,
            allow_privileged: false,
            ttl_seconds_after_finished: 60,
            pod_defaults: Default::default(),
        },
        image_pull_timeout: Duration::from_secs(1),
        allowed_host_paths: vec![],
    });
    let error = executor
        .start(&spec("job-x", "busybox", "true"))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");

    // Security review finding 7: added capabilities beyond the Restricted profile's need
    // allowPrivileged, and are refused before the cluster is asked; NET_BIND_SERVICE is not.
    let mut admin = spec("job-y", "busybox", "true");
    admin.capabilities = vec!["SYS_ADMIN".into()];
    let error = executor.start(&admin).await.unwrap_err();
    assert!(
        matches!(&error, ExecutorError::Refused { reason } if reason.contains("adds capabilities SYS_ADMIN")),
        "{error}"
    );
    let mut low_port = spec("job-z", "busybox", "true");
    low_port.capabilities = vec!["NET_BIND_SERVICE".into()];
    let error = executor.start(&low_port).await.unwrap_err();
    assert!(
        error.is_retryable(),
        "asked the (unreachable) cluster: {error}"
    );
}

#[tokio::test]
async fn attempts_share_one_watch_of_jobs_and_one_of_pods() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-a");
    let mut handles = Vec::new();
    for i in 0..20 {
        let handle = executor
            .start(&spec(
                &format!("many-{i}"),
                "busybox",
                "sleep 0.3; echo $WHO",
            ))
            .await
            .unwrap();
        handles.push(handle);
    }
    // As the scheduler's supervisors do: logs, running and the outcome asked for at once.
    let outcomes = futures::future::join_all(handles.iter().map(|handle| async {
        let (text, running, outcome) = tokio::join!(
            output(&executor, handle, 0),
            executor.until_running(handle, &|_| {}),
            wait(&executor, handle)
        );
        running.unwrap();
        (text, outcome.unwrap())
    }))
    .await;
    for (text, outcome) in outcomes {
        assert_eq!(text, "you\n");
        assert_eq!(
            outcome,
            AttemptOutcome::Exited {
                exit_code: 0,
                signal: None
            }
        );
    }
    let requests = fixture.api.requests();
    let watches = requests.iter().filter(|r| r.ends_with("(watch)")).count();
    // One watch of Jobs and one of pods (renewed only when they time out), not one per attempt.
    assert_eq!(watches, 2, "{requests:#?}");
}

#[tokio::test]
async fn settings_a_pod_cannot_express_are_refused_by_name() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-u");
    let mut attempt = spec("job-u", "busybox", "true");
    attempt.linux.ulimits = vec![batchctl_core::linux::Ulimit {
        name: "nofile".into(),
        soft_limit: 1,
        hard_limit: 1,
    }];
    match executor.start(&attempt).await {
        Err(ExecutorError::Refused { reason }) => assert!(reason.contains("ulimits"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(fixture.api.job("job-u-1").is_none(), "nothing was created");
}

#[tokio::test]
async fn secret_values_reach_the_pod_through_a_secret_the_job_owns() {
    let fixture = fixture().await;
    let executor = fixture.executor("installation-s");
    let mut attempt = spec(
        "job-s",
        "busybox",
        // The value is spelled apart so that the command does not hold it.
        r#"test "$TOKEN" = "$(printf 'hunter%s-hunter%s' 2 2)" && echo token-matches"#,
    );
    attempt.secrets = vec![batchctl_executor::SecretVariable {
        name: "TOKEN".into(),
        value: "hunter2-hunter2".into(),
    }];
    let handle = executor.start(&attempt).await.unwrap();
    let outcome = wait(&executor, &handle).await.unwrap();
    assert_eq!(
        outcome,
        AttemptOutcome::Exited {
            exit_code: 0,
            signal: None
        }
    );
    assert_eq!(output(&executor, &handle, 0).await, "token-matches\n");
    // The Job names the Secret; only the Secret holds the value, and the Job owns it.
    let job = fixture.api.job("job-s-1").unwrap();
    assert!(!serde_json::to_string(&job).unwrap().contains("hunter2"));
    let secret = fixture.api.secret("job-s-1").expect("the attempt's Secret");
    let owners = secret.metadata.owner_references.unwrap();
    assert_eq!(owners[0].kind, "Job");
    assert_eq!(Some(&owners[0].uid), job.metadata.uid.as_ref());
    // Removing the attempt removes its Secret.
    executor.remove(&handle).await.unwrap();
    assert!(fixture.api.secret("job-s-1").is_none());

    // An attempt removed as soon as it started leaves no Secret behind.
    let mut missing = spec("job-t", "busybox", "true");
    missing.secrets = attempt.secrets.clone();
    let handle = executor.start(&missing).await.unwrap();
    executor.remove(&handle).await.unwrap();
    assert!(fixture.api.secret("job-t-1").is_none());
}

#[tokio::test]
async fn the_fake_api_server_refuses_what_a_real_one_would() {
    let fixture = fixture().await;
    let kubeconfig = kube::config::Kubeconfig::read_from(&fixture.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "batch");
    let job = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "Not_A_Name", "labels": {"bad key!": "x", "ok": "not a value"}},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox"}], "restartPolicy": "Never"}}}
    });
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(job).unwrap();
    match jobs.create(&kube::api::PostParams::default(), &job).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
            assert!(
                status.message.contains("metadata.name")
                    && status.message.contains("metadata.labels"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 422, got {other:?}"),
    }
    assert!(fixture.api.job("Not_A_Name").is_none());
}
