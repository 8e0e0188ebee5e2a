//! The dispatcher with a recording fake executor, on SQLite and Postgres: what it decides, and what
//! it records.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use batchctl_executor::fake::{Call, FakeExecutor};
use batchctl_scheduler::control::{stop_job, StopMode};
use batchctl_scheduler::core::model::{
    CurrentAttempt, DefinitionRef, EnvironmentName, EnvironmentType, Job, JobId, JobStatus,
    QueueName,
};
use batchctl_scheduler::dispatcher::{Dispatcher, DispatcherConfig, DispatcherHandle, Executors};
use batchctl_scheduler::manifest::{
    build_job, ContainerOverrides, SubmitContext, SubmitJobRequest,
};
use batchctl_scheduler::store::{now_millis, Effect, Store, Transition};
use batchctl_scheduler::submitter::Submitter;
use tokio_util::sync::CancellationToken;

store_suite!(
    a_job_runs_to_success_with_its_environment_and_logs,
    a_failing_job_is_retried_then_fails,
    capacity_bounds_how_many_attempts_run,
    terminate_stops_running_work_without_retry,
    the_attempt_timeout_stops_work,
    cancel_removes_a_waiting_job,
    an_unreachable_executor_leaves_jobs_runnable,
    a_restart_adopts_running_work_and_requeues_unstarted_placements,
    a_restart_while_the_executor_is_unreachable_keeps_running_jobs,
    an_environment_without_an_executor_keeps_jobs_runnable,
    evaluate_on_exit_decides_retries,
    retries_wait_out_their_backoff,
    dependencies_hold_jobs_until_they_succeed_and_fail_them_when_they_fail,
    disabled_queues_refuse_new_jobs_and_disabled_environments_get_no_work,
    busy_shares_get_vcpu_seconds_in_inverse_ratio_of_their_weights,
);

const RESOURCES: &str = r#"
apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: local}
spec: {type: process, maxVcpus: 2, maxMemoryMiB: 1024}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: q}
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]}
---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: d}
spec:
  parameters: {word: default}
  containerProperties:
    image: busybox
    command: ["echo", "Ref::word"]
    environment: [{name: GREETING, value: hi}]
    resourceRequirements: [{type: VCPU, value: "1"}, {type: MEMORY, value: "64"}]
  retryStrategy: {attempts: 2}
"#;

struct Harness {
    store: Store,
    fake: FakeExecutor,
    handle: DispatcherHandle,
    submitter: Submitter,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(store: Store, fake: FakeExecutor) -> Harness {
        let config = DispatcherConfig {
            kill_grace: Duration::from_millis(100),
            log_flush_interval: Duration::from_millis(20),
            poll_interval: Duration::from_millis(200),
            ..DispatcherConfig::default()
        };
        let executors =
            Executors::default().with(EnvironmentType::Process, std::sync::Arc::new(fake.clone()));
        let dispatcher = Dispatcher::new(store.clone(), executors, config);
        let handle = dispatcher.handle();
        let cancel = CancellationToken::new();
        let submitter = Submitter::start(store.clone(), handle.clone(), cancel.clone());
        let loop_cancel = cancel.clone();
        let task = tokio::spawn(async move { dispatcher.run(loop_cancel).await.unwrap() });
        Harness {
            store,
            fake,
            handle,
            submitter,
            cancel,
            task,
        }
    }

    async fn stop(self) -> (Store, FakeExecutor) {
        self.cancel.cancel();
        self.task.await.unwrap();
        (self.store, self.fake)
    }

    async fn submit(&self, command: &[&str], timeout_seconds: Option<i64>) -> JobId {
        self.submit_request(SubmitJobRequest {
            job_queue: "q".into(),
            job_definition: "d".into(),
            parameters: BTreeMap::from([("word".to_string(), "you".to_string())]),
            container_overrides: Some(ContainerOverrides {
                command: Some(command.iter().map(|w| w.to_string()).collect()),
                ..ContainerOverrides::default()
            }),
            timeout: timeout_seconds.map(|s| batchctl_scheduler::manifest::TimeoutSpec {
                attempt_duration_seconds: s,
            }),
            ..SubmitJobRequest::default()
        })
        .await
    }

