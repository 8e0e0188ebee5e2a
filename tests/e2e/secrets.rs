//! Secrets through the real binary: sealed at rest, handed to attempts and to nothing else, moved to
//! a new key, and refused by a server without a key.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{postgres_url, stderr, stdout, Server, BINARY};

/// The values under test. None of them may appear in anything the server says or keeps.
const TOKEN: &str = "tok-7d1f0c2a9b-Sealed-Value";
const HOOK_SECRET: &str = "whsec_c2VhbGVkLWhvb2stc2VjcmV0LWJ5dGVz";
const NOTIFY_SECRET: &str = "whsec_bm90aWZpY2F0aW9uLXNpZ25pbmcta2V5";

#[test]
fn secrets_reach_attempts_and_nothing_else_sqlite() {
    secrets_reach_attempts_and_nothing_else(None);
}

#[test]
fn secrets_reach_attempts_and_nothing_else_postgres() {
    if let Some(url) = postgres_url() {
        secrets_reach_attempts_and_nothing_else(Some(url));
    }
}

fn secrets_reach_attempts_and_nothing_else(database_url: Option<String>) {
    let mut server = Server::start(database_url.clone());
    server.apply_examples();
    // The value is read from a file by `apply` (relative to the manifest), as kubectl's
    // --from-file; the job compares it with the file it was read from, so no command holds it.
    let token_file = server.data_dir.join("token.txt");
    std::fs::write(&token_file, TOKEN).unwrap();
    let manifest = server.data_dir.join("secrets.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: batchctl/v1\nkind: Secret\nmetadata: {{name: db-token}}\nspec: {{valueFrom: {{file: token.txt}}}}\n---\n\
             apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: uses-secret}}\nspec:\n  containerProperties:\n\
             \x20   image: busybox\n    command: [sh, -c, 'test \"$TOKEN\" = \"$(cat {file})\" && echo token-matches']\n\
             \x20   secrets: [{{name: TOKEN, valueFrom: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-token-AbC123'}}]\n---\n\
             apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: needs-missing}}\nspec:\n  containerProperties:\n\
             \x20   image: busybox\n    command: [sh, -c, 'echo never']\n    secrets: [{{name: X, valueFrom: nothing-here}}]\n---\n\
             apiVersion: batchctl/v1\nkind: WebhookTrigger\nmetadata: {{name: billing}}\n\
             spec: {{profile: standard-webhooks, secrets: ['{HOOK_SECRET}'], source: billing, detailType: Invoice}}\n---\n\
             apiVersion: batchctl/v1\nkind: Notification\nmetadata: {{name: ops}}\nspec:\n\
             \x20 eventPattern: {{source: [batchctl], detail: {{status: [FAILED]}}}}\n  endpoint: http://127.0.0.1:9/hook\n\
             \x20 secret: {NOTIFY_SECRET}\n  retryPolicy: {{maximumRetryAttempts: 0}}\n",
            file = token_file.display()
        ),
    )
    .unwrap();
    let output = server.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Applying the same again changes nothing (the stored spec keeps a digest in the value's place).
    let again = server.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        stdout(&again).contains("secret/db-token unchanged"),
        "{}",
        stdout(&again)
    );

    let job = server.submit(&["--queue", "default", "--definition", "uses-secret"]);
    server.wait_for_status(&job, "SUCCEEDED");
    let logs = stdout(&server.cli(&["logs", &job]));
    assert!(logs.contains("token-matches"), "{logs}");
    let missing = server.submit(&["--queue", "default", "--definition", "needs-missing"]);
    let failed = server.wait_for_status(&missing, "FAILED");
    let reason = failed["statusReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("nothing-here") && reason.contains("does not exist"),
        "{failed:#}"
    );
    // The trigger's secret is unsealed to check a signature; a patch that leaves it keeps it.
    assert_eq!(deliver(&server, "msg_1"), "202");
    let patched = curl(
        &server,
        &[
            "-X",
            "PATCH",
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"detailType": "Bill"}"#,
        ],
        "/v1/webhooktriggers/billing",
    );
    assert!(patched.contains("configured"), "{patched}");
    assert_eq!(deliver(&server, "msg_2"), "202");

    // Everything the server says: API answers, the CLI's, the console's pages, events, its log.
    let mut said = String::new();
    for kind in [
        "secrets",
        "definitions",
        "webhooktriggers",
        "notifications",
        "jobs",
    ] {
        said += &stdout(&server.cli(&["get", kind, "-o", "json"]));
    }
    for job in [&job, &missing] {
        said += &stdout(&server.cli(&["describe", "job", job]));
        said += &stdout(&server.cli(&["-o", "json", "describe", "job", job]));
        said += &stdout(&server.cli(&["why", job]));
        said += &curl(&server, &[], &format!("/ui/jobs/{job}"));
    }
    said += &stdout(&server.cli(&["describe", "secret", "db-token"]));
    said += &stdout(&server.cli(&["describe", "webhooktrigger", "billing"]));
    for path in [
        "/v1/events",
        "/v1/secrets",
        "/v1/dlq",
        "/ui/overview",
        "/ui/notifications",
        "/ui/events",
    ] {
        said += &curl(&server, &[], path);
    }
    said += &server.log();
    assert!(
        said.contains("db-token") && said.contains("billing"),
        "the answers were read"
    );
    for value in [TOKEN, HOOK_SECRET, NOTIFY_SECRET] {
        assert!(!said.contains(value), "a secret was shown: {value}");
    }
    // And what it keeps: the database, in the clear nowhere.
    let stored = stored_text(&server, database_url.as_deref());
    assert!(stored.contains("batchctl-sealed:v1:"), "values are sealed");
    for value in [TOKEN, HOOK_SECRET, NOTIFY_SECRET] {
        assert!(
            !stored.contains(value),
            "a secret is stored in the clear: {value}"
        );
    }

    // Rotation: a new key, the old one named as previous; start-up re-seals everything.
    let old_key = server.secret_key_file();
    let new_key = server.data_dir.join("new.key");
    std::fs::copy(&old_key, server.data_dir.join("old.key")).unwrap();
    let made = Command::new("sh")
        .arg("-c")
        .arg("umask 077; head -c 32 /dev/urandom | base64 > \"$1\"")
        .arg("sh")
        .arg(&new_key)
        .status()
        .unwrap();
    assert!(made.success());
    server.extra_arguments = vec![
        "--secret-key-file".into(),
        new_key.display().to_string(),
        "--previous-secret-key-file".into(),
        server.data_dir.join("old.key").display().to_string(),
    ];
    server.kill_9();
    server.restart();
    assert!(
        server
            .log()
            .contains("sealed secret values with the current key"),
        "{}",
        server.log()
    );
    // Then the old key is not needed any more.
    server.extra_arguments.truncate(2);
    server.kill_9();
    server.restart();
    let job = server.submit(&["--queue", "default", "--definition", "uses-secret"]);
    server.wait_for_status(&job, "SUCCEEDED");
    assert_eq!(deliver(&server, "msg_3"), "202");
    let stored = stored_text(&server, database_url.as_deref());
    for value in [TOKEN, HOOK_SECRET, NOTIFY_SECRET] {
        assert!(
            !stored.contains(value),
            "a secret is stored in the clear after rotation"
        );
    }

    // A server given only the retired key cannot read what is sealed, and says so instead of
    // starting.
    server.kill_9();
    let mut command = Command::new(BINARY);
    command
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .arg("--secret-key-file")
        .arg(server.data_dir.join("old.key"));
    if let Some(url) = &database_url {
        command.args(["--database-url", url]);
    }
    let output = run_briefly(command);
    assert!(!output.status.success(), "started with the wrong key");
    let error = stderr(&output);
    assert!(error.contains("was not given"), "{error}");
    server.restart();
}

