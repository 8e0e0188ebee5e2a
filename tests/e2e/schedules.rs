//! Schedules through the CLI: preview without a server, apply, trigger, and status.

use std::process::Command;

use crate::support::{stderr, stdout, Server, BINARY};

#[test]
fn preview_needs_no_server_and_says_where_an_expression_is_wrong() {
    let output = Command::new(BINARY)
        .args([
            "schedule",
            "preview",
            "cron(0 2 ? * MON-FRI *)",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-11-21T00:00:00Z",
            "-n",
            "3",
        ])
        .env("BATCHCTL_SERVER", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "2026-11-23T02:00:00+01:00\n2026-11-24T02:00:00+01:00\n2026-11-25T02:00:00+01:00\n"
    );
    let output = Command::new(BINARY)
        .args(["schedule", "preview", "0 2 31 FEB-"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("at column 0: has 4 fields"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_triggered_schedule_submits_its_target_with_the_scheduled_time() {
    let server = Server::start(None);
    server.apply_examples();
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {name: hourly-hello}\nspec:\n  scheduleExpression: '@hourly'\n  timeZone: America/New_York\n  overlapPolicy: Forbid\n  target:\n    jobQueue: default\n    jobDefinition: hello\n    parameters: {who: '<scheduledTime>'}\n    containerOverrides: {command: [sh, -c, 'echo hello Ref::who at $BATCH_SCHEDULED_TIME']}\n",
    );
    let schedules = server.json(&["get", "schedules"]);
    let status = &schedules["items"][0]["status"];
    assert!(
        status["nextFireTime"]
            .as_str()
            .unwrap()
            .ends_with(":00:00-05:00"),
        "{schedules:#}"
    );
    assert!(status["lastFiring"].is_null());

    let job = server.json(&["schedule", "trigger", "hourly-hello"]);
    let id = job["jobId"].as_str().unwrap().to_string();
    server.wait_for_status(&id, "SUCCEEDED");
    let logs = stdout(&server.cli(&["logs", &id]));
    let (greeting, time) = logs.trim_end().split_once(" at ").unwrap();
    assert!(
        greeting.starts_with("hello 20") && greeting.ends_with("-05:00"),
        "{logs}"
    );
    assert_eq!(&greeting["hello ".len()..], time, "{logs}");

    let schedules = server.json(&["get", "schedules"]);
    let last = &schedules["items"][0]["status"]["lastFiring"];
    assert_eq!(last["outcome"], "FIRED");
    assert_eq!(last["jobId"], id.as_str());
    assert_eq!(last["jobStatus"], "SUCCEEDED");
    let table = stdout(&server.cli(&["get", "schedules"]));
    assert!(
        table.contains("hourly-hello") && table.contains("FIRED (SUCCEEDED)"),
        "{table}"
    );

    // Bad specs name the field.
    let output = server.cli_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {name: bad}\nspec:\n  scheduleExpression: 'cron(0 2 * * MON *)'\n  target: {jobQueue: default, jobDefinition: hello}\n",
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("spec.scheduleExpression: \"cron(0 2 * * MON *)\" at column 9: AWS cron needs ? in exactly one"),
        "{}",
        stderr(&output)
    );
    let output = server.cli(&["schedule", "trigger", "nope"]);
    assert!(
        stderr(&output).contains("schedule nope does not exist"),
        "{}",
        stderr(&output)
    );
}