    async fn submit_request(&self, request: SubmitJobRequest) -> JobId {
        let definition = self
            .store
            .job_definition(&DefinitionRef::parse(&request.job_definition).unwrap())
            .await
            .unwrap()
            .unwrap()
            .definition;
        let queue = self
            .store
            .job_queue(&QueueName::try_from(request.job_queue.clone()).unwrap())
            .await
            .unwrap()
            .unwrap();
        let environments = self.store.compute_environments().await.unwrap();
        let context = SubmitContext {
            definition: &definition,
            queue: &queue,
            environments: &environments,
        };
        let id = JobId(uuid::Uuid::new_v4().to_string());
        let job = build_job(&request, &context, id, None, now_millis()).unwrap();
        self.submitter.submit(job).await.unwrap().job_id
    }

    async fn wait_for(&self, job_id: &JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let job = self.store.job(job_id).await.unwrap().unwrap();
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {job:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_status(&self, job_id: &JobId, status: JobStatus) -> Job {
        self.wait_for(job_id, status.as_str(), |job| job.status == status)
            .await
    }
}

async fn a_job_runs_to_success_with_its_environment_and_logs(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness.submit(&["echo", "hello", "Ref::word"], None).await;
    let job = harness.wait_for_status(&id, JobStatus::Succeeded).await;
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].exit_code, Some(0));
    assert!(job.started_at.is_some() && job.stopped_at.is_some());

    let started = harness.fake.started();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].command, ["echo", "hello", "you"]);
    let env: BTreeMap<_, _> = started[0]
        .environment
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["BATCH_JOB_ID"], id.0);
    assert_eq!(env["AWS_BATCH_JOB_ID"], id.0);
    assert_eq!(env["BATCH_JOB_ATTEMPT"], "1");
    assert_eq!(env["BATCH_JOB_QUEUE"], "q");
    assert_eq!(env["AWS_BATCH_JQ_NAME"], "q");

    let logs = harness.store.logs(&id, 1, 0, 10).await.unwrap();
    let text: Vec<u8> = logs.iter().flat_map(|l| l.data.clone()).collect();
    assert_eq!(String::from_utf8(text).unwrap(), "hello you\n");
    // The finished attempt is forgotten by the executor once it is recorded.
    harness
        .wait_for(&id, "removal", |_| {
            harness
                .fake
                .calls()
                .iter()
                .any(|c| matches!(c, Call::Remove(_)))
        })
        .await;
    harness.stop().await;
}

async fn a_failing_job_is_retried_then_fails(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness.submit(&["exit", "3"], None).await;
    let job = harness.wait_for_status(&id, JobStatus::Failed).await;
    let codes: Vec<_> = job
        .attempts
        .iter()
        .map(|a| (a.number, a.exit_code))
        .collect();
    assert_eq!(codes, [(1, Some(3)), (2, Some(3))]);
    assert_eq!(
        job.status_reason.as_deref(),
        Some("Essential container in task exited with code 3")
    );
    let attempts: Vec<u32> = harness
        .fake
        .started()
        .iter()
        .map(|s| s.attempt_number)
        .collect();
    assert_eq!(attempts, [1, 2]);
    harness.stop().await;
}

async fn capacity_bounds_how_many_attempts_run(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(harness.submit(&["hang"], None).await);
    }
    harness.wait_for_status(&ids[0], JobStatus::Running).await;
    harness.wait_for_status(&ids[1], JobStatus::Running).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids[2..] {
        let job = harness.store.job(id).await.unwrap().unwrap();
        assert_eq!(
            job.status,
            JobStatus::Runnable,
            "2 vCPUs hold two 1-vCPU jobs"
        );
    }
    assert_eq!(harness.fake.started().len(), 2);
    // Freeing one slot lets exactly the next job in, in submission order.
    stop_job(
        &harness.store,
        &harness.handle,
        &ids[0],
        "make room",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    harness.wait_for_status(&ids[2], JobStatus::Running).await;
    assert_eq!(
        harness.store.job(&ids[3]).await.unwrap().unwrap().status,
        JobStatus::Runnable
    );
    harness.stop().await;
}

async fn terminate_stops_running_work_without_retry(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness.submit(&["hang"], None).await;
    harness.wait_for_status(&id, JobStatus::Running).await;
    stop_job(
        &harness.store,
        &harness.handle,
        &id,
        "not needed any more",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    let job = harness.wait_for_status(&id, JobStatus::Failed).await;
    assert_eq!(job.status_reason.as_deref(), Some("not needed any more"));
    assert_eq!(job.attempts.len(), 1, "a terminated job is not retried");
    assert!(harness
        .fake
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Kill(_))));
    let error = stop_job(
        &harness.store,
        &harness.handle,
        &id,
        "again",
        StopMode::Terminate,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("job {id} is already FAILED; there is nothing to stop")
    );
    harness.stop().await;
}

