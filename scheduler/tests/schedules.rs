//! The schedule runner with a clock the test moves, on SQLite and Postgres: ticks fire exactly
//! once across restarts and racing runners, missed ticks follow the catch-up policy, and the
//! overlap policy holds.

mod support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use batchctl_scheduler::core::model::{JobId, JobStatus};
use batchctl_scheduler::dispatcher::DispatcherHandle;
use batchctl_scheduler::manifest;
use batchctl_scheduler::schedules::{Clock, ScheduleRunner};
use batchctl_scheduler::store::{FiringOutcome, Store};
use chrono::{DateTime, Duration, Utc};

store_suite!(
    a_tick_fires_once_with_its_scheduled_time,
    racing_runners_fire_each_tick_once,
    missed_ticks_follow_the_catch_up_policy,
    forbid_skips_a_tick_while_the_last_run_is_unfinished,
    a_target_that_cannot_be_submitted_records_a_failed_tick,
    a_tick_whose_job_cannot_be_written_is_not_recorded,
    a_deleted_schedule_fires_no_more,
);

#[derive(Clone)]
struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    fn at(text: &str) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc),
        )))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    async fn sleep_until(&self, _when: DateTime<Utc>) {
        std::future::pending::<()>().await
    }
}

/// Applied after `support::LOCAL_QUEUE`.
const RESOURCES: &str = r#"
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: report}
spec:
  parameters: {day: none}
  containerProperties: {image: x, command: [echo, "Ref::day"]}
"#;

fn schedule_document(expression: &str, extra: &str) -> String {
    format!(
        "apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {{name: nightly}}\nspec:\n  scheduleExpression: \"{expression}\"\n  timeZone: Europe/Berlin\n{extra}  target: {{jobQueue: q, jobDefinition: report, parameters: {{day: \"<scheduledTime>\"}}}}\n"
    )
}

async fn apply_at(store: &Store, text: &str, clock: &ManualClock) {
    let documents = manifest::documents_from_text(text).unwrap();
    let valid: Vec<_> = documents
        .iter()
        .map(|d| (manifest::parse_document(d).unwrap(), d["spec"].clone()))
        .collect();
    store
        .apply(&valid, clock.now().timestamp_millis())
        .await
        .unwrap();
}

fn runner(store: &Store, clock: &ManualClock) -> ScheduleRunner {
    ScheduleRunner::new(
        store.clone(),
        DispatcherHandle::default(),
        Arc::new(clock.clone()),
    )
}

