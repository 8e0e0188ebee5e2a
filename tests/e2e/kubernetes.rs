//! A kubernetes compute environment through the real server and CLI, against the in-process fake
//! API server (no cluster can run here; see executor/tests/support/fake_kube/).

#[path = "../../executor/tests/support/fake_kube/mod.rs"]
#[allow(dead_code)]
mod fake_kube;

use crate::support::{eventually, stderr, Server};

/// Starts the fake API server on a runtime of its own, for the life of the test process.
fn fake_api_server() -> fake_kube::FakeApiServer {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            sender
                .send(fake_kube::FakeApiServer::start().await)
                .unwrap();
            std::future::pending::<()>().await
        })
    });
    receiver.recv().unwrap()
}

/// A kubernetes environment `cluster` (namespace `batch`) on the fake, a queue `kq` on it, and a
/// definition `kjob` running `sh -c SCRIPT`.
fn kubernetes_resources(server: &Server, api: &fake_kube::FakeApiServer, script: &str) {
    let kubeconfig = api.kubeconfig(&server.data_dir);
    server.apply_text(&format!(
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {{name: cluster}}\n\
         spec: {{type: kubernetes, namespace: batch, kubeconfig: '{}', kubeconfigContext: fake, \
         serviceAccountName: batch-jobs, maxVcpus: 8, maxMemoryMiB: 8192, maxGpus: 4, \
         podDefaults: {{priorityClassName: batch-low, nodeSelector: {{pool: batch}}}}}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {{name: kq}}\n\
         spec: {{priority: 1, computeEnvironmentOrder: [{{order: 1, computeEnvironment: cluster}}]}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: kjob}}\nspec:\n  \
         containerProperties:\n    image: busybox\n    command: [sh, -c, '{script}']\n    \
         resourceRequirements: [{{type: VCPU, value: '1'}}, {{type: MEMORY, value: '128'}}]\n",
        kubeconfig.display()
    ));
}

