//! Flat under a backlog (issue 13, target 4): the same workload against two servers side by side,
//! one on an empty database and one holding `--waiting` jobs RUNNABLE in another queue (whose
//! compute environment is DISABLED) and `--finished` SUCCEEDED jobs in the measured queue's history.
//! `cargo bench -p batchctl --bench backlog -- [--database sqlite|postgres] [--runs 3] [--jobs 200]
//! [--waiting 1000000] [--finished 1000000]`; Postgres comes from BATCHCTL_BENCH_DATABASE_URL.
//!
//! The history is written straight into the stopped server's database through the store (1M jobs
//! through the process executor would take over an hour); the waiting jobs are ten arrays submitted
//! through the CLI, and the measurement starts once the dispatcher has admitted every child and,
//! on Postgres, autovacuum has processed the row versions that admission left dead (the wait is
//! printed: it is the backlog's one-time cost, measured separately from its steady state).
//!
//! Each run, first on the empty server and then on the full one:
//! - submits/s: `--jobs` `batchctl submit` processes from a shell loop;
//! - jobs/s: those jobs, from the first submit until the last stopped (process executor, 2 vCPUs);
//! - the wall time of one CLI process (median of 5) for `get jobs` with each filter, `describe job`
//!   and `why` of the deepest waiting child, and of one `GET /metrics`.
//!
//! Then the servers' resident memory, now and at its peak (which includes taking in the backlog). The last line is one JSON object.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use batchctl_scheduler::core::model::{DefinitionRef, JobId, JobStatus, QueueName};
use batchctl_scheduler::manifest::{build_job, SubmitContext, SubmitJobRequest};
use batchctl_scheduler::store::{now_millis, Store, StoreLocation};
use support::{
    argument, cores, database_argument, fresh_database, median, wait_for_all, Server, MANIFEST,
};

/// Arrays the waiting jobs are submitted as.
const ARRAYS: usize = 10;
/// Times each query is run; its figure is the median.
const QUERY_REPEATS: usize = 5;

struct Side {
    name: &'static str,
    server: Server,
    _dir: tempfile::TempDir,
    /// The deepest waiting array child, for `why`, and its parent, for `describe`.
    deepest_child: String,
    parent: String,
    runs: Vec<Run>,
}

#[derive(Default)]
struct Run {
    submits_per_second: f64,
    jobs_per_second: f64,
    /// Milliseconds per query.
    queries: BTreeMap<&'static str, f64>,
}

