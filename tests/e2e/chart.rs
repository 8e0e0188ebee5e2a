//! The Helm chart: linted in strict mode and rendered by real Helm (the PyPI package
//! helm-python-sdk bundles Helm's library), by charts/check.py; then the resources the chart has
//! every server apply are applied by the real server.

use std::process::Command;

use crate::support::{repository_root, stderr, stdout, Server};

/// Whether Python can import helm_python; in CI it must.
fn helm_python_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import helm_python, yaml"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but python3 cannot import helm_python and yaml: pip install helm-python-sdk pyyaml");
        }
        eprintln!("\n!!! SKIPPING the Helm chart checks: python3 cannot import helm_python (pip install helm-python-sdk pyyaml) !!!\n");
    }
    found
}

#[test]
fn the_chart_lints_strictly_renders_as_checked_and_declares_valid_resources() {
    if !helm_python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("python3")
        .arg(repository_root().join("charts/check.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("chart checks: 0 failed"));

    // What the chart's servers apply at start is valid to the real server.
    let resources = dir.path().join("resources.yaml");
    let server = Server::start_with(None, &["--apply".into(), resources.display().to_string()]);
    let environments = server.json(&["get", "computeenvironments"]);
    let environment = &environments["items"][0];
    assert_eq!(
        environment["metadata"]["name"], "kubernetes",
        "{environments:#}"
    );
    assert_eq!(environment["spec"]["type"], "kubernetes");
    assert_eq!(environment["spec"]["namespace"], "batch-system");
    let queues = server.json(&["get", "jobqueues"]);
    assert_eq!(queues["items"][0]["metadata"]["name"], "default");
    // The single-replica values' environment, with host paths and pod defaults, applies too.
    let single = dir.path().join("single-replica-resources.yaml");
    let output = server.cli(&["apply", "-f", single.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let environments = server.json(&["get", "computeenvironments"]);
    assert_eq!(
        environments["items"][0]["spec"]["podDefaults"]["nodeSelector"]["pool"], "batch",
        "{environments:#}"
    );
}
