//! The core slice through the CLI: the README's flow, failures, restarts, logs, stops and bad input.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{eventually, postgres_url, stderr, stdout, Server, BINARY};

/// The README's first steps: apply the examples, run `hello` for "you", read its output; then a job
/// that exits 3 ends FAILED with that exit code on its last attempt.
fn readme_flow(server: &Server) {
    server.apply_examples();
    let output = server.cli(&[
        "submit",
        "--queue",
        "default",
        "--definition",
        "hello",
        "--param",
        "who=you",
        "--wait",
    ]);
    assert_succeeded(&output);
    let jobs = server.json(&["get", "jobs", "--status", "SUCCEEDED"]);
    let job_id = jobs["items"][0]["jobId"].as_str().unwrap();
    let logs = server.cli(&["logs", job_id]);
    assert_eq!(stdout(&logs), "hello you\n");

    let output = server.cli(&[
        "submit",
        "--queue",
        "default",
        "--definition",
        "hello",
        "--wait",
        "-o",
        "json",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "--wait exits non-zero unless SUCCEEDED"
    );
    let job: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["status"], "FAILED");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "hello retries once: {job:#}");
    assert_eq!(attempts.last().unwrap()["exitCode"], 3);
    assert_eq!(
        job["statusReason"],
        "Essential container in task exited with code 3"
    );
}

#[test]
fn readme_flow_on_sqlite() {
    readme_flow(&Server::start(None));
}

#[test]
fn readme_flow_on_postgres() {
    let Some(url) = postgres_url() else { return };
    readme_flow(&Server::start(Some(url)));
}

#[test]
fn a_first_start_can_take_jobs_at_once() {
    let server = Server::start(None);
    let queues = server.json(&["get", "queues"]);
    assert_eq!(queues["items"][0]["metadata"]["name"], "default");
    // The default environment runs containers where an engine answers, local processes elsewhere.
    let engine = crate::docker_executor::test_image();
    let image = engine.as_ref().map_or("busybox", |engine| engine.image);
    let output = server.cli(&["run", image, "--", "sh", "-c", "echo from run; exit 4"]);
    assert_eq!(stdout(&output), "from run\n");
    assert_eq!(
        output.status.code(),
        Some(4),
        "run exits with the job's exit code"
    );
}

