//! The dispatcher with a recording fake executor, on SQLite and Postgres: what it decides, and what
//! it records.

mod support;

use support::dispatcher::{Harness, RESOURCES};

use std::collections::BTreeMap;
use std::time::Duration;

use batchctl_executor::fake::{Call, FakeExecutor};
use batchctl_scheduler::control::{stop_job, StopMode};
use batchctl_scheduler::core::model::{
    CurrentAttempt, DefinitionRef, EnvironmentName, JobId, JobStatus, QueueName,
};
use batchctl_scheduler::manifest::{build_job, SubmitContext, SubmitJobRequest};
use batchctl_scheduler::store::{now_millis, Effect, Store, Transition};

store_suite!(
    a_job_runs_to_success_with_its_environment_and_logs,
    a_failing_job_is_retried_then_fails,
    capacity_bounds_how_many_attempts_run,
    the_store_never_holds_more_attempts_than_capacity,
    terminate_stops_running_work_without_retry,
    the_attempt_timeout_stops_work,
    cancel_removes_a_waiting_job,
    an_unreachable_executor_leaves_jobs_runnable,
    a_restart_adopts_running_work_and_requeues_unstarted_placements,
    a_restart_while_the_executor_is_unreachable_keeps_running_jobs,
    an_environment_without_an_executor_keeps_jobs_runnable,
    concurrent_gpu_attempts_get_distinct_devices,
);

/// On a docker environment that lists its GPUs, each attempt gets GPUs no running attempt holds,
/// named in its spec and kept with the attempt in the store; a freed device goes to the next.
async fn concurrent_gpu_attempts_get_distinct_devices(store: Store) {
    support::apply(
        &store,
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: gpus}\n\
         spec: {type: docker, maxVcpus: 16, maxMemoryMiB: 4096, maxGpus: 3, gpuIds: [GPU-a, GPU-b, GPU-c]}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: q}\n\
         spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: gpus}]}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: d}\nspec:\n  containerProperties:\n\
         \x20   image: trainer\n    command: [train]\n\
         \x20   resourceRequirements: [{type: VCPU, value: '1'}, {type: MEMORY, value: '64'}, {type: GPU, value: '1'}]\n",
    )
    .await;
    // What placement decides for a docker environment, with the fake serving it.
    let harness = Harness::start_serving(
        store,
        FakeExecutor::new(),
        &[batchctl_scheduler::core::model::EnvironmentType::Docker],
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(harness.submit(&["hang"], None).await);
    }
    for id in &ids[..3] {
        harness.wait_for_status(id, JobStatus::Running).await;
    }
    let devices = |specs: Vec<batchctl_executor::AttemptSpec>| {
        let mut devices: Vec<String> = specs.into_iter().flat_map(|spec| spec.gpu_ids).collect();
        devices.sort();
        devices
    };
    assert_eq!(devices(harness.fake.started()), ["GPU-a", "GPU-b", "GPU-c"]);
    assert_eq!(
        harness.store.job(&ids[3]).await.unwrap().unwrap().status,
        JobStatus::Runnable,
        "three GPUs hold three jobs"
    );
    let first = harness.store.job(&ids[0]).await.unwrap().unwrap();
    let held = first.current_attempt.unwrap().gpu_ids;
    assert_eq!(held.len(), 1, "the store keeps the attempt's devices");
    stop_job(
        &harness.store,
        &harness.handle,
        &ids[0],
        "make room",
        StopMode::Terminate,
    )
    .await
    .unwrap();
    harness.wait_for_status(&ids[3], JobStatus::Running).await;
    let fourth = harness.store.job(&ids[3]).await.unwrap().unwrap();
    assert_eq!(
        fourth.current_attempt.unwrap().gpu_ids,
        held,
        "the freed device"
    );
    harness.stop().await;
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

    let logs = harness.store.logs((&id, 1, 0), 0, 10).await.unwrap();
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

