//! Array jobs and array dependencies (N_TO_N, SEQUENTIAL) through the CLI, as AWS Batch users
//! know them.

use serde_json::Value;

use crate::support::{stderr, stdout, Server};

fn summary(job: &Value, status: &str) -> u64 {
    job["arrayProperties"]["statusSummary"][status]
        .as_u64()
        .unwrap_or_else(|| panic!("no statusSummary.{status} in {job:#}"))
}

fn submit_array(server: &Server, size: &str, extra: &[&str], script: &str) -> String {
    let mut args = vec![
        "--queue",
        "default",
        "--definition",
        "hello",
        "--array-size",
        size,
    ];
    args.extend(extra);
    args.extend(["--", "sh", "-c", script]);
    server.submit(&args)
}

/// Submits `hello` depending on `dependency` (`jobId=ID[,condition=…]`).
fn submit_after(server: &Server, dependency: &str) -> String {
    server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--depends-on",
        dependency,
    ])
}

#[test]
fn an_array_runs_its_children_with_their_index_and_ends_with_them() {
    let server = Server::start(None);
    server.apply_examples();
    let parent = submit_array(
        &server,
        "5",
        &[],
        "echo \"child $BATCH_JOB_ARRAY_INDEX of $AWS_BATCH_JOB_ID ($AWS_BATCH_JOB_ARRAY_INDEX)\"",
    );
    let job = server.wait_for_status(&parent, "SUCCEEDED");
    assert_eq!(job["arrayProperties"]["size"], 5);
    assert_eq!(summary(&job, "SUCCEEDED"), 5);
    assert_eq!(summary(&job, "FAILED"), 0);
    assert_eq!(job["statusReason"], "All 5 array children succeeded");

    let logs = server.cli(&["logs", &format!("{parent}:3")]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(stdout(&logs), format!("child 3 of {parent}:3 (3)\n"));
    let child = server.job(&format!("{parent}:3"));
    assert_eq!(child["arrayProperties"]["index"], 3);
    assert_eq!(child["status"], "SUCCEEDED");

    // Children are listed under their parent, not among all jobs, as AWS Batch's ListJobs.
    let all = server.json(&["get", "jobs"]);
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [parent.as_str()]);
    let children = server.json(&["get", "jobs", "--array-job-id", &parent]);
    assert_eq!(children["items"].as_array().unwrap().len(), 5);
    let described = server.cli(&["describe", "job", &parent]);
    assert!(
        stdout(&described).contains("5 children: SUCCEEDED 5"),
        "{}",
        stdout(&described)
    );
}

#[test]
fn a_failed_child_fails_the_array_and_what_depends_on_it() {
    let server = Server::start(None);
    server.apply_examples();
    // hello retries twice; child 1 fails both attempts.
    let parent = submit_array(&server, "3", &[], "[ $BATCH_JOB_ARRAY_INDEX != 1 ]");
    let waiting = submit_after(&server, &format!("jobId={parent}"));
    let job = server.wait_for_status(&parent, "FAILED");
    assert_eq!(summary(&job, "SUCCEEDED"), 2);
    assert_eq!(summary(&job, "FAILED"), 1);
    assert_eq!(job["statusReason"], "1 of 3 array children failed");
    let child = server.job(&format!("{parent}:1"));
    assert_eq!(child["attempts"].as_array().unwrap().len(), 2);
    let waiting = server.wait_for_status(&waiting, "FAILED");
    assert_eq!(
        waiting["statusReason"],
        format!("Dependency {parent} failed")
    );
}

/// `condition=afterany` runs a clean-up after the array whatever its end, `condition=afternotok`
/// an alert only because it failed, and an alert on a job that succeeded fails, saying why.
#[test]
fn conditions_run_a_cleanup_after_any_end_and_an_alert_only_after_a_failure() {
    let server = Server::start(None);
    server.apply_examples();
    let parent = submit_array(&server, "2", &[], "[ $BATCH_JOB_ARRAY_INDEX != 1 ]");
    let after = |condition: &str, on: &str| {
        submit_after(&server, &format!("jobId={on},condition={condition}"))
    };
    let cleanup = after("afterany", &parent);
    let alert = after("afternotok", &parent);
    let job = server.job(&cleanup);
    assert_eq!(job["dependsOn"][0]["condition"], "afterany", "{job:#}");
    server.wait_for_status(&parent, "FAILED");
    server.wait_for_status(&cleanup, "SUCCEEDED");
    server.wait_for_status(&alert, "SUCCEEDED");
    let no_alert = after("afternotok", &cleanup);
    let failed = server.wait_for_status(&no_alert, "FAILED");
    assert_eq!(
        failed["statusReason"],
        format!("Dependency {cleanup} succeeded; the dependency's condition afternotok needed it to fail")
    );

    server.refused(
        &[
            "submit",
            "--queue",
            "default",
            "--definition",
            "hello",
            "--depends-on",
            &format!("jobId={parent},condition=later"),
        ],
        "dependsOn[0].condition",
    );
}

