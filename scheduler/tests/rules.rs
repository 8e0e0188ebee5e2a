//! The rule runner on SQLite and Postgres: matching events submit their rule's job once, with
//! values carried over, across restarts and racing runners; refused targets are recorded.

mod support;

use batchctl_scheduler::core::events::{event_from_entry, Event};
use batchctl_scheduler::core::model::{Attempt, CurrentAttempt, JobId, JobStatus};
use batchctl_scheduler::dispatcher::DispatcherHandle;
use batchctl_scheduler::rules::RuleRunner;
use batchctl_scheduler::store::{now_millis, Effect, JobFilter, Store, Transition};
use serde_json::json;

store_suite!(
    matching_events_submit_their_rules_job_once,
    racing_runners_deliver_each_event_once,
    a_target_that_cannot_be_submitted_is_recorded,
    job_state_changes_reach_the_bus_while_a_rule_can_match_them,
    a_delivery_whose_job_cannot_be_written_is_not_recorded,
    pruning_keeps_what_a_reader_has_not_passed,
);

/// Applied after `support::LOCAL_QUEUE`.
const RESOURCES: &str = r#"
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: ingest}
spec:
  parameters: {key: none}
  containerProperties: {image: x, command: [echo, "Ref::key"]}
---
apiVersion: batchctl/v1
kind: EventRule
metadata: {name: on-upload}
spec:
  eventPattern:
    source: [storage]
    detail-type: [Object Created]
    detail: {size: [{numeric: [">", 0]}]}
  inputTransformer: {inputPathsMap: {key: $.detail.key, size: $.detail.size}}
  target:
    jobQueue: q
    jobDefinition: ingest
    parameters: {key: "<key>"}
    containerOverrides: {environment: [{name: SIZE, value: "<size>"}]}
"#;

fn event(id: &str, key: &str, size: i64) -> Event {
    event_from_entry(
        &json!({"id": id, "source": "storage", "detail-type": "Object Created", "detail": {"key": key, "size": size}}),
        id,
        chrono::Utc::now(),
    )
    .unwrap()
}

