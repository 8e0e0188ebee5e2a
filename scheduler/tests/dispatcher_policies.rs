//! The dispatcher's policies with a recording fake executor, on SQLite and Postgres: exit rules,
//! backoff, dependencies, disabled queues and environments, fair share.

mod support;

use support::dispatcher::{Harness, RESOURCES};

use std::collections::BTreeMap;
use std::time::Duration;

use batchctl_executor::fake::FakeExecutor;
use batchctl_scheduler::control::{stop_job, StopMode};
use batchctl_scheduler::core::model::{DefinitionRef, JobId, JobStatus, QueueName};
use batchctl_scheduler::manifest::{
    build_job, ContainerOverrides, SubmitContext, SubmitJobRequest,
};
use batchctl_scheduler::store::{now_millis, Store};

store_suite!(
    evaluate_on_exit_decides_retries,
    retries_wait_out_their_backoff,
    dependencies_hold_jobs_until_they_succeed_and_fail_them_when_they_fail,
    dependency_conditions_decide_which_end_lets_a_dependent_run,
    disabled_queues_refuse_new_jobs_and_disabled_environments_get_no_work,
    busy_shares_get_vcpu_seconds_in_inverse_ratio_of_their_weights,
    share_usage_survives_a_restart,
);

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
                condition: None,
            })
            .collect(),
        ..request("d", command)
    }
}

/// `condition` on each dependency, as the API takes it.
fn after_with(
    command: &[&str],
    parents: &[(&JobId, &str, Option<&str>)],
    array_size: Option<u32>,
) -> SubmitJobRequest {
    SubmitJobRequest {
        depends_on: parents
            .iter()
            .map(
                |(p, condition, kind)| batchctl_scheduler::manifest::JobDependencySpec {
                    job_id: Some(p.0.clone()),
                    dependency_type: kind.map(str::to_string),
                    condition: Some(condition.to_string()),
                },
            )
            .collect(),
        array_properties: array_size.map(|size| {
            batchctl_scheduler::manifest::ArrayPropertiesSpec {
                size,
                success_policy: None,
                max_concurrency: None,
            }
        }),
        // One attempt, so that a failure is the job's end.
        retry_strategy: Some(batchctl_scheduler::manifest::RetryStrategySpec {
            attempts: Some(1),
            ..Default::default()
        }),
        ..request("d", command)
    }
}

/// afterany runs after either end, afternotok only after a failure and fails the dependent,
/// naming the dependency, after a success; on single jobs and child by child on N_TO_N arrays.
/// What the bulk statements did is checked against `core::dependencies::resolve`.
async fn dependency_conditions_decide_which_end_lets_a_dependent_run(store: Store) {
    use batchctl_scheduler::core::model::DependencyCondition;
    support::apply(&store, RESOURCES).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let fails = harness
        .submit_request(after_with(&["hang"], &[], None))
        .await;
    let succeeds = harness
        .submit_request(after_with(&["hang"], &[], None))
        .await;
    let any = harness
        .submit_request(after_with(
            &["exit", "0"],
            &[(&fails, "afterany", None)],
            None,
        ))
        .await;
    let not_ok = harness
        .submit_request(after_with(
            &["exit", "0"],
            &[(&fails, "afternotok", None)],
            None,
        ))
        .await;
    let not_ok_of_success = harness
        .submit_request(after_with(
            &["exit", "0"],
            &[(&succeeds, "afternotok", None)],
            None,
        ))
        .await;
    let ok = harness
        .submit_request(after_with(
            &["exit", "0"],
            &[(&fails, "afterok", None)],
            None,
        ))
        .await;
    // A and B are arrays of 2; B's children wait N_TO_N for A's, after a failure only.
    let a = harness
        .submit_request(after_with(&["hang"], &[], Some(2)))
        .await;
    let b = harness
        .submit_request(after_with(
            &["exit", "0"],
            &[(&a, "afternotok", Some("N_TO_N"))],
            Some(2),
        ))
        .await;
    let child = |parent: &JobId, index: u32| JobId(format!("{parent}:{index}"));
    // The environment runs two at once: the single jobs first, then A's children.
    for job in [&fails, &succeeds] {
        harness.wait_for_status(job, JobStatus::Running).await;
    }
    // Waiting: admitted to PENDING, or (an array child created a moment ago) not yet admitted.
    for job in [&any, &not_ok, &not_ok_of_success, &ok, &child(&b, 0)] {
        let status = harness.store.job(job).await.unwrap().unwrap().status;
        assert!(
            matches!(status, JobStatus::Submitted | JobStatus::Pending),
            "{job} waits while what it depends on runs, yet is {status}"
        );
    }
    assert!(harness.fake.exit_job(&fails.0, 1));
    assert!(harness.fake.exit_job(&succeeds.0, 0));
    let singles = [
        (
            &any,
            &fails,
            DependencyCondition::AfterAny,
            JobStatus::Failed,
        ),
        (
            &not_ok,
            &fails,
            DependencyCondition::AfterNotOk,
            JobStatus::Failed,
        ),
        (
            &not_ok_of_success,
            &succeeds,
            DependencyCondition::AfterNotOk,
            JobStatus::Succeeded,
        ),
        (&ok, &fails, DependencyCondition::AfterOk, JobStatus::Failed),
    ];
    for (dependent, dependency, condition, ended) in singles {
        expect_resolution(&harness, dependent, dependency, condition, ended).await;
    }
    for index in [0, 1] {
        harness
            .wait_for_status(&child(&a, index), JobStatus::Running)
            .await;
    }
    let waiting = harness.store.job(&child(&b, 0)).await.unwrap().unwrap();
    assert!(
        matches!(waiting.status, JobStatus::Submitted | JobStatus::Pending),
        "B's child waits for A's: {waiting:?}"
    );
    assert!(harness.fake.exit_job(&child(&a, 0).0, 0));
    assert!(harness.fake.exit_job(&child(&a, 1).0, 1));
    for (index, ended) in [(0, JobStatus::Succeeded), (1, JobStatus::Failed)] {
        let (dependent, dependency) = (child(&b, index), child(&a, index));
        let condition = DependencyCondition::AfterNotOk;
        expect_resolution(&harness, &dependent, &dependency, condition, ended).await;
    }
    let not_ok_of_success = harness
        .store
        .job(&not_ok_of_success)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        not_ok_of_success.status_reason.as_deref(),
        Some(format!(
            "Dependency {succeeds} succeeded; the dependency's condition afternotok needed it to fail"
        ))
        .as_deref()
    );
    assert!(not_ok_of_success.attempts.is_empty());
    // B has a failed child, so it failed as a whole (no success policy).
    harness.wait_for_status(&b, JobStatus::Failed).await;
    harness.stop().await;
}

