//! What the benches of the `batchctl` binary share: a real server, the real CLI, medians and the
//! JSON line each bench prints last.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the benches apply: queue `bench` on a process environment of 2 vCPUs, queue `backlog` on
/// a DISABLED environment (its jobs wait for ever), and the definition `trivial` (`true`, 1 vCPU).
pub const MANIFEST: &str = "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: bench}\n\
spec: {type: process, maxVcpus: 2, maxMemoryMiB: 4096}\n---\n\
apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: bench}\n\
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: bench}]}\n---\n\
apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: parked}\n\
spec: {type: process, state: DISABLED, maxVcpus: 2, maxMemoryMiB: 4096}\n---\n\
apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: backlog}\n\
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: parked}]}\n---\n\
apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: trivial}\n\
spec:\n  containerProperties: {image: none, command: ['true'], resourceRequirements: [{type: VCPU, value: '1'}, {type: MEMORY, value: '16'}]}\n";

/// A `batchctl server` on a free loopback port; killed when dropped.
pub struct Server {
    pub url: String,
    child: Child,
}

impl Server {
    /// Starts the real binary on `data_dir`, with `database_url` when given (else SQLite there).
    pub fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_batchctl"));
        command
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("BATCHCTL_LOG", "warn")
            .stdout(Stdio::piped());
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command.spawn().expect("start batchctl server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("server stdout"))
            .read_line(&mut line)
            .expect("server prints its address");
        let url = line
            .trim()
            .strip_prefix("batchctl server listening on ")
            .expect("server started")
            .to_string();
        Server { url, child }
    }

    /// Applies a manifest through `batchctl apply -f`.
    pub fn apply(&self, dir: &Path, manifest: &str) {
        let path = dir.join("bench.yaml");
        std::fs::write(&path, manifest).expect("write the bench manifest");
        assert!(
            self.cli(&["apply", "-f", path.to_str().expect("utf-8 path")]),
            "apply failed"
        );
    }

    /// Runs the CLI against this server; true if it exited 0.
    pub fn cli(&self, args: &[&str]) -> bool {
        self.cli_command(args)
            .stdout(Stdio::null())
            .status()
            .expect("run batchctl")
            .success()
    }

    /// `batchctl submit --wait` of the benches' definition `trivial` to their queue `bench`; true
    /// if the job SUCCEEDED.
    pub fn submit_and_wait(&self) -> bool {
        self.cli(&[
            "submit",
            "--queue",
            "bench",
            "--definition",
            "trivial",
            "--wait",
        ])
    }

    /// The CLI's standard output, parsed as JSON (`-o json` is added).
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let output = self
            .cli_command(args)
            .args(["-o", "json"])
            .output()
            .expect("run batchctl");
        assert!(output.status.success(), "batchctl {args:?} failed");
        serde_json::from_slice(&output.stdout).expect("JSON output")
    }

    /// `n` `batchctl submit` processes of `trivial` to `queue`, named `name`, from one shell loop
    /// (the last made here, to learn its id): that id and the loop's wall time in seconds.
    pub fn submit_loop(&self, queue: &str, n: usize, name: &str) -> (String, f64) {
        let clock = Instant::now();
        let status = Command::new("sh")
            .args([
                "-c",
                "for i in $(seq \"$1\"); do \"$0\" submit --queue \"$3\" --definition trivial --name \"$2\" >/dev/null || exit 1; done",
            ])
            .arg(env!("CARGO_BIN_EXE_batchctl"))
            .arg((n - 1).to_string())
            .arg(name)
            .arg(queue)
            .env("BATCHCTL_SERVER", &self.url)
            .status()
            .expect("sh");
        assert!(status.success(), "the submit loop failed");
        let last = self.cli_json(&[
            "submit",
            "--queue",
            queue,
            "--definition",
            "trivial",
            "--name",
            name,
        ]);
        let id = last["jobId"].as_str().expect("jobId").to_string();
        (id, clock.elapsed().as_secs_f64())
    }

    /// The server's process id (`batchctl server` execs the server binary, so it keeps the pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A plain HTTP/1.1 GET of `path`; the response body. Panics unless the status is 200.
    pub fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let address = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect to the server");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "GET {path}: {response}"
        );
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_batchctl"));
        command.args(args).env("BATCHCTL_SERVER", &self.url);
        command
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds `work` took.
pub fn time(work: impl FnOnce()) -> f64 {
    let started = Instant::now();
    work();
    started.elapsed().as_secs_f64()
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// `--name VALUE` from the command line.
pub fn argument<T: std::str::FromStr>(name: &str) -> Option<T> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|a| a == name)
        .and_then(|i| arguments.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// `--database sqlite|postgres` (default sqlite), and for Postgres the server's URL from
/// BATCHCTL_BENCH_DATABASE_URL.
pub fn database_argument() -> (String, Option<String>) {
    let database: String = argument("--database").unwrap_or_else(|| "sqlite".to_string());
    let postgres = match database.as_str() {
        "sqlite" => None,
        "postgres" => Some(std::env::var("BATCHCTL_BENCH_DATABASE_URL").expect(
            "--database postgres needs BATCHCTL_BENCH_DATABASE_URL (e.g. $(.ci/postgres))",
        )),
        other => panic!("--database {other}: use sqlite or postgres"),
    };
    (database, postgres)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// A new empty database on the server of `url`, named for this process and `tag`.
pub fn fresh_database(url: &str, tag: &str) -> String {
    let name = format!("bench_{}_{tag}", std::process::id());
    let status = Command::new("psql")
        .args([url, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .stdout(Stdio::null())
        .status()
        .expect("psql (from Debian's postgresql-client)");
    assert!(status.success(), "cannot create database {name}");
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("{url} names no database"),
    }
}

/// Waits until `count` jobs named `name` have SUCCEEDED; the latest `stoppedAt` among them.
/// Only the last submitted job is looked at while they run (a cheap read every 50 ms), so the
/// measurement does not load the server; the list is read once it has ended (two slots may end
/// in either order, so the list is read again until it holds them all).
pub fn wait_for_all(server: &Server, last: &str, name: &str, count: usize) -> i64 {
    while server.cli_json(&["describe", "job", last])["status"] != "SUCCEEDED" {
        std::thread::sleep(Duration::from_millis(50));
    }
    let limit = (count + 10).to_string();
    loop {
        let page = server.cli_json(&[
            "get",
            "jobs",
            "--queue",
            "bench",
            "--status",
            "SUCCEEDED",
            "--limit",
            &limit,
        ]);
        let stops: Vec<i64> = page["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|job| job["jobName"] == name)
            .filter_map(|job| job["stoppedAt"].as_i64())
            .collect();
        if stops.len() >= count {
            return stops.into_iter().max().unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