/// A success policy lets an array SUCCEED with tolerated failures, says so in its reason and
/// its `statusSummary`, and what depends on it runs; beyond the tolerance it fails as before.
#[test]
fn a_success_policy_tolerates_failed_children_sqlite() {
    a_success_policy_tolerates_failed_children(&Server::start(None));
}

/// On Postgres too: `succeededIndexes` reads the children's ends with a statement of its own.
#[test]
fn a_success_policy_tolerates_failed_children_postgres() {
    let Some(url) = crate::support::postgres_url() else {
        return;
    };
    a_success_policy_tolerates_failed_children(&Server::start(Some(url)));
}

fn a_success_policy_tolerates_failed_children(server: &Server) {
    server.apply_examples();
    // Children 1 and 3 fail (hello retries twice; both attempts fail).
    let odd_fail = "[ $((BATCH_JOB_ARRAY_INDEX % 2)) = 0 ]";
    let tolerant = submit_array(server, "4", &["--max-failed-children", "2"], odd_fail);
    let evens = submit_array(server, "4", &["--succeeded-indexes", "0,2"], odd_fail);
    let strict = submit_array(server, "4", &["--succeeded-indexes", "0-1"], odd_fail);
    let after = submit_after(server, &format!("jobId={tolerant}"));
    let job = server.wait_for_status(&tolerant, "SUCCEEDED");
    assert_eq!(summary(&job, "FAILED"), 2);
    assert_eq!(summary(&job, "SUCCEEDED"), 2);
    assert_eq!(
        job["statusReason"],
        "2 of 4 array children failed; succeeded as successPolicy.maxFailedChildren is 2"
    );
    assert_eq!(
        job["arrayProperties"]["successPolicy"]["maxFailedChildren"],
        2
    );
    let job = server.wait_for_status(&evens, "SUCCEEDED");
    assert_eq!(
        job["arrayProperties"]["successPolicy"]["succeededIndexes"],
        "0,2"
    );
    let job = server.wait_for_status(&strict, "FAILED");
    assert_eq!(job["statusReason"], "2 of 4 array children failed");
    server.wait_for_status(&after, "SUCCEEDED");

    server.refused(
        &[
            "submit",
            "--queue",
            "default",
            "--definition",
            "hello",
            "--array-size",
            "4",
            "--succeeded-indexes",
            "0-9",
        ],
        "arrayProperties.successPolicy.succeededIndexes",
    );
}

#[test]
fn sequential_children_run_one_after_another() {
    let server = Server::start(None);
    server.apply_examples();
    let trace = server.data_dir.join("trace");
    let script = format!(
        "echo start $BATCH_JOB_ARRAY_INDEX >> {0}; sleep 0.2; echo end $BATCH_JOB_ARRAY_INDEX >> {0}",
        trace.display()
    );
    // The environment has room for four at once; SEQUENTIAL must still run them one by one.
    let parent = submit_array(&server, "4", &["--depends-on", "type=SEQUENTIAL"], &script);
    let job = server.wait_for_status(&parent, "SUCCEEDED");
    assert_eq!(summary(&job, "SUCCEEDED"), 4);
    assert_eq!(
        job["dependsOn"],
        serde_json::json!([{"type": "SEQUENTIAL"}])
    );
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "start 0\nend 0\nstart 1\nend 1\nstart 2\nend 2\nstart 3\nend 3\n"
    );

    // A failed child fails every child after it, naming the one it waited for.
    let parent = submit_array(
        &server,
        "4",
        &["--depends-on", "type=SEQUENTIAL"],
        "[ $BATCH_JOB_ARRAY_INDEX != 1 ]",
    );
    let job = server.wait_for_status(&parent, "FAILED");
    assert_eq!(summary(&job, "SUCCEEDED"), 1);
    assert_eq!(summary(&job, "FAILED"), 3);
    assert_eq!(
        server.job(&format!("{parent}:2"))["statusReason"],
        format!("Dependency {parent}:1 failed")
    );
    assert_eq!(
        server.job(&format!("{parent}:3"))["statusReason"],
        format!("Dependency {parent}:2 failed")
    );
}