/// Waits for `dependent` to end as `core::dependencies::resolve` says it must, given that
/// `dependency` ended as `ended`, with the reason it gives.
async fn expect_resolution(
    harness: &Harness,
    dependent: &JobId,
    dependency: &JobId,
    condition: batchctl_scheduler::core::model::DependencyCondition,
    ended: JobStatus,
) {
    use batchctl_scheduler::core::dependencies::{resolve, Resolution};
    match resolve(&[(dependency.clone(), condition, ended)]) {
        Resolution::Ready => {
            let done = harness
                .wait_for_status(dependent, JobStatus::Succeeded)
                .await;
            assert_eq!(done.attempts.len(), 1, "{dependent} ran");
        }
        Resolution::Failed(reason) => {
            let done = harness.wait_for_status(dependent, JobStatus::Failed).await;
            assert_eq!(done.status_reason, Some(reason), "{dependent}");
            assert!(done.attempts.is_empty(), "{dependent} never ran");
        }
        Resolution::Waiting => unreachable!("the dependency has ended"),
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
    let succeeded =
        |store: Store| async move { store.count_jobs(JobStatus::Succeeded).await.unwrap() };
    while succeeded(harness.store.clone()).await < 60 {
        assert!(tokio::time::Instant::now() < deadline, "jobs did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A restart in the middle: a new dispatcher on the same store (and executor, which kept
    // running what was placed) goes on from the stored usage.
    let (store, fake) = harness.stop().await;
    let harness = Harness::start(store, fake).await;
    while succeeded(harness.store.clone()).await < 120 {
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

/// The usage a share ran up before a restart still counts after it: the new dispatcher's
/// standings start from the stored ledger, not from zero.
async fn share_usage_survives_a_restart(store: Store) {
    support::apply(&store, RESOURCES).await;
    support::apply(&store, FAIR_SHARE).await;
    let harness = Harness::start(store, FakeExecutor::new()).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            harness
                .submit_request(SubmitJobRequest {
                    job_queue: "fair".into(),
                    share_identifier: Some("heavy".into()),
                    ..request("d", &["sleep-ms", "200"])
                })
                .await,
        );
    }
    for id in &ids {
        harness.wait_for_status(id, JobStatus::Succeeded).await;
    }
    let usage = |harness: &Harness| {
        harness
            .handle
            .share_standings(&QueueName::try_from("fair".to_string()).unwrap())
            .iter()
            .find(|standing| standing.share == "heavy")
            .map_or(0.0, |standing| standing.usage_vcpu_seconds)
    };
    // Standings are taken at placement: one more job shows them.
    let id = probe(&harness).await;
    harness.wait_for_status(&id, JobStatus::Succeeded).await;
    let before = usage(&harness);
    assert!(before >= 1.0, "six jobs of 0.2 s on 1 vCPU each: {before}");
    let (store, fake) = harness.stop().await;

    let harness = Harness::start(store, fake).await;
    let id = probe(&harness).await;
    harness.wait_for_status(&id, JobStatus::Succeeded).await;
    let after = usage(&harness);
    // Decayed with a half-life of an hour over a second or so: all but a hair of it.
    assert!(
        after > before * 0.99 && after <= before,
        "heavy's usage {before} before the restart, {after} after"
    );
    harness.stop().await;
}

async fn probe(harness: &Harness) -> JobId {
    harness
        .submit_request(SubmitJobRequest {
            job_queue: "fair".into(),
            share_identifier: Some("light".into()),
            ..request("d", &["sleep-ms", "10"])
        })
        .await
}
