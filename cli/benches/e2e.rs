//! Turnaround end to end: the real server, the real CLI and the process executor, as a user runs
//! them. `cargo bench -p batchctl --bench e2e -- [--runs 3] [--jobs 1000] [--waits 20]
//! [--database sqlite|postgres] [--peer slurm]`.
//!
//! Each run starts a fresh server (and, on Postgres, a fresh database) with a process compute
//! environment of 2 vCPUs, and measures:
//! - singles: `--jobs` trivial jobs (`true`, 1 vCPU, so 2 at once), one `batchctl submit` process
//!   per job from a shell loop; jobs/s from the first submit until the last job stopped, and submit
//!   processes/s of the loop;
//! - array: one array of `--jobs` such children, from submit until the last child stopped;
//! - wait: `--waits` times `batchctl submit --wait` of one trivial job, submit to exit (p50);
//! - the CLI alone: `--jobs` `batchctl submit` processes from a shell loop into a queue whose
//!   compute environment is DISABLED, so nothing runs beside them (processes/s).
//!
//! With `--peer slurm`, a running Slurm (`sinfo` answers; see BENCHMARKS.md for the set-up) runs
//! the same singles and array in the same run, with `sbatch`, and the loop alone with `sbatch -H`
//! (submitted held, then cancelled). The last line is one JSON object.

mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{
    argument, cores, database_argument, fresh_database, median, wait_for_all, Server, MANIFEST,
};

#[derive(Debug, Default, Clone, Copy)]
struct Run {
    singles_jobs_per_second: f64,
    submits_per_second: f64,
    /// The submit loop with nothing running beside it.
    submits_alone_per_second: f64,
    array_jobs_per_second: f64,
    /// `None` for Slurm, which has no `submit --wait` measured here.
    wait_p50_ms: Option<f64>,
}