#[test]
fn jobs_run_as_kubernetes_jobs_and_an_unschedulable_one_waits_in_starting() {
    let api = fake_api_server();
    let server = Server::start(None);
    kubernetes_resources(&server, &api, "echo hello from $BATCH_JOB_ID; exit 0");
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: gpu}\nspec:\n  \
         containerProperties:\n    image: unschedulable/trainer\n    command: [train]\n    \
         resourceRequirements: [{type: VCPU, value: '1'}, {type: MEMORY, value: '128'}, {type: GPU, value: '1'}]\n  \
         podProperties: {nodeSelector: {accelerator: a100}, tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]}\n---\n\
         apiVersion: batchctl/v1\nkind: Secret\nmetadata: {name: k-token}\nspec: {value: kube-secret-value}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: ksecret}\nspec:\n  \
         containerProperties:\n    image: busybox\n    command: [sh, -c, 'echo token=$TOKEN']\n    \
         secrets: [{name: TOKEN, valueFrom: k-token}]\n",
    );
    // A secret reaches the pod through the attempt's own Secret, never through the Job.
    let with_secret = server.submit(&["--queue", "kq", "--definition", "ksecret"]);
    server.wait_for_status(&with_secret, "SUCCEEDED");
    assert_eq!(
        String::from_utf8_lossy(&server.cli(&["logs", &with_secret]).stdout),
        "token=kube-secret-value\n"
    );
    assert!(api.requests().iter().any(|r| r == "POST secret in batch"));

    let id = server.submit(&["--queue", "kq", "--definition", "kjob"]);
    let job = server.wait_for_status(&id, "SUCCEEDED");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    let logs = server.cli(&["logs", &id]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        format!("hello from {id}\n"),
        "{}",
        stderr(&logs)
    );
    // Removed once its outcome and logs were stored.
    eventually(10, "the finished Job is deleted", || {
        match api.job(&format!("{id}-1")) {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    });

    let gpu = server.submit(&["--queue", "kq", "--definition", "gpu"]);
    let waiting = server.wait_for(&gpu, "an unschedulable reason", |job| {
        job["status"] == "STARTING"
            && job["statusReason"]
                .as_str()
                .is_some_and(|r| r.starts_with("Unschedulable: 0/3 nodes"))
    });
    let manifest = api.job(&format!("{gpu}-1")).expect("its Job exists");
    let container = &manifest.spec.unwrap().template.spec.unwrap().containers[0];
    let limits = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1", "{waiting:#}");
    // The definition's podProperties over the environment's podDefaults.
    let pod = api
        .job(&format!("{gpu}-1"))
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let selector = pod.node_selector.unwrap();
    assert_eq!(
        (selector["pool"].as_str(), selector["accelerator"].as_str()),
        ("batch", "a100")
    );
    assert_eq!(pod.priority_class_name.as_deref(), Some("batch-low"));
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("nvidia.com/gpu")
    );
    let output = server.cli(&["terminate", &gpu, "--reason", "no GPUs today"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let ended = server.wait_for_status(&gpu, "FAILED");
    assert_eq!(ended["statusReason"], "no GPUs today", "{ended:#}");
    assert!(
        api.job(&format!("{gpu}-1")).is_none(),
        "terminate deleted the Job"
    );
    assert!(api.requests().iter().any(|r| r.starts_with(&format!(
        "DELETE job {gpu}-1 in batch propagation=Background"
    ))));

    // What a ServiceMonitor scrapes.
    let metrics = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", server.url)])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        "batchctl_jobs{status=\"SUCCEEDED\"} 2",
        "batchctl_jobs{status=\"FAILED\"} 1",
        "batchctl_jobs{status=\"RUNNING\"} 0",
        "batchctl_queue_jobs{queue=\"kq\",status=\"SUCCEEDED\"} 2",
        "batchctl_queue_jobs{queue=\"kq\",status=\"FAILED\"} 1",
        "batchctl_leader 1",
        "batchctl_compute_environment_up{environment=\"cluster\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
}

#[test]
fn a_job_running_in_kubernetes_is_adopted_after_kill_9_and_orphans_are_deleted() {
    let api = fake_api_server();
    let mut server = Server::start(None);
    kubernetes_resources(&server, &api, "echo before; sleep 3; echo after");
    let id = server.submit(&["--queue", "kq", "--definition", "kjob"]);
    server.wait_for_status(&id, "RUNNING");
    server.kill_9();
    let job = api
        .job(&format!("{id}-1"))
        .expect("the attempt's Job outlives the server");
    // A Job of this installation and environment that no job owns: deleted at restart.
    let mut orphan = job.clone();
    orphan.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some("orphan-1".into()),
        labels: job.metadata.labels.clone(),
        annotations: Some([("batchctl.io/job-id".to_string(), "orphan".to_string())].into()),
        ..Default::default()
    };
    orphan.status = None;
    let created = std::process::Command::new("curl")
        .args(["-sf", "-X", "POST", "-H", "content-type: application/json"])
        .arg(format!("{}/apis/batch/v1/namespaces/batch/jobs", api.url))
        .arg("-d")
        .arg(serde_json::to_string(&orphan).unwrap())
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(api.job("orphan-1").is_some());

    server.restart();
    eventually(15, "the orphaned Job is deleted", || {
        match api.job("orphan-1") {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    });
    let done = server.wait_for_status(&id, "SUCCEEDED");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1, "{done:#}");
    let logs = server.cli(&["logs", &id]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "before\nafter\n",
        "{}",
        stderr(&logs)
    );
}

/// An evicted pod is a disruption, not the job's failure: with `RETRY_WITHOUT_COUNT` it is retried
/// without spending one of `attempts`, up to `maxDisruptions`, each attempt saying so; after that
/// an eviction counts like any failure. The fake API server evicts every pod of an `evicted` image.
#[test]
fn evictions_are_retried_without_spending_attempts_up_to_max_disruptions() {
    let api = fake_api_server();
    let server = Server::start(None);
    kubernetes_resources(&server, &api, "exit 0");
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: preemptible}\nspec:\n  \
         containerProperties:\n    image: evicted/worker\n    command: [work]\n    \
         resourceRequirements: [{type: VCPU, value: '1'}, {type: MEMORY, value: '128'}]\n  \
         retryStrategy:\n    attempts: 1\n    maxDisruptions: 2\n    evaluateOnExit:\n      \
         - {onReason: 'Evicted*', action: RETRY_WITHOUT_COUNT}\n",
    );
    let id = server.submit(&["--queue", "kq", "--definition", "preemptible"]);
    let job = server.wait_for_status(&id, "FAILED");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "attempts: 1 plus 2 disruptions: {job:#}");
    for (index, attempt) in attempts.iter().enumerate().take(2) {
        let reason = attempt["statusReason"].as_str().unwrap();
        assert!(
            reason.starts_with("Evicted")
                && reason.ends_with(&format!(
                    "(retried without counting: disruption {} of 2)",
                    index + 1
                )),
            "{reason}"
        );
    }
    assert!(!attempts[2]["statusReason"]
        .as_str()
        .unwrap()
        .contains("without counting"));
    assert_eq!(job["retryStrategy"]["disruptions"], 2, "{job:#}");
    assert_eq!(job["retryStrategy"]["maxDisruptions"], 2);

    let refused = server.cli_with_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: bad}\nspec:\n  \
         containerProperties: {image: busybox, command: ['true']}\n  \
         retryStrategy: {attempts: 1, maxDisruptions: 1000}\n",
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("retryStrategy.maxDisruptions"),
        "{}",
        stderr(&refused)
    );
}

