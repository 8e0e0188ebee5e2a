//! Submit rate, dispatch rate and submit-to-start latency with a no-op executor, on SQLite and
//! Postgres. A bench binary, not a timed test: `cargo bench -p batchctl-scheduler --bench throughput
//! -- [--jobs N] [--runs R] [--only sqlite|postgres] [--job-events] [--fenced]
//! [--max-running-jobs N] [--throttles] [--peer pgqueuer [--peer-processes P]]`. Postgres comes
//! from BATCHCTL_TEST_DATABASE_URL (see .ci/postgres). Figures and method: BENCHMARKS.md.
//!
//! With `--peer pgqueuer`, each Postgres run is followed by one of PgQueuer 1.6 on the same
//! database server (`benches/peers/pgqueuer_drain.py`: the same number of no-op jobs enqueued,
//! then drained with dequeue batches of 100 by P worker processes, 2 by default), and the last
//! line holds both medians and their ratio: issue 13's target 5 is measured against PgQueuer
//! in the same run, not against a figure from another machine.

use std::time::{Duration, Instant};

mod common;

use batchctl_scheduler::core::model::{Job, JobStatus};
use batchctl_scheduler::dispatcher::DispatcherHandle;
use batchctl_scheduler::store::{now_millis, Fence, Store};
use batchctl_scheduler::submitter::Submitter;
use common::{fresh_store, make_jobs};
use tokio_util::sync::CancellationToken;

/// Concurrent submitters, as many HTTP clients would be.
const SUBMITTERS: usize = 64;
const LATENCY_SAMPLES: usize = 200;

struct Figures {
    submit_per_second: f64,
    baseline_submit_per_second: f64,
    dispatch_per_second: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
}

