//! Events and rules through the CLI.

use std::process::Command;

use crate::support::{stderr, stdout, BINARY};

/// The job the first rule submitted for its first matching event, once there is one.
fn first_delivered_job(server: &crate::support::Server) -> String {
    crate::support::eventually(20, "a rule's job", || {
        let rules = server.json(&["get", "rules"]);
        rules["items"][0]["status"]["recentDeliveries"][0]["jobId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{rules:#}"))
    })
}

#[test]
fn rules_test_needs_no_server_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let pattern = write(
        "pattern.yaml",
        "source: [batchctl]\ndetail-type: [Job State Change]\ndetail:\n  status: [{anything-but: SUCCEEDED}]\n  exitCode: [{numeric: ['>', 0]}]\n",
    );
    let failed = write(
        "failed.json",
        r#"{"id": "1", "source": "batchctl", "detail-type": "Job State Change", "time": "2026-11-21T10:00:00Z", "detail": {"status": "FAILED", "exitCode": 3}}"#,
    );
    let succeeded = write(
        "succeeded.json",
        r#"{"id": "2", "source": "batchctl", "detail-type": "Job State Change", "time": "2026-11-21T10:00:00Z", "detail": {"status": "SUCCEEDED", "exitCode": 0}}"#,
    );
    let bad = write("bad.json", r#"{"detail": {"status": "FAILED"}}"#);
    let run = |pattern: &std::path::Path, event: &std::path::Path| {
        Command::new(BINARY)
            .args(["rules", "test", "--pattern"])
            .arg(pattern)
            .arg("--event")
            .arg(event)
            .output()
            .unwrap()
    };
    let output = run(&pattern, &failed);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "match\n");
    let output = run(&pattern, &succeeded);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "no match\n");
    let output = run(&bad, &failed);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("detail.status: a value to match must be in a list"),
        "{}",
        stderr(&output)
    );
    let output = run(&pattern, &dir.path().join("missing.json"));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn an_event_matching_a_rule_runs_its_job_with_values_from_the_event() {
    let server = crate::support::Server::start(None);
    server.apply_examples();
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: greet-signups}\nspec:\n  eventPattern: {source: [shop], detail-type: [Signup], detail: {plan: [{anything-but: free}]}}\n  inputTransformer: {inputPathsMap: {who: $.detail.name}}\n  target: {jobQueue: default, jobDefinition: hello, parameters: {who: '<who>'}}\n",
    );
    let put = |id: &str, detail: &str| {
        let output = server.cli(&[
            "events",
            "put",
            "--source",
            "shop",
            "--detail-type",
            "Signup",
            "--detail",
            detail,
            "--id",
            id,
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output).trim(), id);
    };
    put("signup-1", r#"{"name": "Ada", "plan": "pro"}"#);
    put("signup-2", r#"{"name": "Bob", "plan": "free"}"#);
    // A retried put of the same event is stored once and runs once.
    put("signup-1", r#"{"name": "Ada", "plan": "pro"}"#);
    let job_id = first_delivered_job(&server);
    let rules = server.json(&["get", "rules"]);
    let deliveries = &rules["items"][0]["status"]["recentDeliveries"];
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "{deliveries:#}");
    assert_eq!(deliveries[0]["eventId"], "signup-1");
    server.wait_for_status(&job_id, "SUCCEEDED");
    assert_eq!(stdout(&server.cli(&["logs", &job_id])), "hello Ada\n");
    // The two puts, beside the audit events of the applies.
    let events = server.json(&["events", "list"]);
    let put = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["event"]["source"] != "batchctl.audit")
        .count();
    assert_eq!(put, 2, "{events:#}");

    let output = server.cli(&[
        "events",
        "put",
        "--source",
        "shop",
        "--detail-type",
        "Signup",
        "--detail",
        "[1]",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("detail must be a JSON object"),
        "{}",
        stderr(&output)
    );
    let output = server.cli_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: bad}\nspec:\n  eventPattern: {source: shop}\n  target: {jobQueue: default, jobDefinition: hello}\n",
    );
    assert!(
        stderr(&output).contains("spec.eventPattern.source: a value to match must be in a list"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_failed_job_can_trigger_another_through_its_state_change_event() {
    let server = crate::support::Server::start(None);
    server.apply_examples();
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: on-failure}\nspec:\n  eventPattern: {source: [batchctl], detail-type: [Job State Change], detail: {jobName: [nightly], status: [FAILED]}}\n  inputTransformer: {inputPathsMap: {failed: $.detail.jobId, code: $.detail.exitCode}}\n  target: {jobQueue: default, jobDefinition: hello, jobName: cleanup, parameters: {who: '<failed> exited <code>'}}\n",
    );
    let failing = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--name",
        "nightly",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    server.wait_for_status(&failing, "FAILED");
    let cleanup = crate::support::eventually(20, "the follow-up job", || {
        let jobs = server.json(&["get", "jobs"]);
        jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["jobName"] == "cleanup")
            .map(|job| job["jobId"].as_str().unwrap().to_string())
            .ok_or_else(|| format!("{jobs:#}"))
    });
    server.wait_for_status(&cleanup, "SUCCEEDED");
    assert_eq!(
        stdout(&server.cli(&["logs", &cleanup])),
        format!("hello {failing} exited 7\n")
    );
    // Every transition of the failed job is on the bus.
    let events = server.json(&["events", "list"]);
    let statuses: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["event"]["detail"]["jobId"] == failing.as_str())
        .map(|item| item["event"]["detail"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["RUNNABLE", "STARTING", "RUNNING", "RUNNABLE", "STARTING", "RUNNING", "FAILED"],
        "hello retries once"
    );
}