fn main() {
    let runs: usize = argument("--runs").unwrap_or(3);
    let jobs: usize = argument("--jobs").unwrap_or(1000);
    let waits: usize = argument("--waits").unwrap_or(20);
    let (database, postgres) = database_argument();
    let peer: Option<String> = argument("--peer");
    println!(
        "machine: {} cores; {jobs} jobs per workload; {runs} runs; database {database}",
        cores()
    );
    let mut results = Vec::new();
    let mut slurm = Vec::new();
    for run in 0..runs {
        let result = batchctl_run(run, jobs, waits, postgres.as_deref());
        println!(
            "run {run}: batchctl singles {:.1} jobs/s (submit loop {:.0}/s; alone {:.0}/s), array {:.1} jobs/s, submit --wait p50 {:.1} ms",
            result.singles_jobs_per_second,
            result.submits_per_second,
            result.submits_alone_per_second,
            result.array_jobs_per_second,
            result.wait_p50_ms.unwrap_or_default()
        );
        results.push(result);
        if peer.as_deref() == Some("slurm") {
            let peer = slurm_run(jobs);
            println!(
                "run {run}: slurm singles {:.1} jobs/s (sbatch loop {:.0}/s; alone {:.0}/s), array {:.1} jobs/s",
                peer.singles_jobs_per_second,
                peer.submits_per_second,
                peer.submits_alone_per_second,
                peer.array_jobs_per_second
            );
            slurm.push(peer);
        }
    }
    let summary = |runs: &[Run]| {
        let pick = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let waits: Vec<f64> = runs.iter().filter_map(|r| r.wait_p50_ms).collect();
        let mut summary = serde_json::json!({
            "singles_jobs_per_second": round(pick(|r| r.singles_jobs_per_second)),
            "submits_per_second": round(pick(|r| r.submits_per_second)),
            "submits_alone_per_second": round(pick(|r| r.submits_alone_per_second)),
            "array_jobs_per_second": round(pick(|r| r.array_jobs_per_second)),
        });
        if !waits.is_empty() {
            summary["wait_p50_ms"] = round(median(&waits)).into();
        }
        summary
    };
    let mut line = serde_json::json!({
        "bench": "e2e",
        "database": database,
        "jobs": jobs,
        "runs": runs,
        "cores": cores(),
        "batchctl": summary(&results),
    });
    if !slurm.is_empty() {
        let peer = summary(&slurm);
        line["slurm"] = peer.clone();
        let ours = line["batchctl"].clone();
        let ratio = |key: &str| {
            round(ours[key].as_f64().unwrap_or(0.0) / peer[key].as_f64().unwrap_or(1.0))
        };
        line["ratio_singles"] = ratio("singles_jobs_per_second").into();
        line["ratio_array"] = ratio("array_jobs_per_second").into();
        line["ratio_submits_alone"] = ratio("submits_alone_per_second").into();
    }
    println!("{line}");
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn batchctl_run(run: usize, jobs: usize, waits: usize, postgres: Option<&str>) -> Run {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let database_url = postgres.map(|url| fresh_database(url, &run.to_string()));
    let server = Server::start(data_dir.path(), database_url.as_deref());
    server.apply(data_dir.path(), MANIFEST);
    // Warm the path once (page cache, the server's connections).
    assert!(server.submit_and_wait());
    let (_, alone_seconds) = server.submit_loop("backlog", jobs, "alone");
    let submits_alone_per_second = jobs as f64 / alone_seconds;

    let started = now_millis();
    let (last, loop_seconds) = server.submit_loop("bench", jobs, "single");
    let last_stop = wait_for_all(&server, &last, "single", jobs);
    let singles_jobs_per_second = jobs as f64 / ((last_stop - started) as f64 / 1000.0);
    let submits_per_second = jobs as f64 / loop_seconds;

    let started = now_millis();
    let parent = server.cli_json(&[
        "submit",
        "--queue",
        "bench",
        "--definition",
        "trivial",
        "--name",
        "array",
        "--array-size",
        &jobs.to_string(),
    ]);
    let parent_id = parent["jobId"].as_str().expect("jobId").to_string();
    let last_stop = loop {
        let job = server.cli_json(&["describe", "job", &parent_id]);
        match job["status"].as_str() {
            Some("SUCCEEDED") => break job["stoppedAt"].as_i64().expect("stoppedAt"),
            Some("FAILED") => panic!("the array failed: {job}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let array_jobs_per_second = jobs as f64 / ((last_stop - started) as f64 / 1000.0);

    let mut latencies = Vec::new();
    for _ in 0..waits {
        let clock = Instant::now();
        assert!(server.submit_and_wait());
        latencies.push(clock.elapsed().as_secs_f64() * 1000.0);
    }
    Run {
        singles_jobs_per_second,
        submits_per_second,
        submits_alone_per_second,
        array_jobs_per_second,
        wait_p50_ms: Some(median(&latencies)),
    }
}

/// The same workloads under Slurm: `sbatch` per job from a shell loop, then one array; finished
/// when `squeue` shows none of them (polled every 50 ms).
fn slurm_run(jobs: usize) -> Run {
    // The loop alone: held jobs (`-H`) never run; they are cancelled after.
    let started = Instant::now();
    let status = Command::new("sh")
        .args([
            "-c",
            "for i in $(seq \"$0\"); do sbatch -Q -H -c1 -o /dev/null -J alone --wrap true || exit 1; done",
        ])
        .arg(jobs.to_string())
        .status()
        .expect("sbatch (Debian's slurm-wlm)");
    assert!(status.success(), "sbatch -H loop failed");
    let alone_seconds = started.elapsed().as_secs_f64();
    let status = Command::new("scancel")
        .args(["-n", "alone"])
        .status()
        .expect("scancel");
    assert!(status.success(), "scancel failed");
    wait_for_slurm();

    let started = Instant::now();
    let status = Command::new("sh")
        .args([
            "-c",
            "for i in $(seq \"$0\"); do sbatch -Q -c1 -o /dev/null -J single --wrap true || exit 1; done",
        ])
        .arg(jobs.to_string())
        .status()
        .expect("sbatch (Debian's slurm-wlm)");
    assert!(status.success(), "sbatch loop failed");
    let loop_seconds = started.elapsed().as_secs_f64();
    wait_for_slurm();
    let singles = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let status = Command::new("sbatch")
        .args([
            "-Q",
            "-c1",
            "-o",
            "/dev/null",
            "-J",
            "array",
            "--wrap",
            "true",
        ])
        .arg(format!("--array=0-{}", jobs - 1))
        .status()
        .expect("sbatch");
    assert!(status.success(), "sbatch --array failed");
    wait_for_slurm();
    let array = started.elapsed().as_secs_f64();
    Run {
        singles_jobs_per_second: jobs as f64 / singles,
        submits_per_second: jobs as f64 / loop_seconds,
        submits_alone_per_second: jobs as f64 / alone_seconds,
        array_jobs_per_second: jobs as f64 / array,
        wait_p50_ms: None,
    }
}

fn wait_for_slurm() {
    loop {
        let output = Command::new("squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .expect("squeue");
        if output.status.success() && output.stdout.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