#[tokio::main]
async fn main() {
    let arguments = common::Arguments::from_env();
    let jobs: usize = arguments.number("--jobs", 20_000);
    let runs: usize = arguments.number("--runs", 3);
    // With an event rule on job state changes, every transition also puts an event on the bus.
    let job_events = arguments.flag("--job-events");
    // On Postgres, dispatch as a leader does: every job-moving transaction checks the lease term.
    let fenced = arguments.flag("--fenced");
    // With a queue cap, placement counts the queue's running attempts and bounds its slots.
    let max_running_jobs: usize = arguments.number("--max-running-jobs", 0);
    // With a concurrency limit and a consumable resource configured (neither binding), placement
    // keys, counts and books every job.
    let throttles = arguments.flag("--throttles");
    let peer = arguments.value("--peer");
    if let Some(other) = peer.as_deref().filter(|peer| *peer != "pgqueuer") {
        panic!("--peer takes pgqueuer, not {other}");
    }
    let peer_processes: usize = arguments.number("--peer-processes", 2);
    let mut pgqueuer = Vec::new();
    println!(
        "jobs per run: {jobs}, runs: {runs}, submitters: {SUBMITTERS}, cores: {}",
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
            if job_events {
                common::listen_to_job_events(&store).await;
            }
            if max_running_jobs > 0 {
                common::cap_queue(&store, max_running_jobs as u64).await;
            }
            if throttles {
                common::throttle_without_binding(&store).await;
            }
            let store = match (fenced, database) {
                (true, "postgres") => {
                    let ttl = Duration::from_secs(3600);
                    let term = store
                        .try_acquire_lease("bench", ttl)
                        .await
                        .unwrap()
                        .unwrap();
                    store.fenced(Fence {
                        holder: "bench".into(),
                        term,
                    })
                }
                _ => store,
            };
            let result = run_once(store, jobs).await;
            println!(
                "{database} run {run}: submit {:.0}/s (one commit per job: {:.0}/s), dispatch {:.0}/s, submit-to-start p50 {:.1} ms p99 {:.1} ms",
                result.submit_per_second, result.baseline_submit_per_second, result.dispatch_per_second, result.latency_p50_ms, result.latency_p99_ms
            );
            figures.push(result);
            if database == "postgres" && peer.is_some() {
                let peer = pgqueuer_run(jobs, peer_processes);
                println!(
                    "pgqueuer run {run}: enqueue {:.0}/s, drain {:.0}/s",
                    peer.enqueue_per_second, peer.drain_per_second
                );
                pgqueuer.push(peer);
            }
        }
        if figures.is_empty() {
            continue;
        }
        let median = |f: fn(&Figures) -> f64| common::median(figures.iter().map(f));
        let (submit, baseline) = (
            median(|f| f.submit_per_second),
            median(|f| f.baseline_submit_per_second),
        );
        let dispatch = median(|f| f.dispatch_per_second);
        println!(
            "{database} median: submit {submit:.0}/s = {:.1}x one-commit-per-job ({baseline:.0}/s); dispatch {dispatch:.0}/s = {:.2}x the 10,000/s target; submit-to-start p50 {:.1} ms, p99 {:.1} ms",
            submit / baseline,
            dispatch / 10_000.0,
            median(|f| f.latency_p50_ms),
            median(|f| f.latency_p99_ms)
        );
        summary.insert(
            database.to_string(),
            serde_json::json!({
                "submit_per_second": submit.round(),
                "one_commit_per_job_submit_per_second": baseline.round(),
                "dispatch_per_second": dispatch.round(),
                "submit_to_start_p50_ms": median(|f| f.latency_p50_ms),
                "submit_to_start_p99_ms": median(|f| f.latency_p99_ms),
            }),
        );
    }
    if !pgqueuer.is_empty() {
        let drain = common::median(pgqueuer.iter().map(|p| p.drain_per_second));
        // A peer runs only after a Postgres run, whose median is in the summary.
        let ours = summary["postgres"]["dispatch_per_second"]
            .as_f64()
            .expect("the Postgres runs' median");
        println!(
            "pgqueuer median: drain {drain:.0}/s; batchctl's Postgres dispatch is {:.2}x it",
            ours / drain
        );
        summary.insert(
            "pgqueuer".into(),
            serde_json::json!({
                "enqueue_per_second": common::median(pgqueuer.iter().map(|p| p.enqueue_per_second)).round(),
                "drain_per_second": drain.round(),
                "processes": peer_processes,
                "batch_size": pgqueuer[0].batch_size as u64,
                "postgres_dispatch_over_pgqueuer_drain": (ours / drain * 100.0).round() / 100.0,
            }),
        );
    }
    summary.insert("bench".into(), "throughput".into());
    summary.insert("jobs".into(), jobs.into());
    summary.insert("runs".into(), runs.into());
    summary.insert("max_running_jobs".into(), max_running_jobs.into());
    summary.insert("throttles".into(), throttles.into());
    println!("{}", serde_json::Value::Object(summary));
}

struct PeerFigures {
    batch_size: f64,
    enqueue_per_second: f64,
    drain_per_second: f64,
}

/// One PgQueuer run on the Postgres server of BATCHCTL_TEST_DATABASE_URL (a database of its own,
/// dropped after). Panics when Python or PgQueuer is missing: a peer asked for is not skipped.
fn pgqueuer_run(jobs: usize, processes: usize) -> PeerFigures {
    let url = std::env::var("BATCHCTL_TEST_DATABASE_URL")
        .expect("--peer pgqueuer runs on BATCHCTL_TEST_DATABASE_URL's server");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/peers/pgqueuer_drain.py"
    );
    let output = std::process::Command::new("python3")
        .args([script, "--dsn", &url, "--jobs", &jobs.to_string()])
        .args(["--processes", &processes.to_string()])
        .output()
        .expect("python3 runs the PgQueuer peer");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the PgQueuer peer failed (pip install pgqueuer==1.6.0 asyncpg):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("the PgQueuer peer printed no JSON line: {stdout}"));
    let figure = |key: &str| {
        line[key]
            .as_f64()
            .unwrap_or_else(|| panic!("the PgQueuer peer's line lacks {key}: {line}"))
    };
    PeerFigures {
        batch_size: figure("batch_size"),
        enqueue_per_second: figure("enqueue_per_second"),
        drain_per_second: figure("drain_per_second"),
    }
}