/// A multi-node job through the real server: one Indexed Job and its headless Service on the
/// fake, each node's output apart (`logs JOB#N`), the job's outcome its main node's.
#[test]
fn a_multinode_job_runs_as_an_indexed_job_with_each_nodes_logs_apart() {
    let api = fake_api_server();
    let server = Server::start(None);
    kubernetes_resources(&server, &api, "true");
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: kmpi}\nspec:\n  type: multinode\n  \
         nodeProperties:\n    numNodes: 3\n    mainNode: 0\n    nodeRangeProperties:\n    \
         - targetNodes: '0:'\n      container:\n        image: busybox\n        \
         command: [sh, -c, 'if [ $AWS_BATCH_JOB_NODE_INDEX = 0 ]; then sleep 1; echo main of $AWS_BATCH_JOB_NUM_NODES; else echo node $AWS_BATCH_JOB_NODE_INDEX id $AWS_BATCH_JOB_ID; sleep 300; fi']\n        \
         resourceRequirements: [{type: VCPU, value: '1'}, {type: MEMORY, value: '128'}]\n",
    );
    let id = server.submit(&["--queue", "kq", "--definition", "kmpi"]);
    let job = server.wait_for(&id, "the job to end", |job| {
        job["status"] == "SUCCEEDED" || job["status"] == "FAILED"
    });
    assert_eq!(job["status"], "SUCCEEDED", "{job:#}\n{}", server.log());
    let logs =
        |which: &str| String::from_utf8_lossy(&server.cli(&["logs", which]).stdout).into_owned();
    assert_eq!(logs(&id), "main of 3\n");
    for node in [1, 2] {
        assert_eq!(
            logs(&format!("{id}#{node}")),
            format!("node {node} id {id}#{node}\n")
        );
    }
    assert!(api.requests().iter().any(|r| r == "POST service in batch"));
    eventually(10, "the Job and its Service are deleted", || {
        match (
            api.job(&format!("{id}-1")),
            api.service(&format!("nodes-{id}-1")),
        ) {
            (None, None) => Ok(()),
            other => Err(format!("still there: {other:?}")),
        }
    });
}
