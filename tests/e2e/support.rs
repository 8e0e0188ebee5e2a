//! Driving the real `batchctl` binary: a server on a temporary data directory and a free port, and
//! CLI invocations against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BINARY: &str = env!("CARGO_BIN_EXE_batchctl");

pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub struct Server {
    pub data_dir: PathBuf,
    /// Where the server's standard error goes.
    log_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub url: String,
    database_url: Option<String>,
    /// More `batchctl server` arguments, kept across restarts.
    pub extra_arguments: Vec<String>,
    /// The token the CLI sends (BATCHCTL_TOKEN), if any.
    pub token: Option<String>,
    /// Whether process jobs run as root when the tests do (see `restart`).
    process_jobs_as_root: bool,
    /// Whether the server gets a secret key (`secret.key` in the data directory, made once) unless
    /// the test names one itself.
    pub secret_key: bool,
    child: Option<Child>,
}

impl Server {
    /// Starts a server on a new temporary data directory (SQLite, or Postgres when given a URL).
    pub fn start(database_url: Option<String>) -> Server {
        Server::start_with(database_url, &[])
    }

    /// As `start`, with more `batchctl server` arguments.
    pub fn start_with(database_url: Option<String>, extra_arguments: &[String]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start_in(
            dir.path().to_path_buf(),
            dir.path().join("server.log"),
            database_url,
            extra_arguments,
        );
        server._dir = Some(dir);
        server
    }

    /// As `start_with`, on a data directory the caller owns (a small filesystem, say), logging to
    /// `log_path`.
    pub fn start_in(
        data_dir: PathBuf,
        log_path: PathBuf,
        database_url: Option<String>,
        extra_arguments: &[String],
    ) -> Server {
        let mut server = Server {
            process_jobs_as_root: true,
            data_dir,
            log_path,
            _dir: None,
            url: String::new(),
            database_url,
            extra_arguments: extra_arguments.to_vec(),
            token: None,
            secret_key: true,
            child: None,
        };
        server.restart();
        server
    }

    /// As `start_with`, with the server's own default for who process jobs run as.
    pub fn start_with_default_process_user(extra_arguments: &[String]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server {
            process_jobs_as_root: false,
            data_dir: dir.path().to_path_buf(),
            log_path: dir.path().join("server.log"),
            _dir: Some(dir),
            url: String::new(),
            database_url: None,
            extra_arguments: extra_arguments.to_vec(),
            token: None,
            secret_key: true,
            child: None,
        };
        server.restart();
        server
    }

