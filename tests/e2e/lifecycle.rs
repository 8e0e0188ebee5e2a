//! Deleting through the real CLI and server, on SQLite and Postgres: AWS Batch's safety rules
//! (409 with what to do), definitions deregistered per revision, finished jobs deleted with their
//! output, a deleted schedule that fires no more.

use crate::support::{postgres_url, stderr, stdout, Server};

const DISABLED_DEFAULT_QUEUE: &str = "apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: default}\nspec:\n  priority: 10\n  state: DISABLED\n  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]\n";
const DISABLED_LOCAL_ENVIRONMENT: &str = "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: local}\nspec: {type: process, state: DISABLED, maxVcpus: 4, maxMemoryMiB: 4096}\n";

#[test]
fn queues_and_environments_go_only_when_aws_batch_would_let_them_sqlite() {
    queues_and_environments_go_only_when_aws_batch_would_let_them(None);
}

#[test]
fn queues_and_environments_go_only_when_aws_batch_would_let_them_postgres() {
    let Some(url) = postgres_url() else { return };
    queues_and_environments_go_only_when_aws_batch_would_let_them(Some(url));
}

fn queues_and_environments_go_only_when_aws_batch_would_let_them(database_url: Option<String>) {
    let server = Server::start(database_url);
    server.apply_examples();
    let running = server.submit_script("sleep 30");
    server.wait_for_status(&running, "RUNNING");

    server.refused(
        &["delete", "queue", "default"],
        "job queue \"default\" is ENABLED: disable it first",
    );
    server.refused(
        &["delete", "computeenvironment", "local"],
        "compute environment \"local\" is ENABLED",
    );
    server.apply_text(DISABLED_DEFAULT_QUEUE);
    server.refused(
        &["delete", "queue", "default"],
        &format!("still has unfinished jobs (job {running} is RUNNING)"),
    );
    server.apply_text(DISABLED_LOCAL_ENVIRONMENT);
    server.refused(
        &["delete", "computeenvironment", "local"],
        "is named by job queue(s) \"default\"",
    );
    // A 409 over HTTP, as a problem document.
    let answer = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "-H",
            "Content-Type: application/json",
            &format!("{}/v1/jobqueues/default", server.url),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&answer), "409");

    server.cli(&["terminate", &running]);
    server.wait_for_status(&running, "FAILED");
    let output = server.cli(&["delete", "queue", "default"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "jobqueue/default deleted\n");
    // The environment still runs nothing once its queue is gone, and now goes too.
    let output = server.cli(&["delete", "ce", "local", "nope"]);
    assert!(!output.status.success(), "a missing name fails the command");
    assert_eq!(stdout(&output), "computeenvironment/local deleted\n");
    assert!(
        stderr(&output).contains("ComputeEnvironment \"nope\" does not exist"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        server.json(&["get", "queues"])["items"],
        serde_json::json!([])
    );
    assert_eq!(
        server.json(&["get", "computeenvironments"])["items"],
        serde_json::json!([])
    );
    // The job of the deleted queue is still there to read, and can be deleted itself.
    assert_eq!(server.job(&running)["status"], "FAILED");
    let deleted = server.json(&["delete", "job", &running]);
    assert_eq!(deleted["deleted"][0]["name"], running.as_str());
    server.refused(&["describe", "job", &running], "does not exist");
}

#[test]
fn definitions_are_deregistered_per_revision_and_jobs_keep_showing_them() {
    let server = Server::start(None);
    server.apply_examples();
    let first = server.submit(&["--queue", "default", "--definition", "hello"]);
    server.wait_for_status(&first, "SUCCEEDED");
    server.apply_text("apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: hello}\nspec:\n  containerProperties: {image: busybox, command: [echo, two]}\n");

    let output = server.cli(&["delete", "definition", "hello:1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "jobdefinition/hello:1 deregistered\n");
    server.refused(
        &["submit", "--queue", "default", "--definition", "hello:1"],
        "job definition \"hello\" revision 1 is INACTIVE (deregistered)",
    );
    // By name, the latest ACTIVE revision.
    let second = server.submit(&["--queue", "default", "--definition", "hello"]);
    assert_eq!(server.job(&second)["jobDefinition"], "hello:2");
    server.wait_for_status(&second, "SUCCEEDED");

    let output = server.cli(&["delete", "definitions", "hello"]);
    assert_eq!(stdout(&output), "jobdefinition/hello:2 deregistered\n");
    server.refused(
        &["submit", "--queue", "default", "--definition", "hello"],
        "every revision of job definition \"hello\" is INACTIVE",
    );
    let definitions = server.json(&["get", "definitions"]);
    let statuses: Vec<&str> = definitions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["INACTIVE", "INACTIVE"], "{definitions:#}");
    // The jobs that ran them still show them.
    assert_eq!(server.job(&first)["jobDefinition"], "hello:1");
    // Applying the same spec again registers a new revision, as AWS Batch does.
    server.apply_text("apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: hello}\nspec:\n  containerProperties: {image: busybox, command: [echo, two]}\n");
    let third = server.submit(&["--queue", "default", "--definition", "hello"]);
    assert_eq!(server.job(&third)["jobDefinition"], "hello:3");
}

#[test]
fn finished_jobs_go_with_their_output_and_needed_ones_stay() {
    let server = Server::start(None);
    server.apply_examples();
    let done = server.submit_script("echo kept output");
    server.wait_for_status(&done, "SUCCEEDED");
    assert_eq!(stdout(&server.cli(&["logs", &done])), "kept output\n");
    let waiting = server.submit_script("sleep 30");
    server.wait_for_status(&waiting, "RUNNING");
    server.refused(
        &["delete", "job", &waiting],
        &format!("job {waiting} is RUNNING: only finished jobs"),
    );
    // A finished job that another still waits on stays until that one has moved on.
    let dependent = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--depends-on",
        &format!("jobId={done}"),
        "--depends-on",
        &format!("jobId={waiting}"),
    ]);
    server.wait_for_status(&dependent, "PENDING");
    server.refused(
        &["delete", "job", &done],
        &format!("job {done} is needed by job {dependent}, which waits on it"),
    );
    server.cli(&["terminate", &waiting]);
    server.wait_for_status(&waiting, "FAILED");
    server.wait_for_status(&dependent, "FAILED");

    let array = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--array-size",
        "3",
    ]);
    server.wait_for_status(&array, "SUCCEEDED");
    server.refused(
        &["delete", "job", &format!("{array}:1")],
        "delete the array job to delete its children",
    );
    let output = server.cli(&["delete", "job", &done, &array]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("job/{done} deleted\njob/{array} deleted (4 jobs with its children)\n")
    );
    for gone in [&done, &format!("{array}:2")] {
        server.refused(&["describe", "job", gone], "does not exist");
    }
    server.refused(&["logs", &done], "does not exist");
    // Deleted jobs leave the counters `/metrics` reads.
    let metrics = stdout(
        &std::process::Command::new("curl")
            .args(["-s", &format!("{}/metrics", server.url)])
            .output()
            .unwrap(),
    );
    assert!(
        metrics.contains("batchctl_jobs{status=\"SUCCEEDED\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_deleted_schedule_fires_no_more_and_delete_reads_files() {
    let server = Server::start(None);
    server.apply_examples();
    // Two one-shot schedules three seconds from now; one is deleted before its tick.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let schedule = |name: &str| {
        format!("apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {{name: {name}}}\nspec:\n  scheduleExpression: 'at({at})'\n  target: {{jobQueue: default, jobDefinition: hello}}\n")
    };
    server.apply_text(&format!("{}---\n{}", schedule("kept"), schedule("dropped")));
    let output = server.cli(&["delete", "schedule", "dropped"]);
    assert_eq!(stdout(&output), "schedule/dropped deleted\n");
    crate::support::eventually(15, "the kept schedule to fire", || {
        let jobs = server.json(&["get", "jobs"]);
        match jobs["items"].as_array().unwrap().len() {
            0 => Err("no job yet".into()),
            _ => Ok(()),
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let jobs = server.json(&["get", "jobs"]);
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1, "{jobs:#}");

    // `delete -f` takes what `apply -f` took, and deletes it in an order that lets each go.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        format!(
            "{DISABLED_LOCAL_ENVIRONMENT}---\n{DISABLED_DEFAULT_QUEUE}---\n{}",
            schedule("kept")
        ),
    )
    .unwrap();
    server.apply_text(&std::fs::read_to_string(file.path()).unwrap());
    let job_id = jobs["items"][0]["jobId"].as_str().unwrap();
    server.wait_for_status(job_id, "SUCCEEDED");
    let output = server.cli(&["delete", "-f", file.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "schedule/kept deleted\njobqueue/default deleted\ncomputeenvironment/local deleted\n"
    );
}

#[test]
fn finished_jobs_expire_and_one_shot_schedules_delete_themselves_sqlite() {
    finished_jobs_expire_and_one_shot_schedules_delete_themselves(None);
}

#[test]
fn finished_jobs_expire_and_one_shot_schedules_delete_themselves_postgres() {
    let Some(url) = postgres_url() else { return };
    finished_jobs_expire_and_one_shot_schedules_delete_themselves(Some(url));
}

fn finished_jobs_expire_and_one_shot_schedules_delete_themselves(database_url: Option<String>) {
    let server = Server::start_with(database_url, &["--job-retention".into(), "2s".into()]);
    server.apply_examples();
    server.apply_text("apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: keep}\nspec:\n  priority: 1\n  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]\n  jobRetention: {succeededSeconds: 3600}\n");
    let short = server.submit_script("echo short-lived");
    let kept = server.submit(&["--queue", "keep", "--definition", "hello"]);
    server.wait_for_status(&short, "SUCCEEDED");
    server.wait_for_status(&kept, "SUCCEEDED");
    crate::support::eventually(30, "the job to expire after 2 s", || {
        let output = server.cli(&["describe", "job", &short]);
        match output.status.success() {
            true => Err("still there".into()),
            false => Ok(()),
        }
    });
    assert_eq!(
        server.job(&kept)["status"],
        "SUCCEEDED",
        "its queue keeps it an hour"
    );
    assert!(
        server
            .log()
            .contains("pruned finished jobs past their retention"),
        "{}",
        server.log()
    );

    // A one-shot schedule with actionAfterCompletion: DELETE goes once its tick has fired.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    server.apply_text(&format!("apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {{name: once}}\nspec:\n  scheduleExpression: 'at({at})'\n  actionAfterCompletion: DELETE\n  target: {{jobQueue: keep, jobDefinition: hello}}\n"));
    assert_eq!(
        server.json(&["get", "schedules"])["items"][0]["metadata"]["name"],
        "once"
    );
    crate::support::eventually(20, "the schedule to fire and delete itself", || {
        let schedules = server.json(&["get", "schedules"]);
        let jobs = server.json(&["get", "jobs", "--queue", "keep"]);
        match (
            schedules["items"].as_array().unwrap().len(),
            jobs["items"].as_array().unwrap().len(),
        ) {
            (0, 2) => Ok(()),
            other => Err(format!("(schedules, jobs in keep) = {other:?}")),
        }
    });
    let refused = server.cli_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {name: bad}\nspec:\n  scheduleExpression: '@daily'\n  actionAfterCompletion: KEEP\n  target: {jobQueue: keep, jobDefinition: hello}\n",
    );
    assert!(
        stderr(&refused)
            .contains("spec.actionAfterCompletion: \"KEEP\" is not an action; use NONE or DELETE"),
        "{}",
        stderr(&refused)
    );
    let refused = server.cli(&["server", "--job-retention", "3w"]);
    assert!(
        stderr(&refused).contains("use s, m, h or d"),
        "{}",
        stderr(&refused)
    );
}