/// kill -9 of the server while jobs run, then a restart: every job ends, none runs twice, no attempt
/// record is left behind.
fn survives_kill_9(database_url: Option<String>) {
    let mut server = Server::start(database_url);
    server.apply_examples();
    let runs = server.data_dir.join("runs.txt");
    let script = format!(
        "echo $BATCH_JOB_ID >> {}; sleep 2; echo done",
        runs.display()
    );
    let ids: Vec<String> = (0..6).map(|_| server.submit_script(&script)).collect();
    server.wait_for(&ids[0], "the first job to run", |job| {
        job["status"] == "RUNNING"
    });
    std::thread::sleep(Duration::from_millis(300));
    server.kill_9();
    server.restart();
    for id in &ids {
        let job = server.wait_for(id, "a terminal state", |job| {
            matches!(job["status"].as_str(), Some("SUCCEEDED" | "FAILED"))
        });
        assert_eq!(job["status"], "SUCCEEDED", "{job:#}\n{}", server.log());
        assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(stdout(&server.cli(&["logs", id])), "done\n");
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    assert_eq!(counts.len(), ids.len(), "every job ran");
    assert!(
        counts.values().all(|&n| n == 1),
        "a job ran twice: {counts:?}"
    );
    assert!(
        server.log().contains("adopting attempt after restart"),
        "{}",
        server.log()
    );
    // Finished attempts are removed once recorded; give the last removals a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(server.data_dir.join("attempts"))
        .unwrap()
        .count()
        > 0
    {
        assert!(Instant::now() < deadline, "attempt records left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn survives_kill_9_on_sqlite() {
    survives_kill_9(None);
}

#[test]
fn survives_kill_9_on_postgres() {
    let Some(url) = postgres_url() else { return };
    survives_kill_9(Some(url));
}

#[test]
fn logs_follow_a_running_job_and_keep_bytes_exact() {
    let server = Server::start(None);
    server.apply_examples();
    let id =
        server.submit_script("for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done; echo oops >&2");
    let follow = Command::new(BINARY)
        .args(["logs", "-f", &id])
        .env("BATCHCTL_SERVER", &server.url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let output = follow.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        "line 1\nline 2\nline 3\nline 4\nline 5\noops\n"
    );
    assert_eq!(
        server.job(&id)["status"],
        "SUCCEEDED",
        "-f returns once the job is done"
    );

    // 3 MiB of output with bytes that are not UTF-8 comes back exactly.
    let id = server
        .submit_script("head -c 3145728 /dev/zero | tr '\\0' 'x'; printf '\\377\\376\\000end'");
    server.wait_for_status(&id, "SUCCEEDED");
    let logs = server.cli(&["logs", &id]);
    assert_eq!(logs.stdout.len(), 3 * 1024 * 1024 + 6);
    assert!(logs.stdout[..3 * 1024 * 1024].iter().all(|&b| b == b'x'));
    assert_eq!(&logs.stdout[3 * 1024 * 1024..], b"\xff\xfe\x00end");
}

#[test]
fn terminate_timeout_and_cancel_stop_work() {
    let server = Server::start(None);
    server.apply_examples();
    // The work starts a child of its own; terminate must stop the whole process group.
    let marker = server.data_dir.join("grandchild.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", marker.display());
    let id = server.submit_script(&script);
    server.wait_for_status(&id, "RUNNING");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marker.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = server.cli(&["terminate", &id, "--reason", "stop the test job"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job = server.wait_for_status(&id, "FAILED");
    assert_eq!(job["statusReason"], "stop the test job");
    assert_eq!(
        job["attempts"].as_array().unwrap().len(),
        1,
        "terminated jobs are not retried"
    );
    let grandchild = std::fs::read_to_string(&marker).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{}", grandchild.trim())).exists(),
        "the work's child survived"
    );

    let id = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--",
        "sleep",
        "300",
    ]);
    let job = server.json(&["describe", "job", &id]);
    assert_eq!(job["timeout"]["attemptDurationSeconds"], 60);
    server.cli(&["terminate", &id]);
    server.wait_for_status(&id, "FAILED");

    let resources = "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: slow}\nspec:\n  containerProperties: {image: x, command: [sleep, '300']}\n  timeout: {attemptDurationSeconds: 1}\n  retryStrategy: {attempts: 3}\n";
    server.apply_text(resources);
    let id = server.submit(&["--queue", "default", "--definition", "slow"]);
    let job = server.wait_for_status(&id, "FAILED");
    assert_eq!(
        job["statusReason"],
        "Job attempt duration exceeded timeout of 1 seconds"
    );
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);

    // With the environment full, a job waits RUNNABLE and can be cancelled.
    let small = "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: local}\nspec: {type: process, maxVcpus: 1, maxMemoryMiB: 4096}\n";
    server.apply_text(small);
    let blocker = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "slow",
        "--",
        "sleep",
        "300",
    ]);
    server.wait_for_status(&blocker, "RUNNING");
    let waiting = server.submit(&["--queue", "default", "--definition", "hello"]);
    server.wait_for_status(&waiting, "RUNNABLE");
    let output = server.cli(&["cancel", &blocker]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cancel only stops jobs that have not started; use terminate"),
        "{}",
        stderr(&output)
    );
    let cancelled = server.json(&["cancel", &waiting, "--reason", "not today"]);
    assert_eq!(cancelled["status"], "FAILED");
    assert_eq!(cancelled["statusReason"], "not today");
    server.cli(&["terminate", &blocker]);
    server.wait_for_status(&blocker, "FAILED");
}