    /// Whether the server process still runs (it has not exited by itself).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Starts the server process again on the same data directory and database.
    pub fn restart(&mut self) {
        let mut command = Command::new(BINARY);
        command
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--kill-grace-seconds",
                "2",
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .env("BATCHCTL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log_path)
                    .unwrap(),
            ));
        if let Some(url) = &self.database_url {
            command.args(["--database-url", url]);
        }
        // As root, process jobs would run as nobody, who cannot write the tests' temporary
        // directories: the suite names root explicitly, as an operator would have to
        // (security.rs checks the default).
        if self.process_jobs_as_root
            && is_root()
            && !self.extra_arguments.iter().any(|a| a == "--process-user")
        {
            command.args(["--process-user", "0:0"]);
            // Process jobs get working directories under the temporary directory; kept inside
            // the data directory, they go with it when the test ends, even after a kill -9.
            let work = self.data_dir.join("tmp");
            std::fs::create_dir_all(&work).unwrap();
            command.env("TMPDIR", work);
        }
        if self.secret_key
            && !self
                .extra_arguments
                .iter()
                .any(|a| a == "--secret-key-file")
        {
            command.arg("--secret-key-file").arg(self.secret_key_file());
        }
        command.args(&self.extra_arguments);
        let mut child = command.spawn().unwrap();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let url = first_line
            .trim()
            .strip_prefix("batchctl server listening on ")
            .unwrap_or_else(|| panic!("server did not start: {first_line:?}; log: {}", self.log()));
        self.url = url.to_string();
        self.child = Some(child);
    }

    /// The key the server is given by default: 32 random bytes in base64, made at first use.
    pub fn secret_key_file(&self) -> PathBuf {
        let path = self.data_dir.join("secret.key");
        if !path.exists() {
            let made = Command::new("sh")
                .arg("-c")
                .arg("umask 077; head -c 32 /dev/urandom | base64 > \"$1\"")
                .arg("sh")
                .arg(&path)
                .status()
                .unwrap();
            assert!(made.success());
        }
        path
    }

    /// As `start`, with no secret key: the server refuses to store secrets.
    pub fn start_without_secret_key(database_url: Option<String>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server {
            process_jobs_as_root: true,
            data_dir: dir.path().to_path_buf(),
            log_path: dir.path().join("server.log"),
            _dir: Some(dir),
            url: String::new(),
            database_url,
            extra_arguments: Vec::new(),
            token: None,
            secret_key: false,
            child: None,
        };
        server.restart();
        server
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits up to `seconds` for the server process to exit by itself.
    pub fn wait_exit(&mut self, seconds: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs `batchctl ARGS` against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env("BATCHCTL_SERVER", &self.url)
            .env_remove("BATCHCTL_TOKEN")
            .current_dir(repository_root());
        if let Some(token) = &self.token {
            command.env("BATCHCTL_TOKEN", token);
        }
        command.output().unwrap()
    }

    /// Runs `batchctl ARGS -o json`, asserting success, and parses what it printed.
    pub fn json(&self, args: &[&str]) -> Value {
        // Global flags go first: after `--` they would be part of a submitted command.
        let mut args = args.to_vec();
        args.splice(0..0, ["-o", "json"]);
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "batchctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Runs `batchctl ARGS`, asserting that it fails with `expected` in its error.
    pub fn refused(&self, args: &[&str], expected: &str) {
        let output = self.cli(args);
        assert!(
            !output.status.success(),
            "batchctl {args:?} should fail: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(
            stderr(&output).contains(expected),
            "batchctl {args:?}: expected {expected:?} in: {}",
            stderr(&output)
        );
    }

    /// Submits with `batchctl submit ARGS` and returns the job id.
    pub fn submit(&self, args: &[&str]) -> String {
        let mut full = vec!["submit"];
        full.extend(args);
        self.json(&full)["jobId"].as_str().unwrap().to_string()
    }

    /// Submits the `hello` definition of examples/hello.yaml running `sh -c SCRIPT` instead.
    pub fn submit_script(&self, script: &str) -> String {
        self.submit(&[
            "--queue",
            "default",
            "--definition",
            "hello",
            "--",
            "sh",
            "-c",
            script,
        ])
    }

    pub fn job(&self, job_id: &str) -> Value {
        self.json(&["describe", "job", job_id])
    }

    pub fn wait_for(&self, job_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(job_id, what, Duration::from_secs(30), done)
    }

    /// `wait_for` with a deadline of its own, for work that starts several containers and
    /// exchanges messages between them: under the whole suite's load on two cores that has
    /// taken longer than the usual 30 s.
    pub fn wait_for_within(
        &self,
        job_id: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(job_id);
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {job:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The hold of `kind` (its `type`) that `batchctl why` gives for `job_id`; fails without one.
    pub fn hold(&self, job_id: &str, kind: &str) -> Value {
        let why = self.json(&["why", job_id]);
        why["holds"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|hold| hold["type"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} hold for {job_id}: {why:#}"))
    }

    pub fn wait_for_status(&self, job_id: &str, status: &str) -> Value {
        self.wait_for(job_id, status, |job| job["status"] == status)
    }

    /// `batchctl apply -f -` with `text` on standard input, asserting success.
    pub fn apply_text(&self, text: &str) {
        let output = self.cli_with_stdin(&["apply", "-f", "-"], text);
        assert!(output.status.success(), "{}", stderr(&output));
    }

    /// Runs `batchctl ARGS` with `input` on its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(BINARY)
            .args(args)
            .env("BATCHCTL_SERVER", &self.url)
            .envs(self.token.iter().map(|token| ("BATCHCTL_TOKEN", token)))
            .current_dir(repository_root())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn apply_examples(&self) {
        let output = self.cli(&["apply", "-f", "examples/hello.yaml"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Polls `check` every 50 ms until it gives `Ok`; after `seconds`, fails with `what` and the last
/// `Err` (which should describe what was seen instead).
pub fn eventually<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A GET with curl, to keep the tests free of an HTTP client dependency.
pub fn get_json(url: &str) -> Value {
    let output = Command::new("curl").args(["-s", url]).output().unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "GET {url}: {error}: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A tokens file (`SCOPE TOKEN` lines) in a temporary directory the caller keeps, and the
/// `batchctl server` arguments that name it.
pub fn tokens_file(lines: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, lines).unwrap();
    let arguments = vec!["--tokens-file".to_string(), file.display().to_string()];
    (dir, arguments)
}

/// Whether `program` runs (`--version`); in CI its absence fails the test, elsewhere the test is
/// skipped after saying so loudly. `install` says how to get it.
pub fn required_program(program: &str, install: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {program} is missing: the tests that need it must run in CI ({install})");
        }
        eprintln!("\n!!! SKIPPING a test: {program} is not installed ({install}) !!!\n");
    }
    found
}

/// A fresh Postgres database URL, or `None` after saying loudly why the test is skipped.
pub fn postgres_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("BATCHCTL_TEST_DATABASE_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but BATCHCTL_TEST_DATABASE_URL is not set: the Postgres tests must run in CI");
        }
        eprintln!("\n!!! SKIPPING a Postgres end-to-end test: BATCHCTL_TEST_DATABASE_URL is not set (run .ci/postgres) !!!\n");
        return None;
    };
    // Unique across runs and processes: pids repeat (in a PID namespace, on every run).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "batchctl_e2e_{nanos}_{}_{}",
        std::process::id(),
        next_counter()
    );
    let status = Command::new("psql")
        .args([
            admin_url.as_str(),
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .status()
        .expect("psql is needed for the Postgres end-to-end tests");
    assert!(status.success(), "cannot create database {name}");
    let base = admin_url.rsplit_once('/').unwrap().0;
    Some(format!("{base}/{name}"))
}

fn next_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Whether the tests run as root (CI does).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Reads a trace the jobs wrote themselves, a line `start NAME` when each began and `end NAME`
/// when it finished: the most that ran at once, and the names in the order they started.
pub fn most_at_once(trace: &str) -> (usize, Vec<String>) {
    let (mut in_flight, mut most, mut started) = (0usize, 0, Vec::new());
    for line in trace.lines() {
        match line.split_once(' ') {
            Some(("start", name)) => {
                in_flight += 1;
                started.push(name.to_string());
            }
            Some(("end", _)) => in_flight -= 1,
            _ => panic!("unexpected trace line {line:?}"),
        }
        most = most.max(in_flight);
    }
    (most, started)
}
