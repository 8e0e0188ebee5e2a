//! The layering the compiler keeps: `batchctl-core` depends on data crates only. A dependency
//! that does I/O (added directly, or pulled in by another) fails this test.

use std::process::Command;

const IO_CRATES: &[&str] = &[
    "sqlx",
    "tokio",
    "axum",
    "hyper",
    "reqwest",
    "bollard",
    "kube",
    "k8s-openapi",
    "nix",
    "futures",
    "tracing",
    "batchctl-executor",
    "batchctl-scheduler",
];

#[test]
fn the_core_crate_depends_on_no_io_crate() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "batchctl-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| IO_CRATES.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "batchctl-core depends on {found:?}:\n{tree}"
    );
    assert!(tree.contains("batchctl-core"), "{tree}");
}
