//! Schedule lateness: how long after its instant a tick's job is committed. 200 one-off `at(…)`
//! schedules due over a few seconds, fired by the real runner on the system clock; side by side
//! with a baseline loop that looks every second, as many cron daemons do. A bench binary, not a
//! timed test: `cargo bench -p batchctl-scheduler --bench schedules -- [--runs R] [--only sqlite|postgres]`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use batchctl_scheduler::dispatcher::DispatcherHandle;
use batchctl_scheduler::schedules::{ScheduleRunner, SystemClock};
use batchctl_scheduler::store::Store;
use chrono::{DurationRound, Utc};
use common::fresh_store;
use tokio_util::sync::CancellationToken;

const SCHEDULES: usize = 200;
const SECONDS: i64 = 5;

#[tokio::main]
async fn main() {
    let arguments = common::Arguments::from_env();
    let runs: usize = arguments.number("--runs", 3);
    println!("{SCHEDULES} schedules due over {SECONDS} s, runs: {runs}");
    let mut summary = serde_json::Map::new();
    for database in ["sqlite", "postgres"] {
        if arguments.skips(database) {
            continue;
        }
        let mut runner_p99 = Vec::new();
        let mut baseline_p99 = Vec::new();
        for run in 0..runs {
            let Some((store, _dir)) = fresh_store(database).await else {
                println!("{database}: skipped (BATCHCTL_TEST_DATABASE_URL is not set)");
                break;
            };
            let (p50, p99) = lateness(&store, Loop::Runner).await;
            let (b50, b99) = lateness(&store, Loop::PollEverySecond).await;
            println!("{database} run {run}: runner p50 {p50} ms p99 {p99} ms; poll-every-second baseline p50 {b50} ms p99 {b99} ms");
            runner_p99.push(p99);
            baseline_p99.push(b99);
            store.close().await;
        }
        if runner_p99.is_empty() {
            continue;
        }
        runner_p99.sort();
        baseline_p99.sort();
        let (runner, baseline) = (
            runner_p99[runner_p99.len() / 2],
            baseline_p99[baseline_p99.len() / 2],
        );
        println!(
            "{database} median p99 lateness: runner {runner} ms ({:.2}x the 50 ms target); baseline {baseline} ms ({:.1}x the runner)",
            runner as f64 / 50.0,
            baseline as f64 / runner.max(1) as f64
        );
        summary.insert(
            database.to_string(),
            serde_json::json!({
                "runner_p99_lateness_ms": runner,
                "poll_every_second_p99_lateness_ms": baseline,
            }),
        );
    }
    summary.insert("bench".into(), "schedules".into());
    summary.insert("schedules".into(), SCHEDULES.into());
    summary.insert("runs".into(), runs.into());
    println!("{}", serde_json::Value::Object(summary));
}

#[derive(Clone, Copy)]
enum Loop {
    /// The server's runner: sleeps until the next tick.
    Runner,
    /// Looks once a second.
    PollEverySecond,
}

/// Applies SCHEDULES one-off schedules due over the next seconds, fires them with the given loop,
/// and returns the p50 and p99 of (job committed − scheduled time) in milliseconds.
async fn lateness(store: &Store, how: Loop) -> (i64, i64) {
    let prefix = match how {
        Loop::Runner => "runner",
        Loop::PollEverySecond => "baseline",
    };
    let first = (Utc::now() + chrono::Duration::seconds(2))
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let mut text = String::new();
    for i in 0..SCHEDULES {
        let at = first + chrono::Duration::seconds(i as i64 % SECONDS);
        text.push_str(&format!(
            "---\napiVersion: batchctl/v1\nkind: Schedule\nmetadata: {{name: {prefix}-{i}}}\nspec:\n  scheduleExpression: 'at({})'\n  target: {{jobQueue: bench, jobDefinition: noop}}\n",
            at.format("%Y-%m-%dT%H:%M:%S")
        ));
    }
    common::apply_text(store, &text).await;
    let runner = Arc::new(ScheduleRunner::new(
        store.clone(),
        DispatcherHandle::default(),
        Arc::new(SystemClock),
    ));
    let cancel = CancellationToken::new();
    let task = match how {
        Loop::Runner => tokio::spawn(Arc::clone(&runner).run(cancel.clone())),
        Loop::PollEverySecond => {
            let runner = Arc::clone(&runner);
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        _ = interval.tick() => { let _ = runner.run_once().await; }
                    }
                }
            })
        }
    };
    let deadline = first + chrono::Duration::seconds(SECONDS + 3);
    while Utc::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    task.await.unwrap();
    let mut late = Vec::new();
    for stored in store.schedules().await.unwrap() {
        if !stored.schedule.name.starts_with(prefix) {
            continue;
        }
        let firing = store
            .last_firing(&stored.schedule.name)
            .await
            .unwrap()
            .expect("fired");
        let job = store
            .job(firing.job_id.as_ref().expect("a job"))
            .await
            .unwrap()
            .unwrap();
        late.push(job.created_at - firing.scheduled_time);
    }
    assert_eq!(late.len(), SCHEDULES, "every schedule fired");
    late.sort();
    (late[late.len() / 2], late[late.len() * 99 / 100])
}