#[test]
fn bad_input_names_the_field_and_writes_nothing() {
    let server = Server::start(None);
    let bad = server.data_dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: fine}\nspec:\n  containerProperties: {image: x, command: [\"true\"]}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: broken}\nspec:\n  containerProperties: {command: [\"true\"], colour: red}\n",
    )
    .unwrap();
    let output = server.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output).trim(),
        "error: documents[1].spec.containerProperties.colour: unknown field `colour`, expected one of `image`, `command`, `environment`, `resourceRequirements`, `workingDir`, `user`, `imagePullPolicy`, `privileged`, `linuxParameters`, `secrets`, `ulimits`, `readonlyRootFilesystem`, `volumes`, `mountPoints`"
    );
    assert!(
        server.json(&["get", "definitions"])["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a rejected apply writes nothing"
    );

    server.apply_examples();
    let cases: [(&[&str], &str); 4] = [
        (
            &["submit", "--queue", "nope", "--definition", "hello"],
            "jobQueue: queue \"nope\" does not exist",
        ),
        (
            &["submit", "--queue", "default", "--definition", "hello:7"],
            "jobDefinition: job definition \"hello:7\" does not exist",
        ),
        (
            &[
                "submit",
                "--queue",
                "default",
                "--definition",
                "hello",
                "--env",
                "BATCH_JOB_ID=x",
            ],
            "containerOverrides.environment[0].name: \"BATCH_JOB_ID\" starts with \"BATCH_\"",
        ),
        (
            &["get", "jobs", "--status", "DONE"],
            "status: unknown status \"DONE\"",
        ),
    ];
    for (args, expected) in cases {
        let output = server.cli(args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let huge = "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: huge}\nspec:\n  containerProperties: {image: x, command: [\"true\"], resourceRequirements: [{type: VCPU, value: \"64\"}]}\n";
    server.apply_text(huge);
    let output = server.cli(&["submit", "--queue", "default", "--definition", "huge"]);
    assert!(
        stderr(&output).contains("more than any compute environment of queue \"default\" has"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn idempotency_keys_and_a_second_server_on_one_data_dir() {
    let server = Server::start(None);
    server.apply_examples();
    let first = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--idempotency-key",
        "nightly-2026-11-21",
    ]);
    let again = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--idempotency-key",
        "nightly-2026-11-21",
    ]);
    assert_eq!(first, again);
    assert_eq!(
        server.json(&["get", "jobs"])["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let second = Command::new(BINARY)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("another batchctl server is using the data directory"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn depends_on_through_the_cli() {
    let server = Server::start(None);
    server.apply_examples();
    let first = server.submit_script("sleep 0.5; echo first");
    let second = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--depends-on",
        &format!("jobId={first}"),
    ]);
    assert_eq!(server.job(&second)["dependsOn"][0]["jobId"], first.as_str());
    let done = server.wait_for_status(&second, "SUCCEEDED");
    let first_done = server.job(&first);
    assert!(
        done["startedAt"].as_i64() >= first_done["stoppedAt"].as_i64(),
        "{done:#}"
    );

    let output = server.cli(&[
        "submit",
        "--queue",
        "default",
        "--definition",
        "hello",
        "--depends-on",
        "jobId=no-such-job",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("dependsOn[0].jobId: job no-such-job does not exist"),
        "{}",
        stderr(&output)
    );
    let output = server.cli(&[
        "submit",
        "--queue",
        "default",
        "--definition",
        "hello",
        "--depends-on",
        &format!("jobId={first},type=N_TO_N"),
    ]);
    assert!(
        stderr(&output)
            .contains("N_TO_N dependencies are for array jobs; set arrayProperties.size"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn why_explains_what_holds_a_job() {
    let server = Server::start(None);
    server.apply_examples();
    // Fill the 4-vCPU environment with a 4-vCPU job, then queue a 1-vCPU job and one behind it.
    let big = "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: big}\nspec:\n  containerProperties: {image: x, command: [sleep, '300'], resourceRequirements: [{type: VCPU, value: '4'}, {type: MEMORY, value: '64'}]}\n";
    server.apply_text(big);
    let blocker = server.submit(&["--queue", "default", "--definition", "big"]);
    server.wait_for_status(&blocker, "RUNNING");
    let first = server.submit_script("true");
    let second = server.submit_script("true");
    server.wait_for_status(&second, "RUNNABLE");
    let why = server.json(&["why", &second]);
    let holds = why["holds"].as_array().unwrap();
    assert_eq!(holds[0]["type"], "queuePosition");
    assert_eq!(holds[0]["runnableAhead"], 1);
    assert_eq!(holds[1]["type"], "environmentFull");
    assert_eq!(holds[1]["free"]["vcpus"], "0");
    assert_eq!(holds[1]["needs"]["vcpus"], "1");
    let text = stdout(&server.cli(&["why", &first]));
    assert!(
        text.contains(
            "compute environment local is full: the job needs 1 vCPU, 64 MiB, 0 GPU, 0 vCPU"
        ),
        "{text}"
    );

    let waiting = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--depends-on",
        &format!("jobId={blocker}"),
    ]);
    server.wait_for_status(&waiting, "PENDING");
    let text = stdout(&server.cli(&["why", &waiting]));
    assert!(
        text.contains(&format!("it waits for 1 to succeed: {blocker} (RUNNING)")),
        "{text}"
    );
    server.cli(&["terminate", &blocker]);
    server.wait_for_status(&blocker, "FAILED");
}

#[test]
fn aws_batch_job_definitions_apply_unchanged_with_a_warning() {
    let server = Server::start(None);
    server.apply_examples();
    let output = server.cli(&["apply", "-f", "examples/aws-job-definition.json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("jobdefinition/aws-hello:1 created"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        stderr(&output),
        "warning: documents[0]: job definition aws-hello: batchctl does not support, and ignored: containerProperties.jobRoleArn, containerProperties.logConfiguration, platformCapabilities\n"
    );
    let id = server.submit(&["--queue", "default", "--definition", "aws-hello"]);
    server.wait_for_status(&id, "SUCCEEDED");
    assert_eq!(
        stdout(&server.cli(&["logs", &id])),
        "hello AWS from batchctl\n"
    );
}

#[test]
fn server_apply_files_declare_resources_and_a_bad_one_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("resources.yaml");
    std::fs::write(
        &good,
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: declared}\n\
         spec: {type: process, maxVcpus: 2, maxMemoryMiB: 512}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: jobs}\n\
         spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: declared}]}\n",
    )
    .unwrap();
    let mut server = Server::start_with(None, &["--apply".into(), good.display().to_string()]);
    let environments = server.json(&["get", "computeenvironments"]);
    let names: Vec<&str> = environments["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    // Declared resources stand in for the first-start defaults.
    assert_eq!(names, ["declared"], "{environments:#}");
    // Applied again at every start, unchanged.
    server.kill_9();
    server.restart();
    let queues = server.json(&["get", "jobqueues"]);
    assert_eq!(queues["items"].as_array().unwrap().len(), 1, "{queues:#}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: k}\n\
         spec: {type: kubernetes, maxVcpus: 2, maxMemoryMiB: 512}\n",
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .arg("--apply")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("cannot apply") && text.contains("documents[0].spec.namespace: is required"),
        "{text}"
    );
}

