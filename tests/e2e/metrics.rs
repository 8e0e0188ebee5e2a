//! `/metrics` of the real server after real work: histograms, counters and the database's
//! counts, in OpenMetrics text.

use std::process::Command;

use crate::support::{eventually, Server};

fn scrape(server: &Server) -> (String, String) {
    let output = Command::new("curl")
        .args(["-s", "-D", "-", &format!("{}/metrics", server.url)])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    (headers.to_ascii_lowercase(), body.to_string())
}

fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing from\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_show_waits_run_times_outcomes_and_schedule_lateness() {
    let server = Server::start(None);
    server.apply_examples();
    let good = server.submit_script("sleep 0.3");
    let bad = server.submit_script("exit 3");
    server.wait_for_status(&good, "SUCCEEDED");
    server.wait_for_status(&bad, "FAILED");
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {name: nightly}\nspec:\n  scheduleExpression: 'cron(0 2 * * ? *)'\n  target: {jobQueue: default, jobDefinition: hello}\n",
    );
    let output = server.cli(&["schedule", "trigger", "nightly"]);
    assert!(
        output.status.success(),
        "{}",
        crate::support::stderr(&output)
    );

    let (headers, body) = eventually(10, "the scrape counts the schedule's run", || {
        let (headers, body) = scrape(&server);
        // The counters are told once an end commits; the job counts are the database's.
        if body.contains("batchctl_attempts_ended_total{queue=\"default\",outcome=\"succeeded\"} 2")
            && body.contains("batchctl_jobs{status=\"SUCCEEDED\"} 2")
        {
            Ok((headers, body))
        } else {
            Err(body)
        }
    });
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    // Three jobs started once each; the failing one ran twice (retryStrategy attempts 2).
    assert_eq!(
        value(
            &body,
            "batchctl_queue_wait_seconds_count{queue=\"default\"}"
        ),
        3.0
    );
    assert_eq!(
        value(&body, "batchctl_job_run_seconds_count{queue=\"default\"}"),
        4.0
    );
    assert!(value(&body, "batchctl_job_run_seconds_sum{queue=\"default\"}") >= 0.3);
    assert_eq!(
        value(
            &body,
            "batchctl_attempts_ended_total{queue=\"default\",outcome=\"failed\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &body,
            "batchctl_schedule_lateness_seconds_count{schedule=\"nightly\"}"
        ),
        1.0
    );
    assert!(value(&body, "batchctl_dispatch_pass_seconds_count") > 0.0);
    assert_eq!(
        value(
            &body,
            "batchctl_queue_jobs{queue=\"default\",status=\"FAILED\"}"
        ),
        1.0
    );
    assert_eq!(value(&body, "batchctl_jobs{status=\"SUCCEEDED\"}"), 2.0);
    assert_eq!(value(&body, "batchctl_leader"), 1.0);
    assert!(body.ends_with("# EOF\n"), "{body}");
}