async fn jobs(store: &Store) -> Vec<(String, String, String)> {
    let page = store
        .jobs(&JobFilter {
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let mut jobs: Vec<_> = page
        .jobs
        .iter()
        .map(|job| {
            let env = |name: &str| {
                job.spec
                    .container
                    .environment
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (
                job.spec.parameters["key"].clone(),
                env("SIZE"),
                env("BATCH_EVENT_ID"),
            )
        })
        .collect();
    jobs.sort();
    jobs
}

async fn matching_events_submit_their_rules_job_once(store: Store) {
    support::apply_on_local_queue(&store, RESOURCES).await;
    let events = [
        event("e1", "a.csv", 10),
        event("e2", "empty.csv", 0),
        event("e1", "a.csv", 10),
        event("e3", "b.csv", 20),
    ];
    let new = store.put_events(&events, now_millis()).await.unwrap();
    assert_eq!(
        new,
        [true, true, false, true],
        "a repeated id is stored once"
    );
    // Accepted, and the server "died" before matching: a runner started later finds them.
    let runner = RuleRunner::new(store.clone(), DispatcherHandle::default());
    runner.run_once().await.unwrap();
    let expected = vec![
        ("a.csv".to_string(), "10".to_string(), "e1".to_string()),
        ("b.csv".to_string(), "20".to_string(), "e3".to_string()),
    ];
    assert_eq!(jobs(&store).await, expected);
    // Again, and from a restarted runner: nothing is submitted twice.
    runner.run_once().await.unwrap();
    RuleRunner::new(store.clone(), DispatcherHandle::default())
        .run_once()
        .await
        .unwrap();
    assert_eq!(jobs(&store).await, expected);
    let deliveries = store.rule_deliveries("on-upload", 10).await.unwrap();
    assert_eq!(deliveries.len(), 2);
}

async fn racing_runners_deliver_each_event_once(store: Store) {
    support::apply_on_local_queue(&store, RESOURCES).await;
    let events: Vec<Event> = (0..20)
        .map(|i| event(&format!("e{i}"), &format!("{i}.csv"), 1))
        .collect();
    store.put_events(&events, now_millis()).await.unwrap();
    let runners: Vec<_> = (0..4)
        .map(|_| RuleRunner::new(store.clone(), DispatcherHandle::default()))
        .collect();
    let passes = runners.iter().map(|runner| runner.run_once());
    for result in futures::future::join_all(passes).await {
        result.unwrap();
    }
    assert_eq!(jobs(&store).await.len(), 20);
}

async fn a_target_that_cannot_be_submitted_is_recorded(store: Store) {
    support::apply_on_local_queue(&store, &RESOURCES.replace("jobQueue: q", "jobQueue: gone"))
        .await;
    store
        .put_events(&[event("e1", "a.csv", 10)], now_millis())
        .await
        .unwrap();
    RuleRunner::new(store.clone(), DispatcherHandle::default())
        .run_once()
        .await
        .unwrap();
    assert!(jobs(&store).await.is_empty());
    let deliveries = store.rule_deliveries("on-upload", 10).await.unwrap();
    assert_eq!(deliveries[0].1, "FAILED");
    assert!(
        deliveries[0]
            .3
            .as_deref()
            .unwrap()
            .contains("queue \"gone\" does not exist"),
        "{deliveries:?}"
    );
}

async fn job_state_changes_reach_the_bus_while_a_rule_can_match_them(store: Store) {
    support::apply_on_local_queue(&store, RESOURCES).await;
    let definition = store
        .job_definition(&batchctl_scheduler::core::model::DefinitionRef::parse("ingest").unwrap())
        .await
        .unwrap()
        .unwrap()
        .definition;
    let queue = store
        .job_queue(&batchctl_scheduler::core::model::QueueName::try_from("q".to_string()).unwrap())
        .await
        .unwrap()
        .unwrap();
    let environments = store.compute_environments().await.unwrap();
    let submit = |id: &str| {
        batchctl_scheduler::manifest::build_job(
            &batchctl_scheduler::manifest::SubmitJobRequest {
                job_queue: "q".into(),
                job_definition: "ingest".into(),
                job_name: Some("watched".into()),
                ..Default::default()
            },
            &batchctl_scheduler::manifest::SubmitContext {
                definition: &definition,
                queue: &queue,
                environments: &environments,
            },
            batchctl_scheduler::core::model::JobId(id.into()),
            None,
            now_millis(),
        )
        .unwrap()
    };
    let job_events = |events: Vec<batchctl_scheduler::store::BusEvent>| -> Vec<String> {
        events
            .iter()
            .filter(|event| event.envelope["source"] == "batchctl")
            .map(|event| {
                let detail = &event.envelope["detail"];
                format!(
                    "{} {} {}",
                    detail["jobId"].as_str().unwrap(),
                    detail["jobName"].as_str().unwrap(),
                    detail["status"].as_str().unwrap()
                )
            })
            .collect()
    };
    // No rule listens to job events: none are stored.
    store.insert_jobs(&[submit("quiet")]).await.unwrap();
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 10, now_millis())
        .await
        .unwrap();
    assert!(job_events(store.events_after(0, 100).await.unwrap()).is_empty());
    // A rule that can match them: every transition puts one on the bus.
    support::apply(
        &store,
        "apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: on-failure}\nspec:\n  eventPattern: {source: [batchctl], detail-type: [Job State Change], detail: {status: [FAILED]}}\n  target: {jobQueue: q, jobDefinition: ingest}\n",
    )
    .await;
    assert!(store.refresh_job_event_interest().await.unwrap());
    store.insert_jobs(&[submit("loud")]).await.unwrap();
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 10, now_millis())
        .await
        .unwrap();
    store
        .advance_oldest(JobStatus::Runnable, JobStatus::Failed, 10, now_millis())
        .await
        .unwrap();
    let seen = job_events(store.events_after(0, 100).await.unwrap());
    assert_eq!(
        seen,
        [
            "loud watched RUNNABLE",
            "quiet watched FAILED",
            "loud watched FAILED"
        ]
    );
    // A start and an end reported together are written as one move from STARTING; the job still
    // shows when it started, and the bus still has its RUNNING before its end.
    store.insert_jobs(&[submit("short")]).await.unwrap();
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 10, now_millis())
        .await
        .unwrap();
    let environment =
        batchctl_scheduler::core::model::EnvironmentName::try_from("local".to_string()).unwrap();
    let placed = Transition {
        job_id: JobId("short".into()),
        from: JobStatus::Runnable,
        to: JobStatus::Starting,
        effect: Effect::Placed {
            attempt: CurrentAttempt {
                number: 1,
                compute_environment: environment.clone(),
                executor_handle: "h".into(),
                placed_at: 5,
                started_at: None,
                gpu_ids: vec![],
            },
            used_up: Vec::new(),
        },
    };
    let ended = Transition {
        job_id: JobId("short".into()),
        from: JobStatus::Starting,
        to: JobStatus::Succeeded,
        effect: Effect::AttemptEnded {
            attempt: Attempt {
                number: 1,
                compute_environment: environment,
                exit_code: Some(0),
                status_reason: "Essential container in task exited".into(),
                started_at: Some(7),
                stopped_at: 9,
                resources: None,
            },
            runnable_after: None,
            disruption: false,
            next_resources: None,
        },
    };
    assert!(ended.passes_running());
    assert_eq!(
        store.apply_transitions(&[placed, ended], 9).await.unwrap(),
        [true, true]
    );
    let job = store.job(&JobId("short".into())).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.started_at),
        (JobStatus::Succeeded, Some(7))
    );
    let seen = job_events(store.events_after(0, 100).await.unwrap());
    assert_eq!(
        seen[seen.len() - 3..],
        [
            "short watched STARTING",
            "short watched RUNNING",
            "short watched SUCCEEDED"
        ]
    );
}

