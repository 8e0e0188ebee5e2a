//! Jobs churned through a short retention, against the same churn with nothing pruned, side by
//! side: the job rows and the database stay bounded, and the dispatch rate is what it is without
//! pruning. A bench binary, not a timed test: `cargo bench -p batchctl-scheduler --bench retention
//! -- [--jobs N] [--runs R] [--retention SECONDS] [--rate JOBS_PER_SECOND] [--only
//! sqlite|postgres]`. Without `--rate` jobs are submitted as fast as the dispatcher takes them
//! (saturation: the rate is the capacity); with it, at that offered rate, and the figure to compare
//! is how many jobs wait unfinished (by Little's law, their turnaround). Postgres comes from
//! BATCHCTL_TEST_DATABASE_URL. `RUST_LOG=batchctl_scheduler=debug` prints the pruner's timings
//! (each batch's steps, each pass's space given back) on stderr. Figures and method: BENCHMARKS.md.

use std::time::{Duration, Instant};

mod common;

use batchctl_scheduler::core::lifecycle::Retention;
use batchctl_scheduler::core::model::JobStatus;
use batchctl_scheduler::retention::prune_jobs_periodically;
use batchctl_scheduler::store::Store;
use batchctl_scheduler::submitter::Submitter;
use common::{fresh_store, make_jobs};
use tokio_util::sync::CancellationToken;

/// Jobs submitted per round, and the most left unfinished before the next round: a steady
/// load the dispatcher keeps up with, as a busy installation's.
const ROUND: usize = 5_000;
const MAX_UNFINISHED: i64 = 20_000;
const SUBMITTERS: usize = 32;

