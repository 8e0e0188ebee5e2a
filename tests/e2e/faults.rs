//! Faults are ordinary conditions, tried on the real binary: a full disk under the SQLite data
//! directory, and the Postgres server restarted under load. In both, every submit answered 201 is a
//! job that exists, before and after a `kill -9` restart; nothing answers 500; the server keeps
//! running and resumes by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{eventually, is_root, postgres_url, Server};

#[path = "../../scheduler/tests/support/small_filesystem.rs"]
mod small_filesystem;
use small_filesystem::SmallFilesystem;

const SETUP: &str = "
apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: local}
spec: {type: process, state: ENABLED, maxVcpus: 2, maxMemoryMiB: 2048}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: work}
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]}
---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: quick}
spec:
  containerProperties:
    image: busybox
    command: [sh, -c, 'echo Ref::tag >> Ref::trace']
    resourceRequirements: [{type: VCPU, value: '1'}, {type: MEMORY, value: '16'}]
  parameters: {tag: none, trace: /dev/null, payload: ''}
";

/// What one `POST /v1/jobs` was answered.
#[derive(Debug)]
enum Answer {
    Created(String),
    Refused { status: u16, retry_after: bool },
    Unreachable(String),
}

async fn submit(http: &reqwest::Client, url: &str, parameters: &Value) -> Answer {
    let request = json!({"jobQueue": "work", "jobDefinition": "quick", "parameters": parameters});
    let response = match http
        .post(format!("{url}/v1/jobs"))
        .json(&request)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return Answer::Unreachable(format!("{error:?}")),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    if status == 201 {
        let job: Value = response.json().await.unwrap();
        Answer::Created(job["jobId"].as_str().unwrap().to_string())
    } else {
        Answer::Refused {
            status,
            retry_after,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn missing_jobs(server: &Server, ids: &BTreeSet<String>) -> Vec<String> {
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let mut missing = Vec::new();
        for id in ids {
            let status = http
                .get(format!("{}/v1/jobs/{id}", server.url))
                .send()
                .await
                .unwrap()
                .status();
            if status != 200 {
                missing.push(format!("{id} ({status})"));
            }
        }
        missing
    })
}

#[test]
fn a_full_disk_loses_no_acknowledged_job_and_passes_by_itself() {
    let Some(filesystem) = SmallFilesystem::mount("10m") else {
        return;
    };
    // Ballast, deleted later: the filesystem "grows" without the server knowing. It frees more
    // than SQLite's write-ahead log can take back: once space returns, the jobs held up while
    // the disk was full run, and the log grows until a checkpoint lets it start over (1,000
    // pages, 4 MiB, by default), keeping its size after. With 1.5 MiB of ballast on a 6 MiB
    // disk that growth could leave less than the 1 MiB `/healthz` asks for, or not, depending
    // on how many of those jobs ran before the check: the likely cause of this test failing
    // twice under the whole suite (about 975 KB free after the ballast went).
    let ballast = filesystem.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 * 1024 * 1024]).unwrap();
    let data_dir: PathBuf = filesystem.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let mut server = Server::start_in(data_dir.clone(), data_dir.join("server.log"), None, &[]);
    server.apply_text(SETUP);

    let payload = "p".repeat(8 * 1024);
    let mut acknowledged = BTreeSet::new();
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let mut full = 0;
        for _ in 0..4000 {
            match submit(&http, &server.url, &json!({"payload": payload})).await {
                Answer::Created(id) => {
                    acknowledged.insert(id);
                }
                Answer::Refused {
                    status,
                    retry_after,
                } => {
                    assert_eq!(status, 507, "a full disk answers 507, never {status}");
                    assert!(retry_after, "a 507 says when to try again");
                    full += 1;
                    if full == 30 {
                        break;
                    }
                }
                Answer::Unreachable(error) => {
                    let running = server.is_running();
                    panic!(
                        "the server stopped answering (running: {running}): {error}\n{}",
                        server.log()
                    )
                }
            }
        }
        assert_eq!(full, 30, "the disk never filled up");
    });
    let health = crate::support::get_json(&format!("{}/healthz", server.url));
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["storage"]["status"], "full", "{health}");
    assert!(
        health["storage"]["reason"]
            .as_str()
            .unwrap()
            .contains(&data_dir.display().to_string()),
        "{health}"
    );
    assert!(server.is_running(), "the server exited on a full disk");
    assert_eq!(
        missing_jobs(&server, &acknowledged),
        Vec::<String>::new(),
        "acknowledged jobs missing while the disk is full"
    );

    // Space returns: the same server takes and runs jobs again, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let trace = filesystem.path().join("trace");
    let after = server.submit(&[
        "--queue",
        "work",
        "--definition",
        "quick",
        "--param",
        "tag=after",
        "--param",
        &format!("trace={}", trace.display()),
    ]);
    acknowledged.insert(after.clone());
    let job = server.wait_for_status(&after, "SUCCEEDED");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    eventually(10, "healthz to say the storage is ok", || {
        let health = crate::support::get_json(&format!("{}/healthz", server.url));
        (health["storage"]["status"] == "ok")
            .then_some(())
            .ok_or_else(|| format!("{health}; files: {}", sizes(filesystem.path())))
    });

    server.kill_9();
    server.restart();
    assert_eq!(
        missing_jobs(&server, &acknowledged),
        Vec::<String>::new(),
        "acknowledged jobs missing after kill -9 and restart"
    );
    server.kill_9();
    let integrity = runtime().block_on(async {
        let store = batchctl_scheduler::store::Store::open(
            &batchctl_scheduler::store::StoreLocation::Sqlite {
                path: data_dir.join("batchctl.db"),
            },
        )
        .await
        .unwrap();
        let check = store.integrity_check().await.unwrap();
        store.close().await;
        check
    });
    assert_eq!(integrity, "ok");
}