/// A crash injected between recording a delivery and writing its job: the job insert fails
/// inside the delivery's transaction, and the delivery must not stay recorded, so the event is
/// delivered when it is read again.
async fn a_delivery_whose_job_cannot_be_written_is_not_recorded(store: Store) {
    support::apply_on_local_queue(&store, RESOURCES).await;
    store
        .put_events(&[event("e1", "a.csv", 10)], now_millis())
        .await
        .unwrap();
    RuleRunner::new(store.clone(), DispatcherHandle::default())
        .run_once()
        .await
        .unwrap();
    let taken = store
        .jobs(&JobFilter {
            limit: 1,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .jobs
        .remove(0);
    // A second delivery whose job reuses that job's id cannot be written.
    let failed = store.deliver("e2", "on-upload", &taken, now_millis()).await;
    assert!(failed.is_err(), "the job insert must fail");
    assert!(
        !store.delivered("e2", "on-upload").await.unwrap(),
        "a delivery without its job stayed recorded"
    );
    assert!(store.delivered("e1", "on-upload").await.unwrap());
}

async fn pruning_keeps_what_a_reader_has_not_passed(store: Store) {
    support::apply_on_local_queue(&store, RESOURCES).await;
    let events: Vec<Event> = (0..4)
        .map(|i| event(&format!("e{i}"), "a.csv", 1))
        .collect();
    // Received at 1000 (old) and 5000 (recent).
    store.put_events(&events[..2], 1000).await.unwrap();
    store.put_events(&events[2..], 5000).await.unwrap();
    let seqs: Vec<i64> = store
        .events_after(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|event| event.seq)
        .collect();
    // The rule runner has passed everything; the notifier only the first event.
    store.set_bus_cursor("rules", seqs[3]).await.unwrap();
    store
        .set_bus_cursor("notifications", seqs[0])
        .await
        .unwrap();
    assert_eq!(
        store.prune_bus(3000).await.unwrap(),
        1,
        "only the old event both passed"
    );
    let left: Vec<String> = store
        .events_after(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_id)
        .collect();
    assert_eq!(left, ["e1", "e2", "e3"]);
    store
        .set_bus_cursor("notifications", seqs[3])
        .await
        .unwrap();
    assert_eq!(
        store.prune_bus(3000).await.unwrap(),
        1,
        "recent events stay"
    );
    assert_eq!(store.prune_bus(9000).await.unwrap(), 2);
}
