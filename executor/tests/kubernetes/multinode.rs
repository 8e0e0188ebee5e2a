//! Multi-node attempts: an Indexed Job and its headless Service on the fake API server.

use super::*;

/// A multi-node attempt of `nodes` nodes (main node 0) that all run `script`, with the
/// variables the scheduler gives each node.
pub(crate) fn multinode(job_id: &str, nodes: u32, script: &str) -> AttemptSpec {
    let base = spec(job_id, "busybox", script);
    let group: Vec<AttemptSpec> = (0..nodes)
        .map(|node| {
            let mut each = base.clone();
            each.attempt_id = batchctl_core::multinode::node_attempt_id(&base.attempt_id, node, 0);
            for (name, value) in [
                ("AWS_BATCH_JOB_NODE_INDEX", node.to_string()),
                ("AWS_BATCH_JOB_NUM_NODES", nodes.to_string()),
                ("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0".to_string()),
                ("AWS_BATCH_JOB_ID", format!("{job_id}#{node}")),
            ] {
                each.environment.push(EnvironmentVariable {
                    name: name.into(),
                    value,
                });
            }
            each
        })
        .collect();
    let mut spec = group[0].clone();
    spec.attempt_id = base.attempt_id;
    spec.nodes = Some(batchctl_executor::NodeGroup {
        main_node: 0,
        nodes: group,
    });
    spec
}

async fn node_output(executor: &KubernetesExecutor, handle: &AttemptHandle, node: u32) -> String {
    let chunks: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        executor
            .node_logs(handle, node, LogCursor(0))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("a node's log stream ends after its pod");
    let mut text = Vec::new();
    for chunk in chunks {
        text.extend_from_slice(&chunk.unwrap().data);
    }
    String::from_utf8(text).unwrap()
}

#[tokio::test]
async fn a_multinode_attempt_is_an_indexed_job_with_a_headless_service_and_ends_with_its_main_node()
{
    let fixture = fixture().await;
    let executor = fixture.executor("installation-m");
    let script = "if [ \"$AWS_BATCH_JOB_NODE_INDEX\" = 0 ]; then sleep 1; echo main $AWS_BATCH_JOB_ID; exit 0; \
                  else echo worker $AWS_BATCH_JOB_NODE_INDEX of $AWS_BATCH_JOB_NUM_NODES main at $AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS; sleep 300; fi";
    let spec = multinode("mnp", 3, script);
    let handle = executor.start(&spec).await.unwrap();
    assert_eq!(handle.0, "mnp-1");

    let job = fixture.api.job("mnp-1").expect("one Job for every node");
    let job_spec = job.spec.as_ref().unwrap();
    assert_eq!(job_spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(
        (job_spec.completions, job_spec.parallelism),
        (Some(3), Some(3))
    );
    let rule = &job_spec.success_policy.as_ref().unwrap().rules[0];
    assert_eq!(
        rule.succeeded_indexes.as_deref(),
        Some("0"),
        "the Job succeeds with its main node"
    );
    let template = job_spec.template.spec.as_ref().unwrap();
    assert_eq!(template.subdomain.as_deref(), Some("nodes-mnp-1"));
    let service = fixture
        .api
        .service("nodes-mnp-1")
        .expect("a headless Service");
    let service_spec = service.spec.as_ref().unwrap();
    assert_eq!(service_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        service_spec.selector.as_ref().unwrap()["batch.kubernetes.io/job-name"],
        "mnp-1"
    );
    assert_eq!(
        service.metadata.owner_references.as_ref().unwrap()[0].uid,
        job.metadata.uid.clone().unwrap(),
        "owned by the Job, so it goes with it"
    );
    let pods = fixture.api.pods_of("mnp-1");
    let mut hostnames: Vec<String> = pods
        .iter()
        .filter_map(|pod| pod.spec.as_ref()?.hostname.clone())
        .collect();
    hostnames.sort();
    assert_eq!(hostnames, ["mnp-1-0", "mnp-1-1", "mnp-1-2"]);

    // Every node's output apart, the attempt's own being its main node's; the workers' long sleep
    // ends with the main node.
    let started = std::time::Instant::now();
    let (main, one, two, outcome) = tokio::join!(
        output(&executor, &handle, 0),
        node_output(&executor, &handle, 1),
        node_output(&executor, &handle, 2),
        wait(&executor, &handle)
    );
    assert_eq!(
        outcome.unwrap(),
        AttemptOutcome::Exited {
            exit_code: 0,
            signal: None
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the workers were stopped"
    );
    assert_eq!(main, "main mnp#0\n");
    assert_eq!(one, "worker 1 of 3 main at mnp-1-0.nodes-mnp-1\n");
    assert_eq!(two, "worker 2 of 3 main at mnp-1-0.nodes-mnp-1\n");
    executor.remove(&handle).await.unwrap();
    assert!(fixture.api.job("mnp-1").is_none());
    assert!(
        fixture.api.service("nodes-mnp-1").is_none(),
        "collected with its Job"
    );

    // A worker that fails fails the Job (backoffLimit 0), and the main node with it.
    let failing = multinode(
        "mnp-fail",
        2,
        "if [ \"$AWS_BATCH_JOB_NODE_INDEX\" = 1 ]; then exit 3; fi; sleep 300",
    );
    let handle = executor.start(&failing).await.unwrap();
    let outcome = wait(&executor, &handle).await.unwrap();
    assert!(
        !matches!(outcome, AttemptOutcome::Exited { exit_code: 0, .. }),
        "{outcome:?}"
    );
    executor.remove(&handle).await.unwrap();

    // Nodes that run different containers cannot share a pod template; a cluster without
    // successPolicy cannot end a Job with its main node.
    let mut mixed = multinode("mnp-mixed", 2, "true");
    mixed.nodes.as_mut().unwrap().nodes[1].image = "other".into();
    match executor.start(&mixed).await {
        Err(ExecutorError::Refused { reason }) => {
            assert!(
                reason.contains("node 1 runs a different container"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let old = fixture.executor("installation-old");
    fixture.api.set_minor_version(30);
    match old.start(&multinode("mnp-old", 2, "true")).await {
        Err(ExecutorError::Refused { reason }) => {
            assert!(reason.contains("need Kubernetes 1.31"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(fixture.api.job("mnp-mixed-1").is_none() && fixture.api.job("mnp-old-1").is_none());
}
