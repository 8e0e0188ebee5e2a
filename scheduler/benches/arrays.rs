//! Array jobs: how long submitting one array of N children takes (the acknowledged commit), against
//! submitting N single jobs through the same group-committing submitter, and how fast the
//! children then run to SUCCEEDED on a no-op executor. A bench binary, not a timed test:
//! `cargo bench -p batchctl-scheduler --bench arrays -- [--size N] [--runs R] [--only sqlite|postgres]`.
//! Figures and method: BENCHMARKS.md.

mod common;

use std::time::{Duration, Instant};

use batchctl_scheduler::core::model::JobStatus;
use batchctl_scheduler::dispatcher::DispatcherHandle;
use batchctl_scheduler::manifest::{ArrayPropertiesSpec, SubmitJobRequest};
use batchctl_scheduler::store::Store;
use batchctl_scheduler::submitter::Submitter;
use common::{fresh_store, make_jobs, make_jobs_from};
use tokio_util::sync::CancellationToken;

/// Concurrent submitters for the baseline, as many HTTP clients would be.
const SUBMITTERS: usize = 64;

struct Figures {
    array_submit_seconds: f64,
    singles_submit_seconds: f64,
    children_per_second: f64,
}

#[tokio::main]
async fn main() {
    let arguments = common::Arguments::from_env();
    let size: u32 = arguments.number("--size", 100_000);
    let runs: usize = arguments.number("--runs", 3);
    println!(
        "array size: {size}, runs: {runs}, cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut summary = serde_json::Map::new();
    for database in ["sqlite", "postgres"] {
        if arguments.skips(database) {
            continue;
        }
        let mut figures = Vec::new();
        for run in 0..runs {
            let Some((store, _dir)) = fresh_store(database).await else {
                println!("{database}: skipped (BATCHCTL_TEST_DATABASE_URL is not set)");
                break;
            };
            let result = run_once(store, size).await;
            println!(
                "{database} run {run}: one array of {size}: {:.3} s; {size} single jobs: {:.3} s; children run at {:.0}/s",
                result.array_submit_seconds, result.singles_submit_seconds, result.children_per_second
            );
            figures.push(result);
        }
        if figures.is_empty() {
            continue;
        }
        let median = |f: fn(&Figures) -> f64| common::median(figures.iter().map(f));
        let array = median(|f| f.array_submit_seconds);
        let singles = median(|f| f.singles_submit_seconds);
        println!(
            "{database} median: array submit {array:.3} s ({:.2}x the 2 s target, {:.1}x faster than {size} single submits at {singles:.3} s); children run at {:.0}/s",
            array / 2.0,
            singles / array,
            median(|f| f.children_per_second)
        );
        summary.insert(
            database.to_string(),
            serde_json::json!({
                "array_submit_seconds": array,
                "single_submits_seconds": singles,
                "children_per_second": median(|f| f.children_per_second).round(),
            }),
        );
    }
    summary.insert("bench".into(), "arrays".into());
    summary.insert("size".into(), size.into());
    summary.insert("runs".into(), runs.into());
    println!("{}", serde_json::Value::Object(summary));
}

async fn run_once(store: Store, size: u32) -> Figures {
    let cancel = CancellationToken::new();
    let submitter = Submitter::start(store.clone(), DispatcherHandle::default(), cancel.clone());

    // Baseline: the same number of jobs as single submits, concurrently, group-committed.
    let singles = make_jobs(&store, size as usize).await;
    // As a submit stores them (RUNNABLE: they have nothing to wait for).
    let stored_as = singles[0].status;
    let started = Instant::now();
    let mut shares: Vec<Vec<_>> = (0..SUBMITTERS).map(|_| Vec::new()).collect();
    for (i, job) in singles.into_iter().enumerate() {
        shares[i % SUBMITTERS].push(job);
    }
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let submitter = submitter.clone();
            tokio::spawn(async move {
                for job in share {
                    submitter.submit(job).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let singles_submit_seconds = started.elapsed().as_secs_f64();
    // The singles are not part of the run below.
    store
        .advance_oldest(stored_as, JobStatus::Failed, u32::MAX, 0)
        .await
        .unwrap();

    let request = SubmitJobRequest {
        job_queue: "bench".into(),
        job_definition: "noop".into(),
        array_properties: Some(ArrayPropertiesSpec {
            size,
            success_policy: None,
            max_concurrency: None,
        }),
        ..SubmitJobRequest::default()
    };
    let array = make_jobs_from(&store, &request, 1).await.remove(0);
    let parent = array.job_id.clone();
    let started = Instant::now();
    submitter.submit(array).await.unwrap();
    let array_submit_seconds = started.elapsed().as_secs_f64();

    let (dispatcher, _fake) = common::noop_dispatcher(&store);
    let handle = dispatcher.handle();
    let started = Instant::now();
    let dispatch_cancel = cancel.clone();
    let task = tokio::spawn(async move { dispatcher.run(dispatch_cancel).await.unwrap() });
    handle.notify_work();
    loop {
        let job = store.job(&parent).await.unwrap().unwrap();
        if job.status == JobStatus::Succeeded {
            break;
        }
        assert_ne!(job.status, JobStatus::Failed, "{job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let children_per_second = f64::from(size) / started.elapsed().as_secs_f64();
    cancel.cancel();
    task.await.unwrap();
    store.close().await;
    Figures {
        array_submit_seconds,
        singles_submit_seconds,
        children_per_second,
    }
}
