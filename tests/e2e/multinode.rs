//! Multi-node parallel jobs (AWS Batch's `type: multinode`) through the real server and CLI: on the
//! real Docker engine, three nodes on a network of their own whose workers reach the main node
//! over TCP; gang placement; per-node logs; retries that restart every node; refusals.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::docker_executor::{containers_of, test_image};
use crate::support::{stderr, stdout, Server};

/// The main node (0) answers every connection with `welcome-<attempt>` and what it has been sent
/// so far, and keeps what it is sent (holding the connection a second: busybox's `nc` ends with
/// its input), until both workers have said `done`; it prints the distinct greetings it got.
/// Each worker sends its greeting, then its `done`, each until an answer shows the main node kept
/// it: an answer alone does not say so, since the main node's `nc` may end with its input before
/// reading what a worker starved of CPU sends late (the likely cause of a retried attempt, under
/// the whole suite, waiting out its timeout for a `done`). A worker prints the first answer
/// and its variables, then would sleep for five minutes — it ends only because the main node
/// did. The main node fails its first attempt after the exchange when `FAIL_FIRST` is set, so a
/// retry is seen to start every node again.
fn definition(image: &str, name: &str, extra_main_environment: &str) -> String {
    format!(
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: {name}}}\nspec:\n\
         \x20 type: multinode\n  retryStrategy: {{attempts: 2}}\n  timeout: {{attemptDurationSeconds: 120}}\n\
         \x20 nodeProperties:\n    numNodes: 3\n    mainNode: 0\n    nodeRangeProperties:\n\
         \x20   - targetNodes: '0'\n      container:\n        image: {image}\n\
         \x20       command: [sh, -c, 'touch /tmp/got; while [ $(grep ^done /tmp/got | sort -u | wc -l) -lt 2 ]; do (echo welcome-$AWS_BATCH_JOB_ATTEMPT; cat /tmp/got; sleep 1) | nc -l -p 7000 >> /tmp/got 2>/dev/null || sleep 0.1; done; grep ^hello /tmp/got | sort -u; echo main=$AWS_BATCH_JOB_NODE_INDEX of $AWS_BATCH_JOB_NUM_NODES address=${{AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS:-none}}; if [ -n \"$FAIL_FIRST\" ] && [ $AWS_BATCH_JOB_ATTEMPT = 1 ]; then exit 7; fi']\n\
         \x20       environment: [{{name: ROLE, value: main}}{extra_main_environment}]\n\
         \x20       resourceRequirements: [{{type: VCPU, value: '1'}}, {{type: MEMORY, value: '64'}}]\n\
         \x20   - targetNodes: '1:'\n      container:\n        image: {image}\n\
         \x20       command: [sh, -c, 'until echo hello from $AWS_BATCH_JOB_NODE_INDEX | nc -w 2 $AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS 7000 > /tmp/reply 2>/dev/null && grep -q \"^hello from $AWS_BATCH_JOB_NODE_INDEX\" /tmp/reply; do sleep 0.2; done; head -1 /tmp/reply; echo node=$AWS_BATCH_JOB_NODE_INDEX main=$AWS_BATCH_JOB_MAIN_NODE_INDEX id=$AWS_BATCH_JOB_ID; until echo done $AWS_BATCH_JOB_NODE_INDEX | nc -w 2 $AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS 7000 > /tmp/ack 2>/dev/null && grep -q \"^done $AWS_BATCH_JOB_NODE_INDEX\" /tmp/ack; do sleep 0.2; done; sleep 300']\n\
         \x20       resourceRequirements: [{{type: VCPU, value: '1'}}, {{type: MEMORY, value: '64'}}]\n"
    )
}

/// How long a gang of three containers may take to start, or to exchange its messages and end,
/// under the whole suite's load; well under the workers' five-minute sleep, so a job that ends
/// within twice this ended with its main node.
const GANG: Duration = Duration::from_secs(90);