async fn the_attempt_timeout_stops_work(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness.submit(&["hang"], Some(1)).await;
    let job = harness.wait_for_status(&id, JobStatus::Failed).await;
    assert_eq!(
        job.status_reason.as_deref(),
        Some("Job attempt duration exceeded timeout of 1 seconds")
    );
    assert_eq!(
        job.attempts.len(),
        1,
        "as AWS Batch, a timed-out attempt is not retried"
    );
    harness.stop().await;
}

async fn cancel_removes_a_waiting_job(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let first = harness.submit(&["hang"], None).await;
    let second = harness.submit(&["hang"], None).await;
    let waiting = harness.submit(&["hang"], None).await;
    harness.wait_for_status(&second, JobStatus::Running).await;
    let error = stop_job(
        &harness.store,
        &harness.handle,
        &first,
        "no",
        StopMode::Cancel,
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is RUNNING: cancel only stops jobs that have not started"),
        "{error}"
    );
    let job = stop_job(
        &harness.store,
        &harness.handle,
        &waiting,
        "changed my mind",
        StopMode::Cancel,
    )
    .await
    .unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.status_reason.as_deref(), Some("changed my mind"));
    assert!(job.attempts.is_empty());
    assert_eq!(harness.fake.started().len(), 2);
    harness.stop().await;
}

async fn an_unreachable_executor_leaves_jobs_runnable(store: Store) {
    support::apply(&store, RESOURCES).await;
    let fake = FakeExecutor::new();
    fake.set_unavailable(Some("engine is down"));
    let harness = Harness::start(store, fake).await;
    let id = harness.submit(&["exit", "0"], None).await;
    let job = harness
        .wait_for(&id, "a deferral", |job| {
            job.status_reason.as_deref() == Some("executor unavailable: engine is down")
        })
        .await;
    assert!(
        matches!(job.status, JobStatus::Runnable | JobStatus::Starting),
        "{:?}",
        job.status
    );
    harness.fake.set_unavailable(None);
    let job = harness.wait_for_status(&id, JobStatus::Succeeded).await;
    assert_eq!(
        job.attempts.len(),
        1,
        "deferred starts do not spend attempts"
    );
    harness.stop().await;
}

