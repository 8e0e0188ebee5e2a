//! API tokens: scopes, 401 versus 403, and no open API on a network address.

use std::process::Command;

use crate::support::{stderr, Server, BINARY};

const READER: &str = "reader-token-0123456789";
const SUBMITTER: &str = "submitter-token-0123456789";
const ADMIN: &str = "admin-token-0123456789abc";

#[test]
fn tokens_grant_their_scopes_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        format!("read {READER}\nsubmit {SUBMITTER}\nadmin {ADMIN}\n"),
    )
    .unwrap();
    // examples/hello.yaml has a process environment, which a server with tokens runs only
    // when told to.
    let mut server = Server::start_with(
        None,
        &[
            "--tokens-file".into(),
            file.display().to_string(),
            "--enable-process-executor".into(),
        ],
    );

    // No token: 401, saying what to send.
    let output = server.cli(&["get", "jobs"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("a valid API token is required"),
        "{}",
        stderr(&output)
    );
    server.token = Some("an-unknown-token-0123456789".into());
    assert!(stderr(&server.cli(&["get", "jobs"])).contains("a valid API token is required"));

    // An admin applies; a reader reads but may not submit (403); a submitter submits but may not apply.
    server.token = Some(ADMIN.into());
    server.apply_examples();
    server.token = Some(READER.into());
    assert!(server.cli(&["get", "jobs"]).status.success());
    let output = server.cli(&["submit", "--queue", "default", "--definition", "hello"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("this token has the read scope; this request needs submit"),
        "{}",
        stderr(&output)
    );
    server.token = Some(SUBMITTER.into());
    let id = server.submit(&["--queue", "default", "--definition", "hello"]);
    server.wait_for_status(&id, "SUCCEEDED");
    let output = server.cli(&["apply", "-f", "examples/hello.yaml"]);
    assert!(
        stderr(&output).contains("this request needs admin"),
        "{}",
        stderr(&output)
    );

    // Health checks need no token.
    let health = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/healthz", server.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "200");
    let unauthorized = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .arg(format!("{}/v1/jobs", server.url))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&unauthorized.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
}

#[test]
fn an_open_api_is_refused_on_a_network_address() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("BATCHCTL_TOKENS")
        .env_remove("BATCHCTL_TOKENS_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not a loopback address) needs API tokens"),
        "{}",
        stderr(&output)
    );
    let output = Command::new(BINARY)
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("BATCHCTL_TOKENS", "admin short")
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("the token is shorter than 16 characters"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn every_change_is_an_audit_event_with_its_scope_and_rules_act_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("submit {SUBMITTER}\nadmin {ADMIN}\n")).unwrap();
    let mut server = Server::start_with(
        None,
        &[
            "--tokens-file".into(),
            file.display().to_string(),
            "--enable-process-executor".into(),
        ],
    );
    server.token = Some(ADMIN.into());
    server.apply_examples();
    // A rule on the audit trail: deleting a queue runs a job.
    server.apply_text("apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: spare}\nspec:\n  priority: 1\n  state: DISABLED\n  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]\n---\napiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: on-queue-deleted}\nspec:\n  eventPattern: {source: [batchctl.audit], detail-type: [Resource Change], detail: {kind: [JobQueue], action: [deleted]}}\n  target: {jobQueue: default, jobDefinition: hello}\n");
    assert!(server.cli(&["delete", "queue", "spare"]).status.success());
    server.token = Some(SUBMITTER.into());
    let job = server.submit(&["--queue", "default", "--definition", "hello"]);
    server.wait_for_status(&job, "SUCCEEDED");
    assert!(server.cli(&["delete", "job", &job]).status.success());

    let events = server.json(&["events", "list"]);
    let audit: Vec<(String, String, String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["event"])
        .filter(|event| event["source"] == "batchctl.audit")
        .map(|event| {
            let detail = &event["detail"];
            let field = |name: &str| detail[name].as_str().unwrap_or_default().to_string();
            (
                field("kind"),
                field("name"),
                field("action"),
                field("scope"),
            )
        })
        .collect();
    let expect = |kind: &str, name: &str, action: &str, scope: &str| {
        let wanted = (kind.into(), name.into(), action.into(), scope.into());
        assert!(audit.contains(&wanted), "no {wanted:?} in {audit:#?}");
    };
    expect("ComputeEnvironment", "local", "configured", "admin");
    expect("JobDefinition", "hello", "created", "admin");
    expect("EventRule", "on-queue-deleted", "created", "admin");
    expect("JobQueue", "spare", "deleted", "admin");
    expect("Job", &job, "deleted", "submit");
    // The rule ran its job on the queue's deletion.
    crate::support::eventually(20, "the rule's job", || {
        let jobs = server.json(&["get", "jobs"]);
        match jobs["items"].as_array().unwrap().len() {
            n if n >= 1 => Ok(()),
            n => Err(format!("{n} jobs")),
        }
    });
    // No one else may speak as batchctl.audit.
    server.token = Some(ADMIN.into());
    let output = server.cli(&[
        "events",
        "put",
        "--source",
        "batchctl.audit",
        "--detail-type",
        "Resource Change",
    ]);
    assert!(
        stderr(&output).contains("source \"batchctl.audit\" is reserved"),
        "{}",
        stderr(&output)
    );
}