fn networks(prefix: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["network", "ls", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn three_docker_nodes_find_their_main_node_and_end_with_it() {
    let Some(engine) = test_image() else { return };
    let image = engine.image;
    let server = Server::start(None);
    server.apply_text(&format!(
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {{name: gang}}\n\
         spec: {{type: docker, maxVcpus: 3, maxMemoryMiB: 1024}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {{name: mq}}\n\
         spec: {{priority: 1, computeEnvironmentOrder: [{{order: 1, computeEnvironment: gang}}]}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: one}}\nspec:\n\
         \x20 containerProperties:\n    image: {image}\n    command: [sleep, '3']\n\
         \x20   resourceRequirements: [{{type: VCPU, value: '1'}}, {{type: MEMORY, value: '64'}}]\n---\n{}",
        definition(image, "mpi", "")
    ));

    // Gang placement: with one vCPU of three taken, the three-node job waits whole; none of its
    // nodes starts until all fit.
    let single = server.submit(&["--queue", "mq", "--definition", "one"]);
    server.wait_for_status(&single, "RUNNING");
    let id = server.submit(&["--queue", "mq", "--definition", "mpi"]);
    std::thread::sleep(Duration::from_millis(1500));
    let waiting = server.job(&id);
    assert_eq!(waiting["status"], "RUNNABLE", "{waiting:#}");
    assert!(
        containers_of(&id).is_empty(),
        "no node starts before the gang fits"
    );
    assert_eq!(waiting["nodeProperties"]["numNodes"], 3);
    assert_eq!(
        waiting["nodeProperties"]["nodeRangeProperties"][1]["targetNodes"],
        "1:2"
    );
    assert_eq!(
        waiting["container"]["resourceRequirements"][0]["value"], "3",
        "the job reserves all its nodes' vCPUs: {waiting:#}"
    );

    // The nodes run together; the workers' five-minute sleep ends with the main node.
    let started = Instant::now();
    server.wait_for_status(&single, "SUCCEEDED");
    let running = server.wait_for_within(&id, "RUNNING", GANG, |job| job["status"] == "RUNNING");
    let names = containers_of(&id);
    assert_eq!(
        names.len(),
        3,
        "a container per node: {names:?} {running:#}"
    );
    let job = server.wait_for_within(&id, "the job to end", GANG, |job| {
        job["status"] == "SUCCEEDED" || job["status"] == "FAILED"
    });
    assert_eq!(job["status"], "SUCCEEDED", "{job:#}\n{}", server.log());
    assert!(
        started.elapsed() < 2 * GANG,
        "the workers were stopped when the main node ended"
    );

    // Each node's output apart; the job's own is its main node's.
    let main = stdout(&server.cli(&["logs", &id]));
    assert_eq!(
        main, "hello from 1\nhello from 2\nmain=0 of 3 address=none\n",
        "{main}"
    );
    assert_eq!(stdout(&server.cli(&["logs", &format!("{id}#0")])), main);
    for node in [1, 2] {
        let output = stdout(&server.cli(&["logs", &format!("{id}#{node}")]));
        assert_eq!(
            output,
            format!("welcome-1\nnode={node} main=0 id={id}#{node}\n"),
            "node {node}"
        );
    }
    server.refused(&["logs", &format!("{id}#3")], "\"3\" is not a node of job");
    server.refused(&["logs", &format!("{single}#1")], "is not a multi-node job");
    // The console's job page follows each node's output, the main node's first.
    let page = Command::new("curl")
        .args(["-s", &format!("{}/ui/jobs/{id}", server.url)])
        .output()
        .unwrap();
    let page = stdout(&page);
    let follows: Vec<&str> = page
        .split("data-follow=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(
        follows,
        [0, 1, 2]
            .map(|node| format!("/v1/jobs/{id}/logs?follow=true&amp;attempt=1&amp;node={node}")),
        "{page}"
    );

    // Containers and the network go once the attempt is recorded.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = containers_of(&id);
        let nets = networks(&format!("batchctl-{id}"));
        if left.is_empty() && nets.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?} {nets:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A failed main node fails the attempt; the retry starts every node again.
    server.apply_text(&definition(
        image,
        "mpi-retry",
        ", {name: FAIL_FIRST, value: 'yes'}",
    ));
    let id = server.submit(&["--queue", "mq", "--definition", "mpi-retry"]);
    let job = server.wait_for_within(&id, "the retried job to end", 2 * GANG, |job| {
        job["status"] == "SUCCEEDED" || job["status"] == "FAILED"
    });
    assert_eq!(job["status"], "SUCCEEDED", "{job:#}");
    assert_eq!(job["attempts"][0]["exitCode"], 7, "{job:#}");
    for node in [1, 2] {
        let first = stdout(&server.cli(&["logs", &format!("{id}#{node}"), "--attempt", "1"]));
        let second = stdout(&server.cli(&["logs", &format!("{id}#{node}"), "--attempt", "2"]));
        assert!(first.starts_with("welcome-1\n"), "{first}");
        assert!(second.starts_with("welcome-2\n"), "{second}");
    }

    // Submits that a multi-node job cannot take.
    server.refused(
        &[
            "submit",
            "--queue",
            "mq",
            "--definition",
            "mpi",
            "--",
            "true",
        ],
        "containerOverrides",
    );
    server.refused(
        &[
            "submit",
            "--queue",
            "mq",
            "--definition",
            "mpi",
            "--array-size",
            "2",
        ],
        "arrayProperties",
    );
}

#[test]
fn bad_node_properties_and_process_environments_are_refused_by_name() {
    let server = Server::start(None);
    server.apply_examples();
    let bad = |properties: &str, expected: &str| {
        let text = format!(
            "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: bad}}\nspec:\n  type: multinode\n{properties}"
        );
        let output = server.cli_with_stdin(&["apply", "-f", "-"], &text);
        assert!(!output.status.success(), "{properties}");
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    };
    let container = "container: {image: busybox, command: ['true']}";
    bad(
        &format!("  nodeProperties:\n    numNodes: 3\n    nodeRangeProperties: [{{targetNodes: '0:1', {container}}}, {{targetNodes: '1:', {container}}}]\n"),
        "nodeProperties.nodeRangeProperties[1].targetNodes",
    );
    bad(
        &format!("  nodeProperties:\n    numNodes: 3\n    nodeRangeProperties: [{{targetNodes: '0:1', {container}}}]\n"),
        "no range covers node 2",
    );
    bad(
        &format!("  nodeProperties:\n    numNodes: 2\n    mainNode: 5\n    nodeRangeProperties: [{{targetNodes: '0:', {container}}}]\n"),
        "nodeProperties.mainNode",
    );
    bad(
        "  nodeProperties:\n    numNodes: 2\n    nodeRangeProperties: [{targetNodes: '0:', container: {image: busybox}}]\n",
        "nodeProperties.nodeRangeProperties[0].container.command",
    );
    bad("", "nodeProperties: is required");

    // The process executor runs no multi-node jobs: the attempt fails, saying so.
    server.apply_text(&format!(
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: pair}}\nspec:\n  type: multinode\n\
         \x20 nodeProperties:\n    numNodes: 2\n    nodeRangeProperties: [{{targetNodes: '0:', {container}}}]\n"
    ));
    let id = server.submit(&["--queue", "default", "--definition", "pair"]);
    let job = server.wait_for_status(&id, "FAILED");
    let reason = job["statusReason"].as_str().unwrap_or_default();
    assert!(reason.contains("run no multi-node jobs"), "{job:#}");
}