#[test]
fn signed_webhook_deliveries_become_events_and_bad_ones_are_refused() {
    use batchctl_scheduler::core::webhooks::{github_signature, standard_signature};
    let server = crate::support::Server::start(None);
    server.apply_examples();
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const GITHUB_SECRET: &str = "a long random github secret";
    server.apply_text(&format!(
        "apiVersion: batchctl/v1\nkind: WebhookTrigger\nmetadata: {{name: billing}}\nspec: {{profile: standard-webhooks, secrets: ['{SECRET}'], source: billing, detailType: Invoice}}\n---\napiVersion: batchctl/v1\nkind: WebhookTrigger\nmetadata: {{name: github}}\nspec: {{profile: github, secrets: ['{GITHUB_SECRET}'], source: github}}\n---\napiVersion: batchctl/v1\nkind: EventRule\nmetadata: {{name: on-paid}}\nspec:\n  eventPattern: {{source: [billing], detail: {{type: [invoice.paid]}}}}\n  inputTransformer: {{inputPathsMap: {{who: $.detail.customer}}}}\n  target: {{jobQueue: default, jobDefinition: hello, parameters: {{who: '<who>'}}}}\n"
    ));
    let post = |path: &str, headers: &[(&str, String)], body: &str| {
        let mut command = Command::new("curl");
        command.args([
            "-s",
            "-o",
            "/dev/stderr",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
        ]);
        for (name, value) in headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        command.args(["--data-binary", body, &format!("{}{path}", server.url)]);
        let output = command.output().unwrap();
        (stdout(&output), stderr(&output))
    };
    let body = r#"{"type": "invoice.paid", "customer": "Grace"}"#;
    let now = chrono::Utc::now().timestamp();
    let signed = |id: &str, timestamp: i64, body: &str| {
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                standard_signature(SECRET, id, timestamp, body.as_bytes()).unwrap(),
            ),
        ]
    };
    let (status, answer) = post("/v1/hooks/billing", &signed("msg_1", now, body), body);
    assert_eq!(status, "202", "{answer}");
    // A replay of the same delivery is answered but not stored twice.
    let (status, answer) = post("/v1/hooks/billing", &signed("msg_1", now, body), body);
    assert_eq!(status, "200", "{answer}");
    assert!(answer.contains("\"duplicate\":true"), "{answer}");
    // A wrong secret, a changed body, or a stale timestamp: 401, nothing stored.
    let mut wrong = signed("msg_2", now, body);
    wrong[2].1 = standard_signature(
        "whsec_b3RoZXIgc2VjcmV0IGtleSEhISE=",
        "msg_2",
        now,
        body.as_bytes(),
    )
    .unwrap();
    let tampered = r#"{"type": "invoice.paid", "customer": "Mallory"}"#;
    for (headers, sent) in [
        (wrong, body),
        (signed("msg_3", now, body), tampered),
        (signed("msg_4", now - 600, body), body),
    ] {
        let (status, answer) = post("/v1/hooks/billing", &headers, sent);
        assert_eq!(status, "401", "{answer}");
    }
    let github_body = r#"{"ref": "refs/heads/main"}"#;
    let (status, answer) = post(
        "/v1/hooks/github",
        &[
            (
                "X-Hub-Signature-256",
                github_signature(GITHUB_SECRET, github_body.as_bytes()),
            ),
            ("X-GitHub-Delivery", "d-1".into()),
            ("X-GitHub-Event", "push".into()),
        ],
        github_body,
    );
    assert_eq!(status, "202", "{answer}");

    let events = server.json(&["events", "list"]);
    let seen: Vec<(String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["event"]["source"] != "batchctl.audit")
        .map(|item| {
            (
                item["event"]["source"].as_str().unwrap().to_string(),
                item["event"]["detail-type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("billing".to_string(), "Invoice".to_string()),
            ("github".to_string(), "push".to_string())
        ]
    );
    // The billing event's rule ran its job with the customer's name.
    let job_id = first_delivered_job(&server);
    server.wait_for_status(&job_id, "SUCCEEDED");
    assert_eq!(stdout(&server.cli(&["logs", &job_id])), "hello Grace\n");
    // Secrets are never shown.
    let listed = server.cli(&["-o", "json", "get", "webhooktriggers"]);
    assert!(!stdout(&listed).contains(SECRET), "{}", stdout(&listed));
}

/// A request the receiver got: its headers (lower-case names) and body.
pub(crate) type Received = (std::collections::BTreeMap<String, String>, String);

/// A tiny HTTP receiver for notifications: answers each POST with the next status of `statuses`
/// (the last one repeating) and records the requests' headers and bodies.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub(crate) statuses: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
}