/// A server without a key refuses every secret, saying how to make a key, and stores nothing.
#[test]
fn without_a_key_no_secret_is_stored() {
    let server = Server::start_without_secret_key(None);
    for document in [
        "apiVersion: batchctl/v1\nkind: Secret\nmetadata: {name: s}\nspec: {value: some-value}\n".to_string(),
        format!("apiVersion: batchctl/v1\nkind: WebhookTrigger\nmetadata: {{name: w}}\nspec: {{profile: standard-webhooks, secrets: ['{HOOK_SECRET}'], source: s}}\n"),
    ] {
        let output = server.cli_with_stdin(&["apply", "-f", "-"], &document);
        assert!(!output.status.success());
        let error = stderr(&output);
        assert!(
            error.contains("no secret key") && error.contains("--secret-key-file") && error.contains("head -c 32"),
            "{error}"
        );
        assert!(!error.contains("some-value") && !error.contains(HOOK_SECRET));
    }
    assert_eq!(
        server.json(&["get", "secrets"])["items"],
        serde_json::json!([])
    );
    assert_eq!(
        server.json(&["get", "webhooktriggers"])["items"],
        serde_json::json!([])
    );
    // A value of the wrong type is refused without being quoted.
    let output = server.cli_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batchctl/v1\nkind: Secret\nmetadata: {name: s}\nspec: {value: 123456789}\n",
    );
    assert!(!output.status.success());
    assert!(
        !stderr(&output).contains("123456789"),
        "{}",
        stderr(&output)
    );
}

/// A signed Standard Webhooks delivery to the `billing` trigger; the HTTP status.
fn deliver(server: &Server, id: &str) -> String {
    use batchctl_scheduler::core::webhooks::standard_signature;
    let body = r#"{"type": "invoice.paid"}"#;
    let now = chrono::Utc::now().timestamp();
    let signature = standard_signature(HOOK_SECRET, id, now, body.as_bytes()).unwrap();
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("webhook-id: {id}")])
        .args(["-H", &format!("webhook-timestamp: {now}")])
        .args(["-H", &format!("webhook-signature: {signature}")])
        .args([
            "--data-binary",
            body,
            &format!("{}/v1/hooks/billing", server.url),
        ])
        .output()
        .unwrap();
    stdout(&output)
}

fn curl(server: &Server, arguments: &[&str], path: &str) -> String {
    let output = Command::new("curl")
        .arg("-s")
        .args(arguments)
        .arg(format!("{}{path}", server.url))
        .output()
        .unwrap();
    stdout(&output)
}

/// Every byte the database keeps of the resources that hold secrets: SQLite's file and its WAL,
/// or Postgres' rows.
fn stored_text(server: &Server, database_url: Option<&str>) -> String {
    match database_url {
        None => ["batchctl.db", "batchctl.db-wal"]
            .iter()
            .filter_map(|file| std::fs::read(server.data_dir.join(file)).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect(),
        Some(url) => {
            let output = Command::new("psql")
                .args([url, "-At", "-c"])
                .arg(
                    "SELECT spec || model FROM secrets UNION ALL SELECT spec || model FROM webhook_triggers \
                     UNION ALL SELECT spec || model FROM notifications",
                )
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            stdout(&output)
        }
    }
}

/// Runs a command that should exit by itself within 30 s, killing it if it does not.
fn run_briefly(mut command: Command) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}