#[test]
fn n_to_n_children_wait_for_their_partners_only() {
    let server = Server::start(None);
    server.apply_examples();
    let marks = server.data_dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // Child 2 of the first array waits for a file the test creates; its partner must wait too,
    // while the others run.
    let gate = server.data_dir.join("gate");
    let first_script = format!(
        "if [ $BATCH_JOB_ARRAY_INDEX = 2 ]; then while [ ! -e {} ]; do sleep 0.05; done; fi; \
         [ $BATCH_JOB_ARRAY_INDEX != 1 ]",
        gate.display()
    );
    let first = submit_array(&server, "3", &[], &first_script);
    let second_script = format!("touch {}/$BATCH_JOB_ARRAY_INDEX", marks.display());
    let second = submit_array(
        &server,
        "3",
        &["--depends-on", &format!("jobId={first},type=N_TO_N")],
        &second_script,
    );
    server.wait_for_status(&format!("{second}:0"), "SUCCEEDED");
    let failed = server.wait_for_status(&format!("{second}:1"), "FAILED");
    assert_eq!(
        failed["statusReason"],
        format!("Dependency {first}:1 failed")
    );
    let held = server.job(&format!("{second}:2"));
    assert_eq!(held["status"], "PENDING", "{held:#}");
    let why = server.json(&["why", &format!("{second}:2")]);
    assert_eq!(why["holds"][0]["type"], "waitingForDependencies");
    assert_eq!(why["holds"][0]["jobs"][0]["jobId"], format!("{first}:2"));
    let parent_why = server.json(&["why", &second]);
    assert_eq!(parent_why["holds"][0]["type"], "waitingForArrayChildren");
    assert_eq!(parent_why["holds"][0]["unfinished"], 1);

    std::fs::write(&gate, "").unwrap();
    server.wait_for_status(&format!("{second}:2"), "SUCCEEDED");
    let job = server.wait_for_status(&second, "FAILED");
    assert_eq!(summary(&job, "SUCCEEDED"), 2);
    let mut made: Vec<String> = std::fs::read_dir(&marks)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    made.sort();
    assert_eq!(made, ["0", "2"]);
}

#[test]
fn cancelling_and_terminating_an_array_stop_its_children() {
    let server = Server::start(None);
    server.apply_examples();
    // One vCPU of room: one child runs, the others wait RUNNABLE.
    server.apply_text("apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: local}\nspec: {type: process, maxVcpus: 1, maxMemoryMiB: 4096}\n");
    let parent = submit_array(&server, "3", &[], "sleep 300");
    server.wait_for_status(&format!("{parent}:0"), "RUNNING");
    server.wait_for_status(&format!("{parent}:2"), "RUNNABLE");
    let output = server.cli(&["cancel", &parent, "--reason", "not today"]);
    assert!(output.status.success(), "{}", stderr(&output));
    for index in [1, 2] {
        let child = server.wait_for_status(&format!("{parent}:{index}"), "FAILED");
        assert_eq!(child["statusReason"], "not today");
    }
    // Cancel leaves started children running, as AWS Batch; the parent waits for them.
    assert_eq!(server.job(&format!("{parent}:0"))["status"], "RUNNING");
    assert_eq!(server.job(&parent)["status"], "PENDING");

    let output = server.cli(&["terminate", &parent, "--reason", "stop it all"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let child = server.wait_for_status(&format!("{parent}:0"), "FAILED");
    assert_eq!(child["statusReason"], "stop it all");
    let job = server.wait_for_status(&parent, "FAILED");
    assert_eq!(job["statusReason"], "stop it all");
    assert_eq!(summary(&job, "FAILED"), 3);
}

#[test]
fn array_children_each_get_the_attempt_timeout() {
    let server = Server::start(None);
    server.apply_examples();
    server.apply_text("apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: quick}\nspec:\n  containerProperties: {image: x, command: [sleep, '30']}\n  timeout: {attemptDurationSeconds: 1}\n");
    let parent = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "quick",
        "--array-size",
        "2",
    ]);
    let job = server.wait_for_status(&parent, "FAILED");
    assert_eq!(summary(&job, "FAILED"), 2);
    for index in [0, 1] {
        assert_eq!(
            server.job(&format!("{parent}:{index}"))["statusReason"],
            "Job attempt duration exceeded timeout of 1 seconds"
        );
    }
}