impl Receiver {
    pub(crate) fn start(statuses: &[u16]) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let statuses = std::sync::Arc::new(std::sync::Mutex::new(statuses.to_vec()));
        let (seen, plan) = (requests.clone(), statuses.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = std::collections::BTreeMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let trimmed = line.trim_end();
                    if trimmed.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = trimmed.split_once(':') {
                        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                    }
                }
                let length: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = {
                    let mut plan = plan.lock().unwrap();
                    if plan.len() > 1 {
                        plan.remove(0)
                    } else {
                        plan[0]
                    }
                };
                seen.lock()
                    .unwrap()
                    .push((headers, String::from_utf8(body).unwrap()));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            url,
            requests,
            statuses,
        }
    }
}

#[test]
fn notifications_are_signed_retried_and_dead_lettered() {
    use batchctl_scheduler::core::webhooks::{verify, Profile};
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // The receivers listen on loopback, which notifications reach only where allowed.
    let server = crate::support::Server::start_with(
        None,
        &["--notification-allow-cidr".into(), "127.0.0.0/8".into()],
    );
    server.apply_examples();
    // The first receiver fails twice, then takes the event; the second always fails.
    let flaky = Receiver::start(&[500, 502, 200]);
    let down = Receiver::start(&[503]);
    server.apply_text(&format!(
        "apiVersion: batchctl/v1\nkind: Notification\nmetadata: {{name: ops}}\nspec:\n  eventPattern: {{source: [batchctl], detail: {{status: [FAILED]}}}}\n  endpoint: {}\n  secret: {SECRET}\n  retryPolicy: {{maximumRetryAttempts: 3}}\n---\napiVersion: batchctl/v1\nkind: Notification\nmetadata: {{name: pager}}\nspec:\n  eventPattern: {{source: [batchctl], detail: {{status: [FAILED]}}}}\n  endpoint: {}\n  retryPolicy: {{maximumRetryAttempts: 1}}\n",
        flaky.url, down.url
    ));
    let job = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--",
        "sh",
        "-c",
        "exit 4",
    ]);
    server.wait_for_status(&job, "FAILED");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while flaky.requests.lock().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the notification was not retried until it got through: {:?}\n{}",
            flaky.requests.lock().unwrap(),
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let requests = flaky.requests.lock().unwrap().clone();
    let ids: Vec<&String> = requests
        .iter()
        .map(|(headers, _)| &headers["webhook-id"])
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every retry carries the same webhook-id"
    );
    let (headers, body) = &requests[2];
    let event: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["detail"]["jobId"], job.as_str());
    assert_eq!(event["detail"]["exitCode"], 4);
    verify(
        Profile::StandardWebhooks,
        &[SECRET.to_string()],
        headers,
        body.as_bytes(),
        chrono::Utc::now().timestamp(),
    )
    .expect("the notification is signed per Standard Webhooks");

    // The pager endpoint never answers 2xx: after its retry, the delivery is a dead letter.
    let dead = loop {
        let letters = server.json(&["dlq", "list"]);
        if let Some(letter) = letters["items"].as_array().unwrap().first() {
            break letter.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(dead["notification"], "pager");
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["lastError"].as_str().unwrap().contains("503"),
        "{dead:#}"
    );
    assert_eq!(down.requests.lock().unwrap().len(), 2);
    // Once the endpoint is back, a redrive delivers it.
    *down.statuses.lock().unwrap() = vec![200];
    let output = server.cli(&["dlq", "redrive", "--notification", "pager"]);
    assert_eq!(
        stdout(&output),
        "1 dead letters sent again\n",
        "{}",
        stderr(&output)
    );
    while down.requests.lock().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the redriven letter was not sent"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(server.json(&["dlq", "list"])["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // A deleted notification sends nothing more: what it still had to send becomes dead
    // letters, which stay listable, and a redrive has nowhere to send them.
    *down.statuses.lock().unwrap() = vec![503];
    let second = server.submit_script("exit 5");
    server.wait_for_status(&second, "FAILED");
    while down.requests.lock().unwrap().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(30),
            "the second failure was not sent to pager"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = server.cli(&["delete", "notification", "pager"]);
    assert_eq!(
        stdout(&output),
        "notification/pager deleted\n",
        "{}",
        stderr(&output)
    );
    let letters = server.json(&["dlq", "list"]);
    let letter = &letters["items"][0];
    assert_eq!(letter["notification"], "pager", "{letters:#}");
    assert_eq!(letter["event"]["detail"]["jobId"], second.as_str());
    let output = server.cli(&["dlq", "redrive", "--notification", "pager"]);
    assert_eq!(stdout(&output), "0 dead letters sent again\n");
    // Past the 1 s backoff at which pager's retry would have gone out.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        down.requests.lock().unwrap().len(),
        4,
        "nothing more is sent"
    );
}

