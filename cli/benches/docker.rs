//! batchctl's Docker executor against `docker run --rm`, side by side in one run, on the same image
//! and machine: `cargo bench -p batchctl --bench docker -- [--runs N] [--jobs N]`.
//! - single: wall time of `batchctl submit --wait` of a trivial container vs `docker run --rm`;
//! - batch: N trivial containers at concurrency 8 (the environment has 8 vCPUs, jobs take 1) vs N
//!   `docker run --rm` from 8 parallel workers.
//!
//! The image is built locally from Debian's busybox-static (no registry needed).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IMAGE: &str = "batchctl-test/busybox:latest";
const CONCURRENCY: usize = 8;

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        arguments
            .iter()
            .position(|a| a == name)
            .and_then(|i| arguments.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let runs: usize = value("--runs").unwrap_or(5);
    let jobs: usize = value("--jobs").unwrap_or(200);
    build_image();
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_batchctl"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env("BATCHCTL_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("batchctl server listening on ")
        .expect("server started")
        .to_string();
    let manifest = format!(
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {{name: bench}}\nspec: {{type: docker, maxVcpus: {CONCURRENCY}, maxMemoryMiB: 65536}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {{name: bench}}\nspec: {{priority: 1, computeEnvironmentOrder: [{{order: 1, computeEnvironment: bench}}]}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: trivial}}\nspec:\n  containerProperties: {{image: '{IMAGE}', command: ['true'], resourceRequirements: [{{type: VCPU, value: '1'}}, {{type: MEMORY, value: '64'}}]}}\n"
    );
    let path = data_dir.path().join("bench.yaml");
    std::fs::write(&path, manifest).unwrap();
    assert!(cli(&url, &["apply", "-f", path.to_str().unwrap()]));
    println!(
        "machine: {} cores; docker {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        docker_version()
    );

    // Warm both paths once (image layers in the page cache, server connections).
    assert!(cli(
        &url,
        &[
            "submit",
            "--queue",
            "bench",
            "--definition",
            "trivial",
            "--wait"
        ]
    ));
    assert!(docker_run());

    let mut batchctl_single = Vec::new();
    let mut docker_single = Vec::new();
    for _ in 0..runs {
        batchctl_single.push(time(|| {
            assert!(cli(
                &url,
                &[
                    "submit",
                    "--queue",
                    "bench",
                    "--definition",
                    "trivial",
                    "--wait"
                ]
            ))
        }));
        docker_single.push(time(|| assert!(docker_run())));
    }
    let (b, d) = (median(&mut batchctl_single), median(&mut docker_single));
    println!(
        "single trivial container, submit to exit: batchctl {:.0} ms, docker run --rm {:.0} ms, ratio {:.2} (goal <= 1.10)",
        b * 1000.0,
        d * 1000.0,
        b / d
    );

    if jobs == 0 {
        stop(server);
        return;
    }
    let batch_runs = runs.min(3);
    let mut batchctl_batch = Vec::new();
    let mut docker_batch = Vec::new();
    for _ in 0..batch_runs {
        batchctl_batch.push(time(|| batchctl_batch_run(&url, jobs)));
        docker_batch.push(time(|| parallel(jobs, || assert!(docker_run()))));
    }
    let (b, d) = (median(&mut batchctl_batch), median(&mut docker_batch));
    println!(
        "{jobs} trivial containers at concurrency {CONCURRENCY}: batchctl {:.2} s ({:.1}/s), docker run loop {:.2} s ({:.1}/s), throughput ratio {:.2} (goal >= 1.00)",
        b,
        jobs as f64 / b,
        d,
        jobs as f64 / d,
        d / b
    );
    stop(server);
}

fn stop(mut server: std::process::Child) {
    let _ = server.kill();
    let _ = server.wait();
}

fn cli(url: &str, args: &[&str]) -> bool {
    Command::new(env!("CARGO_BIN_EXE_batchctl"))
        .args(args)
        .env("BATCHCTL_SERVER", url)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
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

fn time(work: impl FnOnce()) -> f64 {
    let started = Instant::now();
    work();
    started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
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