#[test]
fn bad_array_submits_name_the_field() {
    let server = Server::start(None);
    server.apply_examples();
    let other = submit_array(&server, "2", &[], "true");
    let single = server.submit(&["--queue", "default", "--definition", "hello"]);
    let cases: [(Vec<String>, &str); 6] = [
        (
            vec!["--array-size".into(), "1".into()],
            "arrayProperties.size: is 1; an array job has 2 to 100000 children",
        ),
        (
            vec!["--array-size".into(), "100001".into()],
            "arrayProperties.size: is 100001",
        ),
        (
            vec!["--depends-on".into(), "type=SEQUENTIAL".into()],
            "dependsOn[0].type: SEQUENTIAL dependencies are for array jobs",
        ),
        (
            vec![
                "--array-size".into(),
                "3".into(),
                "--depends-on".into(),
                format!("jobId={other},type=N_TO_N"),
            ],
            "needs an array job of the same size",
        ),
        (
            vec![
                "--array-size".into(),
                "2".into(),
                "--depends-on".into(),
                format!("jobId={single},type=N_TO_N"),
            ],
            "needs an array job of the same size",
        ),
        (
            vec!["--depends-on".into(), "type=ALL_AT_ONCE".into()],
            "dependsOn[0].type: \"ALL_AT_ONCE\" is not a dependency type",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["submit", "--queue", "default", "--definition", "hello"];
        args.extend(extra.iter().map(String::as_str));
        let output = server.cli(&args);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // Nothing half-written: only the two jobs submitted above exist.
    assert_eq!(
        server.json(&["get", "jobs"])["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// `--max-concurrency 2` runs at most two children at once on an environment with room for four,
/// releases the next in index order as one ends, says in `why` what a waiting child waits for,
/// and holds up no other job of the queue.
#[test]
fn max_concurrency_caps_the_children_in_flight_sqlite() {
    max_concurrency_caps_the_children_in_flight(&Server::start(None));
}

#[test]
fn max_concurrency_caps_the_children_in_flight_postgres() {
    let Some(url) = crate::support::postgres_url() else {
        return;
    };
    max_concurrency_caps_the_children_in_flight(&Server::start(Some(url)));
}

fn max_concurrency_caps_the_children_in_flight(server: &Server) {
    server.apply_examples();
    let trace = server.data_dir.join("trace");
    let gate = server.data_dir.join("gate");
    // Each child notes its start, waits for the gate, works a little and notes its end.
    let script = format!(
        "echo start $BATCH_JOB_ARRAY_INDEX >> {trace}; \
         while [ ! -e {gate} ]; do sleep 0.02; done; sleep 0.2; \
         echo end $BATCH_JOB_ARRAY_INDEX >> {trace}",
        trace = trace.display(),
        gate = gate.display()
    );
    let parent = submit_array(server, "6", &["--max-concurrency", "2"], &script);
    assert_eq!(server.job(&parent)["arrayProperties"]["maxConcurrency"], 2);
    for index in [0, 1] {
        server.wait_for_status(&format!("{parent}:{index}"), "RUNNING");
    }
    // A job submitted after the array starts at once: the environment has room for four.
    let single = server.submit_script("true");
    server.wait_for_status(&single, "SUCCEEDED");
    let waiting = server.job(&format!("{parent}:2"));
    assert_eq!(waiting["status"], "PENDING", "{waiting:#}");
    let why = server.json(&["why", &format!("{parent}:2")]);
    assert_eq!(why["holds"][0]["type"], "arrayAtMaxConcurrency", "{why:#}");
    assert_eq!(why["holds"][0]["arrayJobId"], parent.as_str());
    assert_eq!(why["holds"][0]["maxConcurrency"], 2);
    assert_eq!(why["holds"][0]["inFlight"], 2);
    let said = server.cli(&["why", &format!("{parent}:2")]);
    assert!(
        stdout(&said).contains("runs at most 2 children at once (maxConcurrency)"),
        "{}",
        stdout(&said)
    );

    std::fs::write(&gate, "").unwrap();
    let job = server.wait_for_status(&parent, "SUCCEEDED");
    assert_eq!(summary(&job, "SUCCEEDED"), 6);
    // Never more than two between a start and its end, and two at once most of the time.
    let trace = std::fs::read_to_string(&trace).unwrap();
    let (most, mut started) = crate::support::most_at_once(&trace);
    assert_eq!(
        most, 2,
        "at most two at once, and two did run together:\n{trace}"
    );
    // The first two released are the lowest indexes; every child ran once.
    let mut first_two = started[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, ["0", "1"], "released in index order:\n{trace}");
    started.sort();
    assert_eq!(started, ["0", "1", "2", "3", "4", "5"], "{trace}");

    for (size, max, expected) in [
        (
            "4",
            "0",
            "arrayProperties.maxConcurrency: is 0; give from 1 to the array's 4 children",
        ),
        ("4", "5", "arrayProperties.maxConcurrency: is 5"),
    ] {
        server.refused(
            &[
                "submit",
                "--queue",
                "default",
                "--definition",
                "hello",
                "--array-size",
                size,
                "--max-concurrency",
                max,
            ],
            expected,
        );
    }
}
