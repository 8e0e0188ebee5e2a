//! batchctl's Docker executor against `docker run --rm`, side by side in one run, on the same image
//! and machine: `cargo bench -p batchctl --bench docker -- [--runs N] [--jobs N]`.
//! - single: wall time of `batchctl submit --wait` of a trivial container vs `docker run --rm`;
//! - batch: N trivial containers at concurrency 8 (the environment has 8 vCPUs, jobs take 1) vs N
//!   `docker run --rm` from 8 parallel workers.
//!
//! The image is built locally from Debian's busybox-static (no registry needed). The last line is
//! one JSON object.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{argument, median, time, Server};

const IMAGE: &str = "batchctl-test/busybox:latest";
const CONCURRENCY: usize = 8;

fn main() {
    let runs: usize = argument("--runs").unwrap_or(5);
    let jobs: usize = argument("--jobs").unwrap_or(200);
    build_image();
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path(), None);
    let url = server.url.clone();
    let manifest = format!(
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {{name: bench}}\nspec: {{type: docker, maxVcpus: {CONCURRENCY}, maxMemoryMiB: 65536}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {{name: bench}}\nspec: {{priority: 1, computeEnvironmentOrder: [{{order: 1, computeEnvironment: bench}}]}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: trivial}}\nspec:\n  containerProperties: {{image: '{IMAGE}', command: ['true'], resourceRequirements: [{{type: VCPU, value: '1'}}, {{type: MEMORY, value: '64'}}]}}\n"
    );
    server.apply(data_dir.path(), &manifest);
    println!(
        "machine: {} cores; docker {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        docker_version()
    );

    // Warm both paths once (image layers in the page cache, server connections).
    assert!(server.submit_and_wait());
    assert!(docker_run());

    let mut batchctl_single = Vec::new();
    let mut docker_single = Vec::new();
    for _ in 0..runs {
        batchctl_single.push(time(|| assert!(server.submit_and_wait())));
        docker_single.push(time(|| assert!(docker_run())));
    }
    let (b, d) = (median(&batchctl_single), median(&docker_single));
    println!(
        "single trivial container, submit to exit: batchctl {:.0} ms, docker run --rm {:.0} ms, ratio {:.2} (goal <= 1.10)",
        b * 1000.0,
        d * 1000.0,
        b / d
    );
    let mut line = serde_json::json!({
        "bench": "docker",
        "runs": runs,
        "single_batchctl_ms": (b * 1000.0).round(),
        "single_docker_run_ms": (d * 1000.0).round(),
        "single_ratio": (b / d * 100.0).round() / 100.0,
    });
    if jobs == 0 {
        println!("{line}");
        return;
    }
    let batch_runs = runs.min(3);
    let mut batchctl_batch = Vec::new();
    let mut docker_batch = Vec::new();
    for _ in 0..batch_runs {
        batchctl_batch.push(time(|| batchctl_batch_run(&url, jobs)));
        docker_batch.push(time(|| parallel(jobs, || assert!(docker_run()))));
    }
    let (b, d) = (median(&batchctl_batch), median(&docker_batch));
    println!(
        "{jobs} trivial containers at concurrency {CONCURRENCY}: batchctl {:.2} s ({:.1}/s), docker run loop {:.2} s ({:.1}/s), throughput ratio {:.2} (goal >= 1.00)",
        b,
        jobs as f64 / b,
        d,
        jobs as f64 / d,
        d / b
    );
    line["jobs"] = jobs.into();
    line["batch_batchctl_per_second"] = ((jobs as f64 / b * 10.0).round() / 10.0).into();
    line["batch_docker_run_per_second"] = ((jobs as f64 / d * 10.0).round() / 10.0).into();
    line["batch_throughput_ratio"] = ((d / b * 100.0).round() / 100.0).into();
    println!("{line}");
}

fn docker_run() -> bool {
    Command::new("docker")
        .args(["run", "--rm", IMAGE, "true"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Submits `jobs` over HTTP (8 clients, as the docker loop has 8 workers) and waits for all to end.
fn batchctl_batch_run(url: &str, jobs: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let body = serde_json::json!({"jobQueue": "bench", "jobDefinition": "trivial"});
        let submitted = Arc::new(AtomicUsize::new(0));
        let mut ids = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let (client, body, submitted, url) = (
                client.clone(),
                body.clone(),
                Arc::clone(&submitted),
                url.to_string(),
            );
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                while submitted.fetch_add(1, Ordering::Relaxed) < jobs {
                    let job: serde_json::Value = client
                        .post(format!("{url}/v1/jobs"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    ids.push(job["jobId"].as_str().unwrap().to_string());
                }
                ids
            }));
        }
        for task in tasks {
            ids.extend(task.await.unwrap());
        }
        for id in ids {
            loop {
                let job: serde_json::Value = client
                    .get(format!("{url}/v1/jobs/{id}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                match job["status"].as_str() {
                    Some("SUCCEEDED") => break,
                    Some("FAILED") => panic!("a benchmark job failed: {job}"),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    });
}

fn parallel(jobs: usize, work: impl Fn() + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENCY {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < jobs {
                    work();
                }
            });
        }
    });
}

fn docker_version() -> String {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn build_image() {
    let script = format!(
        "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/tmp; cp /bin/busybox $d/bin/busybox; \
         cd $d/bin; for a in $(./busybox --list); do [ \"$a\" = busybox ] || ln -s busybox $a; done; \
         tar -C $d -c . | docker import - {IMAGE} >/dev/null; rm -rf $d"
    );
    assert!(
        Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success(),
        "cannot build {IMAGE}"
    );
}
