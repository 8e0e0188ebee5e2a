//! Events and rules through the CLI.

use std::process::Command;

use crate::support::{stderr, stdout, BINARY};

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