/// An ended attempt's capacity is placed again only once its end is committed, although ends
/// are written while placement runs: no read of the store, a snapshot, ever finds more attempts
/// STARTING or RUNNING than the environment's 2 vCPUs hold.
async fn the_store_never_holds_more_attempts_than_capacity(store: Store) {
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(harness.submit(&["sleep-ms", "3"], None).await);
    }
    let (mut reads, mut most) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active = harness.store.active_jobs().await.unwrap();
        reads += 1;
        most = most.max(active.len());
        assert!(
            active.len() <= 2,
            "read {reads}: {} attempts hold 2 vCPUs: {:?}",
            active.len(),
            active.iter().map(|job| &job.job_id).collect::<Vec<_>>()
        );
        let last = harness.store.job(&ids[59]).await.unwrap().unwrap();
        if last.status == JobStatus::Succeeded {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs did not finish"
        );
    }
    assert!(most > 0, "no read found the work running ({reads} reads)");
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
                gpu_ids: vec![],
            },
            used_up: Vec::new(),
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

/// An attempt that starts and ends within a few milliseconds is written as one move from
/// STARTING to its end, carrying its start (one row version instead of two): its start is
/// folded when both reports come in one batch, or held until the end comes. An attempt still
/// running when its start's hold runs out (10 ms) has its start written by itself, so RUNNING
/// shows. Counted by a trigger on the SQLite file, through a connection of the test's own; with
/// the fold and the hold both taken out, none of the twenty short attempts is folded.
#[tokio::test]
async fn a_short_attempt_s_start_is_written_with_its_end() {
    use sqlx::{Connection, Executor};
    let test = support::sqlite().await;
    let batchctl_scheduler::store::StoreLocation::Sqlite { path } = &test.location else {
        unreachable!("support::sqlite opens a SQLite file")
    };
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    connection
        .execute(
            "CREATE TABLE status_writes (seq INTEGER PRIMARY KEY, job_id TEXT, status TEXT); \
             CREATE TRIGGER status_written AFTER UPDATE OF status ON jobs \
             WHEN OLD.status IS NOT NEW.status \
             BEGIN INSERT INTO status_writes (job_id, status) VALUES (NEW.job_id, NEW.status); END;",
        )
        .await
        .unwrap();
    support::apply(&test.store, RESOURCES).await;
    let harness = Harness::start(test.store.clone(), FakeExecutor::new()).await;
    let slow = harness.submit(&["sleep-ms", "1000"], None).await;
    let mut quick = Vec::new();
    for _ in 0..20 {
        quick.push(harness.submit(&["true"], None).await);
    }
    for id in quick.iter().chain([&slow]) {
        let job = harness.wait_for_status(id, JobStatus::Succeeded).await;
        assert!(job.started_at.is_some(), "{id} keeps its start: {job:?}");
    }
    assert_eq!(
        moves_after_placement(&mut connection, &slow).await,
        "STARTING RUNNING SUCCEEDED"
    );
    let mut folded = 0;
    for id in &quick {
        match moves_after_placement(&mut connection, id).await.as_str() {
            "STARTING SUCCEEDED" => folded += 1,
            "STARTING RUNNING SUCCEEDED" => {}
            other => panic!("{id}: {other}"),
        }
    }
    // A start and its end reported more than the hold apart (a descheduled test thread) are two
    // moves, correctly: most of these twenty are reported together.
    assert!(
        folded >= 10,
        "{folded} of 20 short attempts had their start folded into the end"
    );
    harness.stop().await;
}

/// The statuses `job_id` was written in from its placement on, as the trigger of
/// `a_short_attempt_s_start_is_written_with_its_end` recorded them.
async fn moves_after_placement(connection: &mut sqlx::SqliteConnection, job_id: &JobId) -> String {
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM status_writes WHERE job_id = ? ORDER BY seq")
            .bind(&job_id.0)
            .fetch_all(connection)
            .await
            .unwrap();
    let placed = statuses.iter().position(|s| s == "STARTING");
    statuses[placed.expect("placed")..].join(" ")
}
