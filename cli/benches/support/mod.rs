//! What the benches of the `batchctl` binary share: a real server, the real CLI, medians and the
//! JSON line each bench prints last.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

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

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
