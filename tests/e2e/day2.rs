//! Day-2 changes through the real CLI and server: suspend and resume (a held job keeps its
//! place), a waiting job's priority, a queue's priority and state, an environment's capacity.

use crate::support::{postgres_url, stderr, stdout, Server};

#[test]
fn a_suspended_job_is_not_placed_and_resumes_in_its_place_sqlite() {
    a_suspended_job_is_not_placed_and_resumes_in_its_place(None);
}

#[test]
fn a_suspended_job_is_not_placed_and_resumes_in_its_place_postgres() {
    let Some(url) = postgres_url() else { return };
    a_suspended_job_is_not_placed_and_resumes_in_its_place(Some(url));
}

fn a_suspended_job_is_not_placed_and_resumes_in_its_place(database_url: Option<String>) {
    let server = Server::start(database_url);
    server.apply_examples();
    // One job at a time.
    let output = server.cli(&["update", "ce", "local", "--max-vcpus", "1"]);
    assert_eq!(
        stdout(&output),
        "computeenvironment/local configured\n",
        "{}",
        stderr(&output)
    );
    let blocker = server.submit_script("sleep 30");
    server.wait_for_status(&blocker, "RUNNING");
    let first = server.submit_script("echo first");
    let second = server.submit_script("sleep 1; echo second");
    server.wait_for_status(&first, "RUNNABLE");
    let output = server.cli(&["suspend", &first]);
    assert!(
        stdout(&output).contains("RUNNABLE (suspended)"),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let why = stdout(&server.cli(&["why", &first]));
    assert!(why.contains("it is suspended"), "{why}");

    // The slot frees: the job behind the held one runs, the held one does not.
    server.cli(&["terminate", &blocker]);
    server.wait_for_status(&second, "RUNNING");
    assert_eq!(server.job(&first)["status"], "RUNNABLE");
    assert_eq!(server.job(&first)["suspended"], true);
    // Resumed while `second` runs, it goes before a job submitted after it was held.
    let third = server.submit_script("echo third");
    server.json(&["resume", &first]);
    let first_done = server.wait_for_status(&first, "SUCCEEDED");
    let third_done = server.wait_for_status(&third, "SUCCEEDED");
    assert!(
        first_done["startedAt"].as_i64() < third_done["startedAt"].as_i64(),
        "the resumed job kept its place: {first_done:#} {third_done:#}"
    );
    assert!(first_done.get("suspended").is_none());
    server.refused(
        &["suspend", &first],
        &format!("job {first} is SUCCEEDED: only waiting jobs (SUBMITTED, PENDING, RUNNABLE) can be suspended"),
    );
    server.refused(&["resume", "no-such-job"], "does not exist");
}

#[test]
fn priorities_states_and_capacity_change_in_place() {
    let server = Server::start(None);
    server.apply_examples();
    server.cli(&["update", "ce", "local", "--max-vcpus", "1"]);
    let blocker = server.submit_script("sleep 30");
    server.wait_for_status(&blocker, "RUNNING");
    let waiting = server.submit_script("true");
    let job = server.json(&["update", "job", &waiting, "--scheduling-priority", "7"]);
    assert_eq!(job["schedulingPriority"], 7);
    assert_eq!(server.job(&waiting)["schedulingPriority"], 7);
    server.refused(
        &["update", "job", &blocker, "--scheduling-priority", "1"],
        "is RUNNING: only waiting jobs (SUBMITTED, PENDING, RUNNABLE) can be given a new scheduling priority; terminate it to stop it",
    );

    // More capacity: the waiting job starts beside the blocker at the next pass.
    server.cli(&["update", "ce", "local", "--max-vcpus", "2"]);
    server.wait_for_status(&waiting, "SUCCEEDED");
    assert_eq!(server.job(&blocker)["status"], "RUNNING");

    let output = server.cli(&[
        "update",
        "queue",
        "default",
        "--priority",
        "3",
        "--state",
        "disabled",
    ]);
    assert_eq!(
        stdout(&output),
        "jobqueue/default configured\n",
        "{}",
        stderr(&output)
    );
    let queue = &server.json(&["get", "queues"])["items"][0]["spec"];
    assert_eq!(
        (queue["priority"].as_i64(), queue["state"].as_str()),
        (Some(3), Some("DISABLED"))
    );
    server.refused(
        &["submit", "--queue", "default", "--definition", "hello"],
        "is DISABLED and accepts no new jobs",
    );
    server.refused(
        &["update", "queue", "default", "--max-vcpus", "2"],
        "--max-vcpus do(es) not apply to a queue",
    );
    server.refused(&["update", "queue", "default"], "say what to change");
    server.refused(
        &["update", "queue", "default", "--state", "PAUSED"],
        "spec.state",
    );
    server.refused(
        &["update", "queue", "nope", "--priority", "1"],
        "JobQueue \"nope\" does not exist",
    );
}

#[test]
fn a_held_queue_places_nothing_until_the_hold_is_lifted() {
    let server = Server::start(None);
    server.apply_examples();
    let held = "apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: default}\nspec:\n  priority: 10\n  stopPolicy: Hold\n  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]\n";
    server.apply_text(held);
    let job = server.submit_script("echo released");
    server.wait_for_status(&job, "RUNNABLE");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        server.job(&job)["status"],
        "RUNNABLE",
        "a held queue placed a job"
    );
    let why = stdout(&server.cli(&["why", &job]));
    assert!(
        why.contains("its queue default is held (stopPolicy: Hold)"),
        "{why}"
    );
    server.apply_text(&held.replace("Hold", "None"));
    server.wait_for_status(&job, "SUCCEEDED");

    // HoldAndDrain also stops what runs, and requeues it in its place.
    let running = server.submit_script("sleep 30");
    server.wait_for_status(&running, "RUNNING");
    server.apply_text(&held.replace("Hold", "HoldAndDrain"));
    let drained = server.wait_for(&running, "the drain", |job| {
        job["status"] == "RUNNABLE" && job["attempts"].as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(
        drained["attempts"][0]["statusReason"],
        "Drained: queue default has stopPolicy HoldAndDrain; requeued"
    );
    let why = stdout(&server.cli(&["why", &running]));
    assert!(why.contains("(stopPolicy: HoldAndDrain)"), "{why}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        server.job(&running)["status"],
        "RUNNABLE",
        "a draining queue placed a job"
    );
    // Lifted: it runs again, as its second attempt.
    server.apply_text(&held.replace("Hold", "None"));
    server.wait_for_status(&running, "RUNNING");
    server.cli(&["terminate", &running]);
    let refused = server.cli_with_stdin(&["apply", "-f", "-"], &held.replace("Hold", "Pause"));
    assert!(
        stderr(&refused).contains(
            "spec.stopPolicy: \"Pause\" is not a stop policy; use None, Hold or HoldAndDrain"
        ),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn get_describe_watch_and_completion_as_kubectl_has_them() {
    use std::io::BufRead;
    let server = Server::start(None);
    server.apply_examples();
    server.apply_text("apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {name: nightly}\nspec:\n  scheduleExpression: 'cron(0 2 * * ? *)'\n  target: {jobQueue: default, jobDefinition: hello}\n---\napiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: on-upload}\nspec:\n  eventPattern: {source: [uploads]}\n  target: {jobQueue: default, jobDefinition: hello}\n");
    let job = server.submit(&["--queue", "default", "--definition", "hello"]);
    server.wait_for_status(&job, "SUCCEEDED");

    let names = |args: &[&str]| {
        let mut full = vec!["-o", "name"];
        full.extend(args);
        stdout(&server.cli(&full))
    };
    assert_eq!(names(&["get", "queues"]), "jobqueue/default\n");
    assert_eq!(
        names(&["get", "definitions", "hello:1"]),
        "jobdefinition/hello:1\n"
    );
    assert_eq!(names(&["get", "jobs"]), format!("job/{job}\n"));
    // One name with -o json is the object itself, not a list.
    let queue = server.json(&["get", "queue", "default"]);
    assert_eq!(queue["metadata"]["name"], "default");
    let output = server.cli(&["get", "queues", "default", "nope"]);
    assert!(!output.status.success());
    assert!(stdout(&output).contains("default"));
    assert!(
        stderr(&output).contains("jobqueues \"nope\" not found"),
        "{}",
        stderr(&output)
    );

    let wide = stdout(&server.cli(&["-o", "wide", "get", "jobs"]));
    assert!(
        wide.contains("DEFINITION") && wide.contains("hello:1") && wide.contains("EXIT CODE"),
        "{wide}"
    );
    let wide = stdout(&server.cli(&["-o", "wide", "get", "queues"]));
    assert!(
        wide.contains("STOP POLICY") && wide.contains("None"),
        "{wide}"
    );

    let described = stdout(&server.cli(&["describe", "queue", "default"]));
    assert!(
        described.contains("jobs by status:") && described.contains("SUCCEEDED"),
        "{described}"
    );
    assert!(
        described.contains("latest jobs:") && described.contains(&job),
        "{described}"
    );
    let described = stdout(&server.cli(&["describe", "schedule", "nightly"]));
    assert!(
        described.contains("next ticks (UTC):") && described.contains("T02:00:00+00:00"),
        "{described}"
    );
    let described = stdout(&server.cli(&["describe", "rule", "on-upload"]));
    assert!(described.contains("latest deliveries:"), "{described}");

    // --watch: the list, then each change as it happens.
    let mut watcher = std::process::Command::new(crate::support::BINARY)
        .args(["get", "jobs", "--watch", "--queue", "default"])
        .env("BATCHCTL_SERVER", &server.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("JOB ID"));
    assert!(lines.next().unwrap().unwrap().starts_with(&job));
    // The stream is open once the list is printed; give the server a moment to subscribe it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let watched = server.submit(&["--queue", "default", "--definition", "hello"]);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with(&watched) && line.contains("SUCCEEDED") {
            break;
        }
        assert!(
            seen.len() < 20,
            "no SUCCEEDED line for {watched}: {seen:#?}"
        );
    }
    assert!(
        seen.iter().any(|line| line.contains("RUNNING")),
        "{seen:#?}"
    );
    watcher.kill().unwrap();
    watcher.wait().unwrap();

    let completion = stdout(&server.cli(&["completion", "bash"]));
    assert!(
        completion.contains("_batchctl()"),
        "{}",
        &completion[..200.min(completion.len())]
    );
}

#[test]
fn submit_wait_on_an_array_shows_its_children_in_a_terminal_only() {
    let server = Server::start(None);
    server.apply_examples();
    // In a terminal (`script` gives the command one): a progress bar of the children on stderr.
    let command = format!(
        "{} submit --queue default --definition hello --array-size 4 --wait -- sh -c 'sleep 0.3'",
        crate::support::BINARY
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("BATCHCTL_SERVER", &server.url)
        .output()
        .expect("script (bsdutils) runs a command in a terminal");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("/4 children finished"), "{shown}");
    assert!(shown.contains("SUCCEEDED"), "{shown}");
    // Not a terminal: no bar, only the job.
    let output = server.cli(&[
        "submit",
        "--queue",
        "default",
        "--definition",
        "hello",
        "--array-size",
        "2",
        "--wait",
    ]);
    assert!(output.status.success());
    assert!(
        !stderr(&output).contains("children finished"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).contains("SUCCEEDED"));
}

/// An upgrade from a release before resources kept their stored model (migration 0022): the
/// real server, restarted on a database whose resource rows have no model, gives them one from
/// their spec before anything reads them, says so, and runs jobs on them as before.
#[test]
fn a_server_upgrades_resources_saved_before_stored_models() {
    let mut server = Server::start(None);
    server.apply_examples();
    let queues = server.json(&["get", "queues"]);
    server.kill_9();
    let database = server.data_dir.join("batchctl.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut connection =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", database.display()))
                .await
                .unwrap();
        for kind in batchctl_scheduler::core::resource::Kind::ALL {
            let table = batchctl_scheduler::store::resource_table(kind);
            sqlx::query(&format!("UPDATE {table} SET model = NULL"))
                .execute(&mut connection)
                .await
                .unwrap();
        }
    });
    server.restart();
    assert!(
        server
            .log()
            .contains("stored the models of resources saved by an earlier batchctl"),
        "{}",
        server.log()
    );
    assert_eq!(server.json(&["get", "queues"]), queues);
    let id = server.submit_script("echo upgraded");
    server.wait_for_status(&id, "SUCCEEDED");
}