/// `GET /v1/jobs/{id}/wait` (what `submit --wait` uses): answers with the job as it is when the
/// timeout passes, at once when the job ends, and refuses a timeout out of range by name.
#[test]
fn a_wait_answers_when_the_job_ends_or_its_timeout_passes() {
    let server = Server::start(None);
    server.apply_examples();
    let job_id = server.submit_script("sleep 3");
    let wait = |query: &str| {
        let output = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("{}/v1/jobs/{job_id}/wait{query}", server.url))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };

    let started = Instant::now();
    let (code, body) = wait("?timeoutSeconds=1");
    assert_eq!(code, "200", "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        !matches!(job["status"].as_str(), Some("SUCCEEDED" | "FAILED")),
        "the job sleeps for 3 s: {job:#}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");

    let (code, body) = wait("?timeoutSeconds=60");
    assert_eq!(code, "200", "{body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["status"], "SUCCEEDED", "{job:#}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered when the job ended, not at the timeout"
    );

    let (code, body) = wait("?timeoutSeconds=0");
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("timeoutSeconds"), "{body}");
    let (code, body) = wait("?timeoutSeconds=61");
    assert_eq!(code, "400", "{body}");
    let (code, body) = wait("?until=done");
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("until"), "{body}");
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/v1/jobs/no-such-job/wait", server.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "404");
}

/// A caller that holds every stream slot it may (32 open waits or log follows) still gets its
/// `submit --wait` answered: refused a wait (429), the CLI looks at the job every half second.
#[test]
fn submit_wait_works_when_the_caller_holds_every_stream_slot() {
    let server = Server::start(None);
    server.apply_examples();
    let long = server.submit_script("sleep 60");
    let wait_url = |seconds: u32| {
        format!(
            "{}/v1/jobs/{long}/wait?timeoutSeconds={seconds}",
            server.url
        )
    };
    let mut holders: Vec<std::process::Child> = (0..32)
        .map(|_| {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", &wait_url(60)])
                .spawn()
                .unwrap()
        })
        .collect();
    // Let every holder take its slot before probing: a probe that took one first would leave a
    // holder refused, and the caller one slot short of full for ever.
    std::thread::sleep(Duration::from_secs(2));
    let exited: Vec<String> = holders
        .iter_mut()
        .filter_map(|h| h.try_wait().unwrap().map(|status| status.to_string()))
        .collect();
    assert!(exited.is_empty(), "holders ended: {exited:?}");
    eventually(20, "every stream slot of the caller is held", || {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &wait_url(1)])
            .output()
            .unwrap();
        match String::from_utf8_lossy(&output.stdout).as_ref() {
            "429" => Ok(()),
            other => Err(format!(
                "a 33rd wait answered {other}; the job: {}",
                server.job(&long)["status"]
            )),
        }
    });
    let output = server.cli(&[
        "submit",
        "--queue",
        "default",
        "--definition",
        "hello",
        "--wait",
    ]);
    assert_succeeded(&output);
    for holder in &mut holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    server.cli(&["terminate", &long]);
}

/// A `submit --wait` that exited 0 and printed its job SUCCEEDED.
fn assert_succeeded(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}{}",
        stdout(output),
        stderr(output)
    );
    assert!(stdout(output).contains("SUCCEEDED"), "{}", stdout(output));
}
