//! The OpenAPI document against the live server: schemathesis (PyPI) fuzzes every operation of
//! `/openapi.json` on SQLite and fails on a 5xx, an undocumented status code or content type, a
//! response that does not match its schema, or a method a path does not serve answered other
//! than 405.

use std::process::Command;

use crate::support::{required_program, stderr, stdout, tokens_file, Server};

const ADMIN: &str = "fuzz-admin-token-0123456789";

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    if !required_program("schemathesis", "pip install schemathesis") {
        return;
    }
    // With an admin token (everything may be tried) and without the process executor, so no
    // generated command runs on this host; the examples' queue and definition give the fuzzer
    // something real to submit to.
    let (dir, arguments) = tokens_file(&format!("admin {ADMIN}\n"));
    let mut server = Server::start_with(None, &arguments);
    server.token = Some(ADMIN.into());
    let hello =
        std::fs::read_to_string(crate::support::repository_root().join("examples/hello.yaml"))
            .unwrap()
            .replace("type: process", "type: docker");
    server.apply_text(&hello);

    let output = Command::new("schemathesis")
        .current_dir(dir.path())
        .args([
            "run",
            &format!("{}/openapi.json", server.url),
            "--header",
            &format!("Authorization: Bearer {ADMIN}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,unsupported_method",
            // The event stream is endless by design (the fuzzer reads whole answers); its
            // parameters are the same as GET /v1/events', which is fuzzed.
            "--exclude-path",
            "/v1/events/stream",
            "--max-examples",
            "25",
            "--seed",
            "20261130",
            "--request-timeout",
            "70",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--warnings",
            "off",
            "--no-color",
        ])
        .output()
        .expect("schemathesis runs");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{}\n{}\nserver log:\n{}",
        stdout(&output),
        stderr(&output),
        server.log()
    );
    assert!(
        stdout(&output).contains("No issues found"),
        "{}",
        stdout(&output)
    );
    assert!(server.is_running(), "the server survived the fuzzing");
}