async fn a_restart_adopts_running_work_and_requeues_unstarted_placements(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness.submit(&["hang"], None).await;
    harness.wait_for_status(&id, JobStatus::Running).await;
    let (store, fake) = harness.stop().await;

    // A second dispatcher over the same store and executor: the work is adopted, not started again.
    let harness = Harness::start(store, fake).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(harness.fake.started().len(), 1);
    assert_eq!(
        harness.store.job(&id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    stop_job(
        &harness.store,
        &harness.handle,
        &id,
        "done",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    harness.wait_for_status(&id, JobStatus::Failed).await;
    let (store, _) = harness.stop().await;

    // A RUNNING job whose work the executor does not know fails: re-running it could run it twice.
    let harness = Harness::start(store.clone(), FakeExecutor::new()).await;
    let id = harness.submit(&["hang"], None).await;
    harness.wait_for_status(&id, JobStatus::Running).await;
    let (store, _) = harness.stop().await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let job = harness.wait_for_status(&id, JobStatus::Failed).await;
    assert_eq!(
        job.status_reason.as_deref(),
        Some(
            "Attempt lost: the executor has no record of the attempt after the scheduler restarted"
        )
    );
    let (store, _) = harness.stop().await;

    // A placement committed just before a crash, never handed to the executor, goes back to the
    // queue without spending an attempt and then runs once.
    let job = build_job(
        &SubmitJobRequest {
            job_queue: "q".into(),
            job_definition: "d".into(),
            ..SubmitJobRequest::default()
        },
        &SubmitContext {
            definition: &store
                .job_definition(&DefinitionRef::parse("d").unwrap())
                .await
                .unwrap()
                .unwrap()
                .definition,
            queue: &store
                .job_queue(&QueueName::try_from("q".to_string()).unwrap())
                .await
                .unwrap()
                .unwrap(),
            environments: &store.compute_environments().await.unwrap(),
        },
        JobId("crashed-placement".into()),
        None,
        now_millis(),
    )
    .unwrap();
    store.insert_jobs(&[job]).await.unwrap();
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 10, now_millis())
        .await
        .unwrap();
    let placed = Transition {
        job_id: JobId("crashed-placement".into()),
        from: JobStatus::Runnable,
        to: JobStatus::Starting,
        effect: Effect::Placed {
            attempt: CurrentAttempt {
                number: 1,
                compute_environment: EnvironmentName::try_from("local".to_string()).unwrap(),
                executor_handle: "crashed-placement-1".into(),
                placed_at: now_millis(),
                started_at: None,
            },
        },
    };
    assert_eq!(
        store
            .apply_transitions(&[placed], now_millis())
            .await
            .unwrap(),
        [true]
    );
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = JobId("crashed-placement".into());
    let job = harness.wait_for_status(&id, JobStatus::Succeeded).await;
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(harness.fake.started().len(), 1);
    harness.stop().await;
}

async fn a_restart_while_the_executor_is_unreachable_keeps_running_jobs(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness.submit(&["hang"], None).await;
    harness.wait_for_status(&id, JobStatus::Running).await;
    let (store, fake) = harness.stop().await;

    // What the executor holds cannot be listed: the job is neither failed as lost nor started again.
    fake.set_unavailable(Some("engine is down"));
    let harness = Harness::start(store, fake).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        harness.store.job(&id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    harness.fake.set_unavailable(None);
    stop_job(
        &harness.store,
        &harness.handle,
        &id,
        "done",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    let job = harness.wait_for_status(&id, JobStatus::Failed).await;
    assert_eq!(job.status_reason.as_deref(), Some("done"));
    assert_eq!(harness.fake.started().len(), 1);
    harness.stop().await;
}

async fn an_environment_without_an_executor_keeps_jobs_runnable(store: Store) {
    // The harness registers an executor for process environments only.
    let docker_only = RESOURCES.replace("type: process", "type: docker");
    support::apply(&store, &docker_only).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness.submit(&["exit", "0"], None).await;
    let job = harness
        .wait_for(&id, "a deferral", |job| {
            job.status_reason.as_deref()
                == Some("no executor is available for compute environment local")
        })
        .await;
    assert!(
        matches!(job.status, JobStatus::Runnable | JobStatus::Starting),
        "{:?}",
        job.status
    );
    assert!(job.attempts.is_empty());
    assert!(harness.fake.started().is_empty());
    harness.stop().await;
}

const RULES: &str = r#"
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: rules}
spec:
  containerProperties: {image: busybox, command: ["exit", "0"]}
  retryStrategy:
    attempts: 3
    evaluateOnExit:
      - {onExitCode: "3", action: EXIT}
      - {onExitCode: "4*", action: retry}
---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: patient}
spec:
  containerProperties: {image: busybox, command: ["exit", "1"]}
  retryStrategy:
    attempts: 2
    backoff: {initialDelaySeconds: 1, factor: 2, maxDelaySeconds: 10}
"#;

fn request(definition: &str, command: &[&str]) -> SubmitJobRequest {
    SubmitJobRequest {
        job_queue: "q".into(),
        job_definition: definition.into(),
        container_overrides: Some(ContainerOverrides {
            command: Some(command.iter().map(|w| w.to_string()).collect()),
            ..ContainerOverrides::default()
        }),
        ..SubmitJobRequest::default()
    }
}

async fn evaluate_on_exit_decides_retries(store: Store) {
    support::apply(&store, RESOURCES).await;
    support::apply(&store, RULES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    // EXIT on code 3: one attempt, though three are allowed.
    let exit = harness
        .submit_request(request("rules", &["exit", "3"]))
        .await;
    let job = harness.wait_for_status(&exit, JobStatus::Failed).await;
    assert_eq!(job.attempts.len(), 1);
    // RETRY on 4*: all three attempts.
    let retry = harness
        .submit_request(request("rules", &["exit", "42"]))
        .await;
    let job = harness.wait_for_status(&retry, JobStatus::Failed).await;
    assert_eq!(job.attempts.len(), 3);
    // No rule matches code 7: retried, as AWS Batch does.
    let unmatched = harness
        .submit_request(request("rules", &["exit", "7"]))
        .await;
    let job = harness.wait_for_status(&unmatched, JobStatus::Failed).await;
    assert_eq!(job.attempts.len(), 3);
    harness.stop().await;
}

async fn retries_wait_out_their_backoff(store: Store) {
    support::apply(&store, RESOURCES).await;
    support::apply(&store, RULES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let id = harness
        .submit_request(request("patient", &["exit", "1"]))
        .await;
    let job = harness.wait_for_status(&id, JobStatus::Failed).await;
    assert_eq!(job.attempts.len(), 2);
    let first_stopped = job.attempts[0].stopped_at;
    let second_started = job.attempts[1].started_at.unwrap();
    assert!(
        second_started - first_stopped >= 1000,
        "the retry started {} ms after the failure; the backoff is 1 s",
        second_started - first_stopped
    );
    harness.stop().await;
}

fn after(command: &[&str], parents: &[&JobId]) -> SubmitJobRequest {
    SubmitJobRequest {
        depends_on: parents
            .iter()
            .map(|p| batchctl_scheduler::manifest::JobDependencySpec {
                job_id: Some(p.0.clone()),
                dependency_type: None,
            })
            .collect(),
        ..request("d", command)
    }
}

async fn dependencies_hold_jobs_until_they_succeed_and_fail_them_when_they_fail(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    // B waits for A to succeed.
    let a = harness.submit(&["sleep-ms", "300"], None).await;
    let b = harness.submit_request(after(&["exit", "0"], &[&a])).await;
    harness.wait_for_status(&a, JobStatus::Running).await;
    assert_eq!(
        harness.store.job(&b).await.unwrap().unwrap().status,
        JobStatus::Pending
    );
    let a_done = harness.wait_for_status(&a, JobStatus::Succeeded).await;
    let b_done = harness.wait_for_status(&b, JobStatus::Succeeded).await;
    assert!(b_done.attempts[0].started_at.unwrap() >= a_done.stopped_at.unwrap());

    // D fails, so C (which depends on D) fails, and so does E (which depends on C).
    let d = harness.submit(&["hang"], None).await;
    let c = harness
        .submit_request(after(&["exit", "0"], &[&a, &d]))
        .await;
    let e = harness.submit_request(after(&["exit", "0"], &[&c])).await;
    harness.wait_for_status(&d, JobStatus::Running).await;
    stop_job(
        &harness.store,
        &harness.handle,
        &d,
        "stop d",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    let c_done = harness.wait_for_status(&c, JobStatus::Failed).await;
    assert_eq!(c_done.status_reason, Some(format!("Dependency {d} failed")));
    let e_done = harness.wait_for_status(&e, JobStatus::Failed).await;
    assert_eq!(e_done.status_reason, Some(format!("Dependency {c} failed")));
    assert!(c_done.attempts.is_empty() && e_done.attempts.is_empty());

    // Cancelling a job that is waiting fails those that wait for it.
    let blocker = harness.submit(&["hang"], None).await;
    let waiting = harness
        .submit_request(after(&["exit", "0"], &[&blocker]))
        .await;
    let behind = harness
        .submit_request(after(&["exit", "0"], &[&waiting]))
        .await;
    harness.wait_for_status(&waiting, JobStatus::Pending).await;
    stop_job(
        &harness.store,
        &harness.handle,
        &waiting,
        "not needed",
        StopMode::Cancel,
    )
    .await
    .unwrap();
    let behind_done = harness.wait_for_status(&behind, JobStatus::Failed).await;
    assert_eq!(
        behind_done.status_reason,
        Some(format!("Dependency {waiting} failed"))
    );
    stop_job(
        &harness.store,
        &harness.handle,
        &blocker,
        "done",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    harness.stop().await;
}

async fn disabled_queues_refuse_new_jobs_and_disabled_environments_get_no_work(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let running = harness.submit(&["hang"], None).await;
    harness.wait_for_status(&running, JobStatus::Running).await;
    // Submitted before the queue is disabled, while the environment is full.
    let queued = harness.submit(&["hang"], None).await;
    let waiting = harness.submit(&["exit", "0"], None).await;
    harness.wait_for_status(&queued, JobStatus::Running).await;
    support::apply(
        &harness.store,
        &RESOURCES.replace(
            "spec: {priority: 1,",
            "spec: {priority: 1, state: DISABLED,",
        ),
    )
    .await;
    harness.handle.notify_resources_changed();

    // A DISABLED queue takes no new job, with a reason saying so...
    let queue = harness
        .store
        .job_queue(&QueueName::try_from("q".to_string()).unwrap())
        .await
        .unwrap()
        .unwrap();
    let definition = harness
        .store
        .job_definition(&DefinitionRef::parse("d").unwrap())
        .await
        .unwrap()
        .unwrap()
        .definition;
    let environments = harness.store.compute_environments().await.unwrap();
    let context = SubmitContext {
        definition: &definition,
        queue: &queue,
        environments: &environments,
    };
    let refused = build_job(
        &request("d", &["true"]),
        &context,
        JobId("x".into()),
        None,
        now_millis(),
    )
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("jobQueue: queue \"q\" is DISABLED"),
        "{refused}"
    );
    // ...but the jobs already in it run and finish.
    stop_job(
        &harness.store,
        &harness.handle,
        &running,
        "make room",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    harness
        .wait_for_status(&waiting, JobStatus::Succeeded)
        .await;

    // A DISABLED environment gets no new work until it is enabled again.
    support::apply(
        &harness.store,
        &RESOURCES.replace("type: process,", "type: process, state: DISABLED,"),
    )
    .await;
    harness.handle.notify_resources_changed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = harness.submit(&["exit", "0"], None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        harness.store.job(&held).await.unwrap().unwrap().status,
        JobStatus::Runnable
    );
    assert_eq!(
        harness.store.job(&queued).await.unwrap().unwrap().status,
        JobStatus::Running,
        "running work continues"
    );
    support::apply(&harness.store, RESOURCES).await;
    harness.handle.notify_resources_changed();
    harness.wait_for_status(&held, JobStatus::Succeeded).await;
    stop_job(
        &harness.store,
        &harness.handle,
        &queued,
        "done",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    harness.stop().await;
}

const FAIR_SHARE: &str = r#"
apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: shared}
spec: {type: process, maxVcpus: 6, maxMemoryMiB: 1024}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: fair}
spec:
  priority: 1
  computeEnvironmentOrder: [{order: 1, computeEnvironment: shared}]
  schedulingPolicy:
    fairsharePolicy:
      shareDecaySeconds: 3600
      shareDistribution:
        - {shareIdentifier: light, weightFactor: 1}
        - {shareIdentifier: heavy, weightFactor: 2}
"#;

async fn busy_shares_get_vcpu_seconds_in_inverse_ratio_of_their_weights(store: Store) {
    support::apply(&store, RESOURCES).await;
    // Held (environment DISABLED) while both shares submit: on a busy machine submitting takes
    // seconds, and the share submitted first would otherwise run alone meanwhile, which says
    // nothing about fairness between two busy shares.
    let held = FAIR_SHARE.replace("type: process,", "type: process, state: DISABLED,");
    assert_ne!(held, FAIR_SHARE);
    support::apply(&store, &held).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    // Both shares keep far more work queued than the 6 vCPUs can run during the measurement; the
    // heavier-weighted share submits first, so FIFO would favour it.
    const PER_SHARE: usize = 150;
    let mut ids = Vec::new();
    for share in ["heavy", "light"] {
        for _ in 0..PER_SHARE {
            let id = harness
                .submit_request(SubmitJobRequest {
                    job_queue: "fair".into(),
                    share_identifier: Some(share.into()),
                    ..request("d", &["sleep-ms", "100"])
                })
                .await;
            ids.push((share, id));
        }
    }
    support::apply(&harness.store, FAIR_SHARE).await;
    harness.handle.notify_resources_changed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while harness
        .store
        .count_jobs(JobStatus::Succeeded)
        .await
        .unwrap()
        < 120
    {
        assert!(tokio::time::Instant::now() < deadline, "jobs did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (store, _) = harness.stop().await;
    let mut vcpu_seconds: BTreeMap<&str, f64> = BTreeMap::new();
    let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
    for (share, id) in &ids {
        let job = store.job(id).await.unwrap().unwrap();
        if job.status != JobStatus::Succeeded {
            continue;
        }
        let attempt = &job.attempts[0];
        let seconds = (attempt.stopped_at - attempt.started_at.unwrap()) as f64 / 1000.0;
        *vcpu_seconds.entry(share).or_default() += seconds;
        *finished.entry(share).or_default() += 1;
    }
    assert!(
        finished.values().all(|n| *n < PER_SHARE),
        "a share ran out of work during the measurement: {finished:?}"
    );
    let ratio = vcpu_seconds["light"] / vcpu_seconds["heavy"];
    assert!(
        (1.8..=2.2).contains(&ratio),
        "light:heavy vCPU-seconds {ratio:.3}, not 2:1 within 10% ({vcpu_seconds:?}, {finished:?})"
    );
}