/// Submits `jobs` from SUBMITTERS concurrent tasks through `submit`; returns jobs per second.
async fn submit_concurrently<F, Fut>(jobs: Vec<Job>, submit: F) -> f64
where
    F: Fn(Job) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let n = jobs.len();
    let mut shares: Vec<Vec<Job>> = (0..SUBMITTERS).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        shares[i % SUBMITTERS].push(job);
    }
    let started = Instant::now();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let submit = submit.clone();
            tokio::spawn(async move {
                for job in share {
                    submit(job).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn run_once(store: Store, n: usize) -> Figures {
    // Baseline: every submit its own transaction, as a store without group commit would do it.
    let baseline_jobs = make_jobs(&store, n / 4).await;
    // As a submit stores them (RUNNABLE: they have nothing to wait for).
    let stored_as = baseline_jobs[0].status;
    let baseline_store = store.clone();
    let baseline_submit_per_second = submit_concurrently(baseline_jobs, move |job| {
        let store = baseline_store.clone();
        async move {
            store.insert_jobs(&[job]).await.unwrap();
        }
    })
    .await;
    // Those jobs are not part of the dispatch measurement.
    store
        .advance_oldest(stored_as, JobStatus::Failed, u32::MAX, now_millis())
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let submitter = Submitter::start(store.clone(), DispatcherHandle::default(), cancel.clone());
    let jobs = make_jobs(&store, n).await;
    let group_submitter = submitter.clone();
    let submit_per_second = submit_concurrently(jobs, move |job| {
        let submitter = group_submitter.clone();
        async move {
            submitter.submit(job).await.unwrap();
        }
    })
    .await;

    // Dispatch: everything submitted above, as stored (RUNNABLE) to SUCCEEDED on the no-op
    // executor.
    let (dispatcher, fake) = common::noop_dispatcher(&store);
    let handle = dispatcher.handle();
    let started = Instant::now();
    let dispatch_cancel = cancel.clone();
    let dispatch_task = tokio::spawn(async move { dispatcher.run(dispatch_cancel).await.unwrap() });
    handle.notify_work();
    // Watched through the counters `/metrics` reads: counting SUCCEEDED rows every 20 ms cost
    // Postgres 1.1 ms a call, about 5% of its time during the dispatch measured here.
    let succeeded = |store: Store| async move {
        store
            .job_counts()
            .await
            .unwrap()
            .iter()
            .filter(|count| count.status == JobStatus::Succeeded.as_str())
            .map(|count| count.n)
            .sum::<i64>()
    };
    while succeeded(store.clone()).await < n as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dispatch_per_second = n as f64 / started.elapsed().as_secs_f64();

    // Latency: single submits into an idle dispatcher, from acknowledgement to the executor start.
    let submitter = Submitter::start(store.clone(), handle.clone(), cancel.clone());
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for job in make_jobs(&store, LATENCY_SAMPLES).await {
        let job_id = job.job_id.clone();
        let acknowledged = Instant::now();
        let before = fake.started_count();
        submitter.submit(job).await.unwrap();
        while fake.started_count() == before {
            tokio::task::yield_now().await;
        }
        latencies.push(acknowledged.elapsed().as_secs_f64() * 1000.0);
        while store.job(&job_id).await.unwrap().unwrap().status != JobStatus::Succeeded {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cancel.cancel();
    dispatch_task.await.unwrap();
    store.close().await;
    Figures {
        submit_per_second,
        baseline_submit_per_second,
        dispatch_per_second,
        latency_p50_ms: latencies[latencies.len() / 2],
        latency_p99_ms: latencies[latencies.len() * 99 / 100],
    }
}