fn main() {
    let runs: usize = argument("--runs").unwrap_or(3);
    let jobs: usize = argument("--jobs").unwrap_or(200);
    let waiting: usize = argument("--waiting").unwrap_or(1_000_000);
    let finished: usize = argument("--finished").unwrap_or(1_000_000);
    let (database, postgres) = database_argument();
    println!(
        "machine: {} cores; database {database}; {jobs} jobs per run, {runs} runs; backlog: {waiting} waiting, {finished} finished",
        cores()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The empty side still has one small array waiting, so that `why` and `describe` have the
    // same kind of job to look at on both sides.
    let mut sides = [
        start_side("empty", postgres.as_deref(), 0, 10, &runtime),
        start_side("backlog", postgres.as_deref(), finished, waiting, &runtime),
    ];
    for run in 0..runs {
        for side in &mut sides {
            let figures = measure(side, run, jobs);
            println!(
                "run {run} {}: submits {:.0}/s, jobs {:.1}/s, queries (ms) {:?}",
                side.name, figures.submits_per_second, figures.jobs_per_second, figures.queries
            );
            side.runs.push(figures);
        }
    }
    let mut line = serde_json::json!({
        "bench": "backlog",
        "database": database,
        "jobs": jobs,
        "runs": runs,
        "waiting": waiting,
        "finished": finished,
        "cores": cores(),
    });
    for side in &sides {
        let pick =
            |f: &dyn Fn(&Run) -> f64| round(median(&side.runs.iter().map(f).collect::<Vec<_>>()));
        let mut queries = serde_json::Map::new();
        for name in side.runs[0].queries.keys() {
            queries.insert(name.to_string(), pick(&|run| run.queries[name]).into());
        }
        let slowest = queries
            .values()
            .filter_map(|v| v.as_f64())
            .fold(0.0, f64::max);
        let (rss, peak) = (
            memory_mib(side.server.pid(), "VmRSS:"),
            memory_mib(side.server.pid(), "VmHWM:"),
        );
        line[side.name] = serde_json::json!({
            "submits_per_second": pick(&|run| run.submits_per_second),
            "jobs_per_second": pick(&|run| run.jobs_per_second),
            "slowest_query_ms": slowest,
            "queries_ms": queries,
            "server_rss_mib": rss,
            "server_peak_rss_mib": peak,
        });
        println!(
            "{} median: submits {}/s, jobs {}/s, slowest query {slowest} ms, server RSS {rss} MiB (peak {peak} MiB)",
            side.name, line[side.name]["submits_per_second"], line[side.name]["jobs_per_second"]
        );
    }
    let ratio = |key: &str| {
        round(
            line["backlog"][key].as_f64().unwrap_or(0.0)
                / line["empty"][key].as_f64().unwrap_or(1.0),
        )
    };
    let (submits, jobs) = (ratio("submits_per_second"), ratio("jobs_per_second"));
    line["ratio_submits"] = submits.into();
    line["ratio_jobs"] = jobs.into();
    println!("{line}");
}

/// A server with `finished` SUCCEEDED jobs in queue `bench` and `waiting` array children admitted
/// in queue `backlog`.
fn start_side(
    name: &'static str,
    postgres: Option<&str>,
    finished: usize,
    waiting: usize,
    runtime: &tokio::runtime::Runtime,
) -> Side {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database_url = postgres.map(|url| fresh_database(url, name));
    let location = match &database_url {
        Some(url) => StoreLocation::Postgres { url: url.clone() },
        None => StoreLocation::Sqlite {
            path: dir.path().join("batchctl.db"),
        },
    };
    let server = Server::start(dir.path(), database_url.as_deref());
    server.apply(dir.path(), MANIFEST);
    let server = if finished > 0 {
        // The history goes in while no server holds the database.
        drop(server);
        let clock = Instant::now();
        runtime.block_on(write_history(&location, finished));
        println!(
            "{name}: {finished} finished jobs written in {:.1} s",
            clock.elapsed().as_secs_f64()
        );
        Server::start(dir.path(), database_url.as_deref())
    } else {
        server
    };
    let clock = Instant::now();
    let arrays = if waiting >= ARRAYS * 1000 { ARRAYS } else { 1 };
    let size = waiting / arrays;
    let mut parent = String::new();
    for _ in 0..arrays {
        let submitted = server.cli_json(&[
            "submit",
            "--queue",
            "backlog",
            "--definition",
            "trivial",
            "--name",
            "parked",
            "--array-size",
            &size.to_string(),
        ]);
        parent = submitted["jobId"].as_str().expect("jobId").to_string();
    }
    // Measure only once the dispatcher has admitted every child: the backlog then only waits.
    loop {
        let metrics = server.get("/metrics");
        let submitted = metrics.lines().any(|line| {
            line.starts_with("batchctl_queue_jobs{queue=\"backlog\",status=\"SUBMITTED\"}")
        });
        if !submitted {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{name}: {arrays} arrays of {size} submitted and admitted in {:.1} s",
        clock.elapsed().as_secs_f64()
    );
    if let Some(url) = &database_url {
        settle(name, url);
    }
    Side {
        name,
        server,
        _dir: dir,
        deepest_child: format!("{parent}:{}", size - 1),
        parent,
        runs: Vec::new(),
    }
}

/// Waits until Postgres's autovacuum has processed what admitting the backlog left behind (every
/// admitted child leaves its SUBMITTED row version dead): until then the server shares two cores
/// with a vacuum of a two-million-row table and reads past dead index entries, which is the
/// backlog's one-time cost, not its steady state. The wait is printed; BENCHMARKS.md reports it.
fn settle(name: &str, url: &str) {
    let clock = Instant::now();
    let query = "SELECT CASE WHEN (n_dead_tup < 10000 OR n_dead_tup * 10 < n_live_tup) \
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_vacuum WHERE datname = current_database()) \
                 THEN 'settled' ELSE 'busy' END FROM pg_stat_user_tables WHERE relname = 'jobs'";
    loop {
        let output = std::process::Command::new("psql")
            .args([url, "-At", "-c", query])
            .output()
            .expect("psql (from Debian's postgresql-client)");
        if String::from_utf8_lossy(&output.stdout).trim() == "settled" {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!(
        "{name}: waited {:.0} s for autovacuum to process the backlog's dead row versions",
        clock.elapsed().as_secs_f64()
    );
}

/// `n` SUCCEEDED jobs of queue `bench`, written through the store in batches.
async fn write_history(location: &StoreLocation, n: usize) {
    let store = Store::open(location).await.expect("open the store");
    let definition = store
        .job_definition(&DefinitionRef::parse("trivial").expect("reference"))
        .await
        .expect("read the definition")
        .expect("definition trivial")
        .definition;
    let queue = store
        .job_queue(&QueueName::try_from("bench".to_string()).expect("name"))
        .await
        .expect("read the queue")
        .expect("queue bench");
    let environments = store.compute_environments().await.expect("environments");
    let context = SubmitContext {
        definition: &definition,
        queue: &queue,
        environments: &environments,
    };
    let request = SubmitJobRequest {
        job_name: Some("history".into()),
        job_queue: "bench".into(),
        job_definition: "trivial".into(),
        ..SubmitJobRequest::default()
    };
    let mut written = 0;
    while written < n {
        let batch = (n - written).min(5_000);
        let now = now_millis();
        let jobs: Vec<_> = (0..batch)
            .map(|_| {
                let mut job = build_job(
                    &request,
                    &context,
                    JobId(uuid::Uuid::new_v4().to_string()),
                    None,
                    now,
                )
                .expect("a valid job");
                job.status = JobStatus::Succeeded;
                job
            })
            .collect();
        store.insert_jobs(&jobs).await.expect("insert history");
        written += batch;
    }
    store.close().await;
}

fn measure(side: &Side, run: usize, jobs: usize) -> Run {
    let server = &side.server;
    let name = format!("single-{run}");
    let started = now_millis();
    let (last, loop_seconds) = server.submit_loop("bench", jobs, &name);
    let submits_per_second = jobs as f64 / loop_seconds;
    let last_stop = wait_for_all(server, &last, &name, jobs);
    let jobs_per_second = jobs as f64 / ((last_stop - started) as f64 / 1000.0);

    let mut queries = BTreeMap::new();
    let cli_queries: [(&'static str, Vec<&str>); 9] = [
        ("get jobs", vec!["get", "jobs"]),
        (
            "get jobs --status SUCCEEDED",
            vec!["get", "jobs", "--status", "SUCCEEDED"],
        ),
        (
            "get jobs --status RUNNABLE",
            vec!["get", "jobs", "--status", "RUNNABLE"],
        ),
        (
            "get jobs --queue backlog",
            vec!["get", "jobs", "--queue", "backlog"],
        ),
        (
            "get jobs --queue bench --status SUCCEEDED",
            vec!["get", "jobs", "--queue", "bench", "--status", "SUCCEEDED"],
        ),
        // Not in the top-level indexes by status (migration 0034): read through jobs_by_status,
        // which also holds the million RUNNABLE jobs.
        (
            "get jobs --status RUNNING",
            vec!["get", "jobs", "--status", "RUNNING"],
        ),
        (
            "get jobs --queue bench --status STARTING",
            vec!["get", "jobs", "--queue", "bench", "--status", "STARTING"],
        ),
        (
            "describe job (array parent)",
            vec!["describe", "job", &side.parent],
        ),
        ("why (deepest child)", vec!["why", &side.deepest_child]),
    ];
    for (label, args) in cli_queries {
        let times: Vec<f64> = (0..QUERY_REPEATS)
            .map(|_| {
                let clock = Instant::now();
                assert!(server.cli(&args), "batchctl {args:?} failed");
                clock.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        queries.insert(label, median(&times));
    }
    let times: Vec<f64> = (0..QUERY_REPEATS)
        .map(|_| {
            let clock = Instant::now();
            server.get("/metrics");
            clock.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    queries.insert("GET /metrics", median(&times));
    Run {
        submits_per_second,
        jobs_per_second,
        queries,
    }
}

/// A memory figure of process `pid` from /proc (`VmRSS:` now, `VmHWM:` its peak), in MiB (0 if it
/// cannot be read).
fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| round(kib / 1024.0))
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