async fn fired_jobs(store: &Store) -> Vec<(String, String)> {
    let page = store
        .jobs(&batchctl_scheduler::store::JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut jobs: Vec<(String, String)> = page
        .jobs
        .iter()
        .map(|job| {
            let scheduled = job
                .spec
                .container
                .environment
                .iter()
                .find(|(name, _)| name == "BATCH_SCHEDULED_TIME")
                .map(|(_, value)| value.clone())
                .unwrap_or_default();
            (scheduled, job.spec.parameters["day"].clone())
        })
        .collect();
    jobs.sort();
    jobs
}

async fn a_tick_fires_once_with_its_scheduled_time(store: Store) {
    let clock = ManualClock::at("2026-11-21T09:58:30Z");
    apply_at(
        &store,
        &format!("{}---\n{RESOURCES}", support::LOCAL_QUEUE),
        &clock,
    )
    .await;
    apply_at(&store, &schedule_document("0 11 * * *", ""), &clock).await;
    let first = runner(&store, &clock);
    // Not yet: the next tick is 11:00 Berlin (10:00 UTC).
    let next = first.run_once().await.unwrap();
    assert_eq!(next.unwrap().to_rfc3339(), "2026-11-21T10:00:00+00:00");
    assert!(fired_jobs(&store).await.is_empty());
    clock.advance(Duration::seconds(95));
    first.run_once().await.unwrap();
    let expected = vec![(
        "2026-11-21T11:00:00+01:00".to_string(),
        "2026-11-21T11:00:00+01:00".to_string(),
    )];
    assert_eq!(fired_jobs(&store).await, expected);
    // Again, and from a new runner (a restarted server): the tick is not fired twice.
    first.run_once().await.unwrap();
    runner(&store, &clock).run_once().await.unwrap();
    assert_eq!(fired_jobs(&store).await, expected);
    assert_eq!(store.count_fired("nightly").await.unwrap(), 1);
}

async fn racing_runners_fire_each_tick_once(store: Store) {
    let clock = ManualClock::at("2026-11-21T10:00:00Z");
    apply_at(
        &store,
        &format!("{}---\n{RESOURCES}", support::LOCAL_QUEUE),
        &clock,
    )
    .await;
    apply_at(&store, &schedule_document("rate(1 minute)", ""), &clock).await;
    clock.advance(Duration::seconds(60 * 5 + 10));
    // Five runners (five servers on one database) evaluate the same moment at once.
    let runners: Vec<_> = (0..5).map(|_| runner(&store, &clock)).collect();
    let passes = runners.iter().map(|runner| runner.run_once());
    for result in futures::future::join_all(passes).await {
        result.unwrap();
    }
    // catchUp defaults to latest: ticks 10:01 to 10:04 were missed (older than a minute), so only
    // 10:04 of them fires, and 10:05 is on time.
    let fired = fired_jobs(&store).await;
    let times: Vec<&str> = fired.iter().map(|(time, _)| time.as_str()).collect();
    assert_eq!(
        times,
        ["2026-11-21T11:04:00+01:00", "2026-11-21T11:05:00+01:00"]
    );
}

async fn missed_ticks_follow_the_catch_up_policy(store: Store) {
    for (policy, expected_fired) in [("none", 1), ("latest", 2), ("all", 6)] {
        let clock = ManualClock::at("2026-11-21T10:00:00Z");
        let name = format!("every-{policy}");
        apply_at(
            &store,
            &format!("{}---\n{RESOURCES}", support::LOCAL_QUEUE),
            &clock,
        )
        .await;
        let document = schedule_document(
            "rate(10 minutes)",
            &format!("  catchUp: {{policy: {policy}}}\n"),
        )
        .replace("name: nightly", &format!("name: {name}"));
        apply_at(&store, &document, &clock).await;
        // Down from 10:00 to 11:00:30: 10:10 … 10:50 were missed; 11:00 is on time.
        clock.advance(Duration::seconds(3630));
        runner(&store, &clock).run_once().await.unwrap();
        assert_eq!(
            store.count_fired(&name).await.unwrap(),
            expected_fired,
            "catchUp {policy}"
        );
        let last = store.last_firing(&name).await.unwrap().unwrap();
        assert_eq!(last.outcome, FiringOutcome::Fired);
    }
}

async fn forbid_skips_a_tick_while_the_last_run_is_unfinished(store: Store) {
    let clock = ManualClock::at("2026-11-21T10:00:00Z");
    apply_at(
        &store,
        &format!("{}---\n{RESOURCES}", support::LOCAL_QUEUE),
        &clock,
    )
    .await;
    apply_at(
        &store,
        &schedule_document("rate(1 minute)", "  overlapPolicy: Forbid\n"),
        &clock,
    )
    .await;
    let runner = runner(&store, &clock);
    clock.advance(Duration::seconds(61));
    runner.run_once().await.unwrap();
    // No dispatcher runs here, so the first run stays RUNNABLE (unfinished): the next tick is
    // skipped.
    clock.advance(Duration::seconds(60));
    runner.run_once().await.unwrap();
    assert_eq!(store.count_fired("nightly").await.unwrap(), 1);
    let last = store.last_firing("nightly").await.unwrap().unwrap();
    assert_eq!(last.outcome, FiringOutcome::Skipped);
    assert!(
        last.reason
            .as_deref()
            .unwrap()
            .starts_with("overlapPolicy Forbid"),
        "{last:?}"
    );
    // Once it has finished, the next tick fires.
    let first: JobId = store.last_fired_job("nightly").await.unwrap().unwrap();
    let moved = store
        .advance_oldest(JobStatus::Runnable, JobStatus::Succeeded, 10, 0)
        .await
        .unwrap();
    assert_eq!(moved, 1, "{first}");
    clock.advance(Duration::seconds(60));
    runner.run_once().await.unwrap();
    assert_eq!(store.count_fired("nightly").await.unwrap(), 2);
}

async fn a_target_that_cannot_be_submitted_records_a_failed_tick(store: Store) {
    let clock = ManualClock::at("2026-11-21T10:00:00Z");
    apply_at(
        &store,
        &format!("{}---\n{RESOURCES}", support::LOCAL_QUEUE),
        &clock,
    )
    .await;
    let document = schedule_document("rate(1 minute)", "").replace("jobQueue: q", "jobQueue: gone");
    apply_at(&store, &document, &clock).await;
    clock.advance(Duration::seconds(61));
    runner(&store, &clock).run_once().await.unwrap();
    let last = store.last_firing("nightly").await.unwrap().unwrap();
    assert_eq!(last.outcome, FiringOutcome::Failed);
    assert!(
        last.reason
            .as_deref()
            .unwrap()
            .contains("queue \"gone\" does not exist"),
        "{last:?}"
    );
    assert!(fired_jobs(&store).await.is_empty());
}

/// A crash injected between recording a tick and writing its job: the job insert fails inside
/// the tick's transaction, so the tick must not stay recorded, and the next pass fires it.
async fn a_tick_whose_job_cannot_be_written_is_not_recorded(store: Store) {
    let clock = ManualClock::at("2026-11-21T10:00:00Z");
    apply_at(
        &store,
        &format!("{}---\n{RESOURCES}", support::LOCAL_QUEUE),
        &clock,
    )
    .await;
    apply_at(&store, &schedule_document("rate(1 minute)", ""), &clock).await;
    clock.advance(Duration::seconds(61));
    runner(&store, &clock).run_once().await.unwrap();
    let fired = store.last_fired_job("nightly").await.unwrap().unwrap();
    let job = store.job(&fired).await.unwrap().unwrap();
    let next_tick = store
        .last_firing("nightly")
        .await
        .unwrap()
        .unwrap()
        .scheduled_time
        + 60_000;
    // The same job id again: the insert fails, and with it the firing record.
    assert!(store
        .fire_tick("nightly", next_tick, &job, 0)
        .await
        .is_err());
    assert_eq!(
        store
            .last_firing("nightly")
            .await
            .unwrap()
            .unwrap()
            .scheduled_time,
        next_tick - 60_000
    );
    clock.advance(Duration::seconds(60));
    runner(&store, &clock).run_once().await.unwrap();
    assert_eq!(store.count_fired("nightly").await.unwrap(), 2);
}

async fn a_deleted_schedule_fires_no_more(store: Store) {
    let clock = ManualClock::at("2026-11-21T10:00:00Z");
    apply_at(
        &store,
        &format!("{}---\n{RESOURCES}", support::LOCAL_QUEUE),
        &clock,
    )
    .await;
    apply_at(&store, &schedule_document("rate(1 minute)", ""), &clock).await;
    // What a runner read just before the delete: its tick must still not fire afterwards.
    let stale = store.schedules().await.unwrap().remove(0);
    let deleted = store
        .delete_resource(manifest::Kind::Schedule, "nightly", None, None)
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    let now = clock.now().timestamp_millis();
    let job = batchctl_scheduler::submission::build_from_store(
        &store,
        &batchctl_scheduler::manifest::submit_request(&stale.target).unwrap(),
        None,
        now,
        "target.",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!store.fire_tick("nightly", now, &job, now).await.unwrap());
    assert!(!store
        .record_unfired_tick("nightly", now, FiringOutcome::Skipped, "late", now)
        .await
        .unwrap());
    clock.advance(Duration::seconds(600));
    runner(&store, &clock).run_once().await.unwrap();
    assert!(fired_jobs(&store).await.is_empty());
    assert!(store.last_firing("nightly").await.unwrap().is_none());
    // Deleting it again says it is gone.
    let again = store
        .delete_resource(manifest::Kind::Schedule, "nightly", None, None)
        .await
        .unwrap_err();
    assert!(
        again
            .to_string()
            .contains("Schedule \"nightly\" does not exist"),
        "{again}"
    );
}