#[derive(Debug, Clone)]
struct Figures {
    jobs_per_second: f64,
    /// The most job rows seen over the second half of the run, and at its end.
    peak_rows_late: i64,
    rows_at_end: i64,
    /// Database size at the end (SQLite after a checkpoint), in MiB.
    mib_at_end: f64,
    /// How many jobs the pruner deleted.
    pruned: i64,
    /// Unfinished jobs, sampled before each round and every 5 ms while waiting, from the first
    /// submit to the last end: their mean and the most seen. Only at an offered rate (`--rate`)
    /// are the samples evenly spread; at saturation a round of 5,000 submits runs between two.
    mean_unfinished: f64,
    peak_unfinished: i64,
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let arguments = common::Arguments::from_env();
    let jobs: usize = arguments.number("--jobs", 500_000);
    let runs: usize = arguments.number("--runs", 3);
    let retention: u64 = arguments.number("--retention", 5);
    // Jobs offered a second; `None`: as fast as the dispatcher takes them (saturation).
    let rate: Option<u64> = arguments
        .value("--rate")
        .map(|_| arguments.number("--rate", 0));
    println!(
        "jobs per run: {jobs}, runs: {runs}, retention: {retention} s, offered: {}, cores: {}",
        rate.map_or("as fast as taken".to_string(), |rate| format!(
            "{rate} jobs/s"
        )),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut summary = serde_json::Map::new();
    for database in ["sqlite", "postgres"] {
        if arguments.skips(database) {
            continue;
        }
        let mut pruned_runs = Vec::new();
        let mut kept_runs = Vec::new();
        for run in 0..runs {
            // Both ways in each run, one after the other, so they share the machine's state.
            for prune in [true, false] {
                let Some((store, _dir)) = fresh_store(database).await else {
                    println!("{database}: skipped (BATCHCTL_TEST_DATABASE_URL is not set)");
                    break;
                };
                let figures = churn(
                    store,
                    jobs,
                    rate,
                    prune.then(|| Retention::uniform(retention)),
                )
                .await;
                println!(
                    "{database} run {run} {}: {:.0} jobs/s, unfinished mean {:.0} peak {}, rows late peak {} end {}, {:.1} MiB, pruned {}",
                    if prune { "pruned" } else { "kept  " },
                    figures.jobs_per_second,
                    figures.mean_unfinished,
                    figures.peak_unfinished,
                    figures.peak_rows_late,
                    figures.rows_at_end,
                    figures.mib_at_end,
                    figures.pruned
                );
                if prune {
                    pruned_runs.push(figures);
                } else {
                    kept_runs.push(figures);
                }
            }
        }
        if pruned_runs.is_empty() || kept_runs.is_empty() {
            continue;
        }
        let median = |runs: &[Figures], f: fn(&Figures) -> f64| common::median(runs.iter().map(f));
        let delivered = median(&pruned_runs, |f| f.jobs_per_second);
        let baseline = median(&kept_runs, |f| f.jobs_per_second);
        let rows = median(&pruned_runs, |f| f.peak_rows_late as f64);
        let kept_rows = median(&kept_runs, |f| f.rows_at_end as f64);
        let mib = median(&pruned_runs, |f| f.mib_at_end);
        let kept_mib = median(&kept_runs, |f| f.mib_at_end);
        let waiting = median(&pruned_runs, |f| f.mean_unfinished);
        let kept_waiting = median(&kept_runs, |f| f.mean_unfinished);
        println!(
            "{database} median: pruned {delivered:.0} jobs/s = {:.2}x nothing pruned ({baseline:.0}/s); unfinished on average {waiting:.0} (nothing pruned: {kept_waiting:.0}); rows over the second half at most {rows:.0} (nothing pruned: {kept_rows:.0} at the end); {mib:.1} MiB (nothing pruned: {kept_mib:.1} MiB)",
            delivered / baseline
        );
        summary.insert(
            database.to_string(),
            serde_json::json!({
                "jobs_per_second": delivered.round(),
                "nothing_pruned_jobs_per_second": baseline.round(),
                "rate_ratio": (delivered / baseline * 100.0).round() / 100.0,
                // Evenly sampled only at an offered rate (see `Figures`).
                "mean_unfinished": rate.map(|_| waiting.round()),
                "nothing_pruned_mean_unfinished": rate.map(|_| kept_waiting.round()),
                "peak_rows_second_half": rows,
                "nothing_pruned_rows": kept_rows,
                "mib_at_end": (mib * 10.0).round() / 10.0,
                "nothing_pruned_mib_at_end": (kept_mib * 10.0).round() / 10.0,
            }),
        );
    }
    summary.insert("bench".into(), "retention".into());
    summary.insert("jobs".into(), jobs.into());
    summary.insert("runs".into(), runs.into());
    summary.insert("retention_seconds".into(), retention.into());
    summary.insert("offered_jobs_per_second".into(), rate.into());
    println!("{}", serde_json::Value::Object(summary));
}

/// Jobs in the store (every status), and the unfinished ones among them, from the counters.
async fn rows(store: &Store) -> (i64, i64) {
    let counts = store.job_counts().await.unwrap();
    let all = counts.iter().map(|count| count.n).sum();
    let unfinished = counts
        .iter()
        .filter(|count| JobStatus::parse(&count.status).is_some_and(|s| !s.is_terminal()))
        .map(|count| count.n)
        .sum();
    (all, unfinished)
}

/// Submits `n` no-op jobs in rounds while the dispatcher runs them (and, with `retention`, the
/// server's pruning task deletes them): as fast as they are taken (no `rate`), or `rate` a second
/// in rounds of a twentieth of a second. Returns once all have finished.
async fn churn(store: Store, n: usize, rate: Option<u64>, retention: Option<Retention>) -> Figures {
    let cancel = CancellationToken::new();
    let (dispatcher, _fake) = common::noop_dispatcher(&store);
    let handle = dispatcher.handle();
    let dispatch_task = tokio::spawn(dispatcher.run(cancel.clone()));
    let prune_task = retention.map(|retention| {
        tokio::spawn(prune_jobs_periodically(
            store.clone(),
            retention,
            cancel.clone(),
        ))
    });
    let submitter = Submitter::start(store.clone(), handle, cancel.clone());

    let round_size = rate.map_or(ROUND, |rate| ROUND.min((rate as usize / 20).max(1)));
    let started = Instant::now();
    let mut submitted = 0;
    let mut peak_rows_late = 0;
    let mut unfinished_samples = Vec::new();
    while submitted < n {
        let (all, unfinished) = rows(&store).await;
        unfinished_samples.push(unfinished);
        if submitted >= n / 2 {
            peak_rows_late = peak_rows_late.max(all);
        }
        let due = rate.map_or(started, |rate| {
            started + Duration::from_secs_f64(submitted as f64 / rate as f64)
        });
        if unfinished > MAX_UNFINISHED || Instant::now() < due {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let round = round_size.min(n - submitted);
        let jobs = make_jobs(&store, round).await;
        let mut shares: Vec<Vec<_>> = (0..SUBMITTERS).map(|_| Vec::new()).collect();
        for (i, job) in jobs.into_iter().enumerate() {
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
        submitted += round;
    }
    loop {
        let (_, unfinished) = rows(&store).await;
        unfinished_samples.push(unfinished);
        if unfinished == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jobs_per_second = n as f64 / started.elapsed().as_secs_f64();
    let (rows_at_end, _) = rows(&store).await;
    peak_rows_late = peak_rows_late.max(rows_at_end);
    cancel.cancel();
    dispatch_task.await.unwrap().unwrap();
    if let Some(task) = prune_task {
        task.await.unwrap();
    }
    store.checkpoint().await.unwrap();
    let mib_at_end = store.database_bytes().await.unwrap() as f64 / (1024.0 * 1024.0);
    store.close().await;
    Figures {
        jobs_per_second,
        peak_rows_late,
        rows_at_end,
        mib_at_end,
        pruned: n as i64 - rows_at_end,
        mean_unfinished: unfinished_samples.iter().sum::<i64>() as f64
            / unfinished_samples.len() as f64,
        peak_unfinished: unfinished_samples.iter().copied().max().unwrap_or(0),
    }
}