/// Each file under `dir` and its directories with its size, for a failure message.
fn sizes(dir: &Path) -> String {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.push(sizes(&path));
        } else if let Ok(metadata) = entry.metadata() {
            found.push(format!("{} {} B", path.display(), metadata.len()));
        }
    }
    found.join(", ")
}

/// A Postgres server of the test's own (initdb in a temporary directory, its own port), so
/// restarting it disturbs no other test.
struct OwnPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn start() -> Option<OwnPostgres> {
        // The shared test database being configured says Postgres is meant to be here.
        postgres_url()?;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max()
            .expect("pg_ctl under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let postgres = OwnPostgres { bin, dir, port };
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(postgres.dir.path())
            .status()
            .unwrap();
        postgres.run(&format!(
            "'{}/initdb' -D '{}/data' -A trust -U postgres --no-sync >/dev/null",
            postgres.bin.display(),
            postgres.dir.path().display()
        ));
        postgres.pg_ctl("start");
        Some(postgres)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl ACTION` (start, restart) with the server's settings; fast shutdown, as a managed
    /// database's patching or failover does.
    fn pg_ctl(&self, action: &str) {
        pg_ctl(&self.bin, self.dir.path(), self.port, action);
    }

    fn run(&self, command: &str) {
        run_as_postgres(command);
    }
}

fn pg_ctl(bin: &Path, dir: &Path, port: u16, action: &str) {
    let dir = dir.display();
    run_as_postgres(&format!(
        "'{}/pg_ctl' -D '{dir}/data' -l '{dir}/log' -w -m fast -o \"-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off\" {action} >/dev/null",
        bin.display(),
    ));
}

/// initdb refuses root: the cluster belongs to the postgres user.
fn run_as_postgres(command: &str) {
    let status = if is_root() {
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", command])
            .status()
    } else {
        Command::new("sh").args(["-c", command]).status()
    }
    .unwrap();
    assert!(status.success(), "{command}");
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let dir = self.dir.path().display();
        let command = format!(
            "'{}/pg_ctl' -D '{dir}/data' -m immediate stop >/dev/null 2>&1 || true",
            self.bin.display()
        );
        run_as_postgres(&command);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn postgres_restarts_under_load_lose_nothing_and_stop_nothing() {
    let Some(postgres) = OwnPostgres::start() else {
        return;
    };
    let mut server = Server::start(Some(postgres.url()));
    server.apply_text(SETUP);
    let trace = server.data_dir.join("trace");
    std::fs::write(&trace, "").unwrap();
    let parameters =
        |tag: usize| json!({"tag": format!("job-{tag}"), "trace": trace.display().to_string()});

    // Submitters keep going while the database restarts three times; each submit is retried
    // through 503s and lost connections, as the CLI does, under one idempotency key.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let restarts = tokio::task::spawn_blocking({
            let (bin, dir, port) = (
                postgres.bin.clone(),
                postgres.dir.path().to_path_buf(),
                postgres.port,
            );
            move || {
                for _ in 0..3 {
                    std::thread::sleep(Duration::from_millis(1000));
                    pg_ctl(&bin, &dir, port, "restart");
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        while !restarts.is_finished() || n < 100 {
            assert!(Instant::now() < deadline, "submits did not get through");
            let key = format!("fault-{n}");
            let tag = format!("job-{n}");
            loop {
                let response = http
                    .post(format!("{}/v1/jobs", server.url))
                    .header("Idempotency-Key", &key)
                    .json(&json!({"jobQueue": "work", "jobDefinition": "quick", "parameters": parameters(n)}))
                    .send()
                    .await;
                match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        *statuses.entry(status).or_default() += 1;
                        if status == 201 || status == 200 {
                            let job: Value = response.json().await.unwrap();
                            acknowledged.insert(job["jobId"].as_str().unwrap().to_string(), tag);
                            break;
                        }
                        assert_eq!(status, 503, "a restarting database answers 503, never {status}");
                        assert!(response.headers().contains_key("retry-after"));
                    }
                    Err(error) => panic!("the server stopped answering: {error}\n{}", server.log()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n += 1;
            // About 30 submits a second: enough to have some in flight at each restart, few
            // enough that running them all stays quick.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        restarts.await.unwrap();
        assert_eq!(acknowledged.len(), n, "one job per idempotency key");
    });
    eprintln!("answers while Postgres restarted three times: {statuses:?}");
    assert!(server.is_running(), "the server exited:\n{}", server.log());

    // Every acknowledged job runs, once.
    eventually(120, "every acknowledged job to succeed", || {
        let missing: Vec<&String> = acknowledged
            .keys()
            .filter(|id| server.job(id)["status"] != "SUCCEEDED")
            .collect();
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("{} not SUCCEEDED yet", missing.len()))
    });
    let ran = std::fs::read_to_string(&trace).unwrap();
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for line in ran.lines() {
        *runs.entry(line).or_default() += 1;
    }
    for tag in acknowledged.values() {
        assert_eq!(
            runs.get(tag.as_str()),
            Some(&1),
            "{tag} ran {:?} times",
            runs.get(tag.as_str())
        );
    }
    assert_eq!(
        runs.len(),
        acknowledged.len(),
        "jobs ran that nobody acknowledged"
    );
    assert!(server.is_running(), "the server exited:\n{}", server.log());
}

/// `batchctl submit` rides out a server that is not up yet (or restarting): it retries under one
/// idempotency key, so the job exists once.
#[test]
fn the_cli_retries_a_submit_until_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let submit = Command::new(crate::support::BINARY)
        .args([
            "-o",
            "json",
            "submit",
            "--queue",
            "default",
            "--definition",
            "hello",
        ])
        .env("BATCHCTL_SERVER", &url)
        .env_remove("BATCHCTL_TOKEN")
        .current_dir(crate::support::repository_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut arguments = vec![
        "server".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--apply".into(),
        crate::support::repository_root()
            .join("examples/hello.yaml")
            .display()
            .to_string(),
    ];
    if is_root() {
        arguments.extend(["--process-user".into(), "0:0".into()]);
    }
    let mut server = Command::new(crate::support::BINARY)
        .args(&arguments)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let output = submit.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("retrying the submit"), "{stderr}");
    let job: Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = crate::support::get_json(&format!("{url}/v1/jobs"));
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["jobId"], job["jobId"]);
    let _ = server.kill();
    let _ = server.wait();
}