#[test]
fn events_watch_streams_matching_events_as_they_arrive() {
    use std::io::BufRead;
    let server = crate::support::Server::start(None);
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("pattern.yaml");
    std::fs::write(
        &pattern,
        "source: [shop]\ndetail: {total: [{numeric: ['>=', 100]}]}\n",
    )
    .unwrap();
    let mut watcher = Command::new(BINARY)
        .args(["events", "watch", "--after", "0", "--pattern"])
        .arg(&pattern)
        .env("BATCHCTL_SERVER", &server.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let put = |id: &str, total: u32| {
        let output = server.cli(&[
            "events",
            "put",
            "--source",
            "shop",
            "--detail-type",
            "Order",
            "--id",
            id,
            "--detail",
            &format!("{{\"total\": {total}}}"),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
    };
    put("small", 5);
    put("big", 250);
    let (lines_sender, lines) = std::sync::mpsc::channel();
    let stdout_pipe = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout_pipe).lines() {
            if lines_sender.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let first = lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the watcher printed the matching event");
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["id"], "big");
    // A later event arrives on the open stream.
    put("bigger", 900);
    let next = lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&next).unwrap()["id"],
        "bigger"
    );
    watcher.kill().unwrap();
    let _ = watcher.wait();
}

#[test]
fn events_accepted_before_a_kill_9_each_run_their_job_once_after_restart() {
    let mut server = crate::support::Server::start(None);
    server.apply_examples();
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: each}\nspec:\n  eventPattern: {source: [load]}\n  inputTransformer: {inputPathsMap: {n: $.detail.n}}\n  target: {jobQueue: default, jobDefinition: hello, parameters: {who: '<n>'}, containerOverrides: {command: ['true']}}\n",
    );
    let entries: Vec<serde_json::Value> = (0..100)
        .map(|n| serde_json::json!({"id": format!("load-{n}"), "source": "load", "detail-type": "Tick", "detail": {"n": n}}))
        .collect();
    let body = serde_json::json!({ "entries": entries }).to_string();
    let output = Command::new("curl")
        .args([
            "-s",
            "-f",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ])
        .arg(format!("{}/v1/events", server.url))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    // Acknowledged: now the server dies at once, mid-way through matching.
    server.kill_9();
    server.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let jobs = server.json(&["get", "jobs", "--limit", "1000"]);
        let mut whos: Vec<String> = jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["parameters"]["who"].as_str().unwrap().to_string())
            .collect();
        if whos.len() >= 100 {
            whos.sort_by_key(|who| who.parse::<u32>().unwrap());
            let expected: Vec<String> = (0..100).map(|n| n.to_string()).collect();
            assert_eq!(whos, expected, "every event ran its job exactly once");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} jobs",
            whos.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_watcher_sees_job_state_changes_without_any_rule() {
    use std::io::BufRead;
    let server = crate::support::Server::start(None);
    server.apply_examples();
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("pattern.json");
    std::fs::write(&pattern, r#"{"source": ["batchctl", "marker"]}"#).unwrap();
    let mut watcher = Command::new(BINARY)
        .args(["events", "watch", "--after", "0", "--pattern"])
        .arg(&pattern)
        .env("BATCHCTL_SERVER", &server.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_sender, lines) = std::sync::mpsc::channel();
    let stdout_pipe = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout_pipe).lines() {
            if lines_sender.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // Once the watcher prints the marker, its stream is open.
    let output = server.cli(&[
        "events",
        "put",
        "--source",
        "marker",
        "--detail-type",
        "Ready",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the marker");
    assert!(first.contains("\"marker\""), "{first}");
    let job = server.submit(&["--queue", "default", "--definition", "hello"]);
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("SUCCEEDED") {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no more job events; saw {statuses:?}"));
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["detail"]["jobId"] == job.as_str() {
            statuses.push(event["detail"]["status"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses, ["RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]);
    watcher.kill().unwrap();
    let _ = watcher.wait();
}

#[test]
fn a_rule_that_feeds_itself_is_cut_at_its_chain_depth_and_says_so() {
    let server = crate::support::Server::start(None);
    server.apply_examples();
    // Each job that succeeds submits another to the same queue: a loop, cut after 3 deliveries.
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: again}\nspec:\n  eventPattern: {source: [batchctl], detail-type: [Job State Change], detail: {status: [SUCCEEDED]}}\n  target: {jobQueue: default, jobDefinition: hello}\n  maxChainDepth: 3\n",
    );
    server.submit(&["--queue", "default", "--definition", "hello"]);
    let rule = crate::support::eventually(30, "the loop is cut", || {
        let rules = server.json(&["get", "rules"]);
        let deliveries = rules["items"][0]["status"]["recentDeliveries"].clone();
        let cut = deliveries
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["outcome"] == "FAILED");
        if cut {
            Ok(deliveries)
        } else {
            Err(deliveries.to_string())
        }
    });
    let failed = rule
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["outcome"] == "FAILED")
        .unwrap()
        .clone();
    assert!(
        failed["reason"].as_str().unwrap().starts_with(
            "loop detected: this event comes from a chain of 3 rule deliveries; the rule allows 3"
        ),
        "{failed}"
    );
    // The first job and three the rule submitted; nothing after the cut.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let jobs = server.json(&["get", "jobs"]);
    assert_eq!(jobs["items"].as_array().unwrap().len(), 4, "{jobs:#}");
    // And an event says so, for a notification to alert on.
    let events = server.json(&["events", "list"]);
    let announced: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["event"]["detail-type"] == "Rule Loop Detected")
        .collect();
    assert_eq!(announced.len(), 1, "{events:#}");
    assert_eq!(announced[0]["event"]["detail"]["rule"], "again");
    assert_eq!(announced[0]["event"]["detail"]["batchctlChainDepth"], 4);
}