/// What `batchctl logs` prints: the head, the marker, the tail.
fn split_at_marker(logs: &str) -> (&str, u64, &str) {
    let (head, rest) = logs
        .split_once("\n[batchctl: ")
        .unwrap_or_else(|| panic!("no marker in {} bytes of output", logs.len()));
    let (dropped, rest) = rest.split_once(' ').unwrap();
    let (_, tail) = rest.split_once(")]\n").unwrap();
    (head, dropped.parse().unwrap(), tail)
}

#[test]
fn an_attempt_keeps_the_start_and_end_of_its_output_across_a_restart() {
    let mut server = Server::start_with(None, &["--max-log-bytes-per-attempt".into(), "4K".into()]);
    server.apply_examples();
    // 20,000 numbers at once: 108,894 bytes; 2,048 from the start and 2,048 from the end stay.
    let flood = server.submit_script("seq 1 20000");
    server.wait_for_status(&flood, "SUCCEEDED");
    let expected: String = (1..=20000).map(|n| format!("{n}\n")).collect();
    let logs = stdout(&server.cli(&["logs", &flood]));
    let (head, dropped, tail) = split_at_marker(&logs);
    assert_eq!(head, &expected[..2048]);
    assert!(expected.ends_with(tail) && tail.len() <= 2048, "{tail:?}");
    assert_eq!(dropped as usize, expected.len() - head.len() - tail.len());

    // Output written while the server is down and after it came back is counted on.
    let trickle =
        server.submit_script("i=0; while [ $i -lt 40 ]; do seq 1 200; i=$((i+1)); sleep 0.1; done");
    server.wait_for_status(&trickle, "RUNNING");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    server.kill_9();
    server.restart();
    server.wait_for_status(&trickle, "SUCCEEDED");
    let expected: String = (0..40)
        .flat_map(|_| (1..=200).map(|n| format!("{n}\n")))
        .collect();
    let logs = stdout(&server.cli(&["logs", &trickle]));
    let (head, dropped, tail) = split_at_marker(&logs);
    assert_eq!(head, &expected[..2048]);
    assert!(expected.ends_with(tail) && tail.len() <= 2048, "{tail:?}");
    assert_eq!(
        dropped as usize,
        expected.len() - head.len() - tail.len(),
        "{logs}"
    );

    // A definition sets its own limit; one below the minimum is refused, naming the field.
    server.apply_text("apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: small}\nspec:\n  maxLogBytesPerAttempt: 1024\n  containerProperties: {image: busybox, command: [seq, '1', '5000']}\n");
    let small = server.submit(&["--queue", "default", "--definition", "small"]);
    server.wait_for_status(&small, "SUCCEEDED");
    let logs = stdout(&server.cli(&["logs", &small]));
    let (head, _, tail) = split_at_marker(&logs);
    assert_eq!((head.len(), tail.len() <= 512), (512, true));
    let refused = server.cli_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: tiny}\nspec:\n  maxLogBytesPerAttempt: 10\n  containerProperties: {image: busybox, command: ['true']}\n",
    );
    assert!(
        stderr(&refused).contains("spec.maxLogBytesPerAttempt: is 10; give at least 1024"),
        "{}",
        stderr(&refused)
    );
}
