use super::*;
use serde_json::json;

fn error_of(document: serde_json::Value) -> String {
    parse_document(&document).unwrap_err().to_string()
}

fn definition(spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "batchctl/v1", "kind": "JobDefinition", "metadata": {"name": "d"}, "spec": spec})
}

#[test]
fn the_readme_definition_parses() {
    let resource = parse_document(&definition(json!({
        "parameters": {"who": "world"},
        "containerProperties": {
            "image": "busybox:latest",
            "command": ["sh", "-c", "echo hello Ref::who"],
            "environment": [{"name": "GREETING", "value": "hi"}],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]
        },
        "retryStrategy": {"attempts": 2},
        "timeout": {"attemptDurationSeconds": 60}
    })))
    .unwrap();
    let Resource::JobDefinition { spec, .. } = resource else {
        panic!("not a definition")
    };
    assert_eq!(spec.retry.attempts, 2);
    assert_eq!(spec.timeout_seconds, Some(60));
    assert_eq!(
        spec.container.resources,
        Resources {
            vcpu_millis: 1000,
            memory_mib: 64,
            gpus: 0
        }
    );
}

#[test]
fn errors_name_the_field_and_what_to_do() {
    let cases = [
        (
            json!({"apiVersion": "v2", "kind": "JobQueue", "metadata": {"name": "q"}, "spec": {}}),
            "apiVersion: \"v2\" is not supported; use \"batchctl/v1\"",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "Queue", "metadata": {"name": "q"}, "spec": {}}),
            "kind: unknown kind \"Queue\"; use one of ComputeEnvironment, JobQueue, JobDefinition, Schedule, EventRule, WebhookTrigger, Notification, ConcurrencyLimit, ConsumableResource, Secret",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "JobQueue", "metadata": {"name": "bad name"}, "spec": {}}),
            "metadata.name: \"bad name\" may only contain letters, digits, hyphens and underscores",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "ComputeEnvironment", "metadata": {"name": "c"},
                   "spec": {"type": "process", "maxVcpus": -1, "maxMemoryMiB": 1}}),
            "spec.maxVcpus: -1 is negative or not finite; give 0 or more vCPUs",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "ComputeEnvironment", "metadata": {"name": "c"},
                   "spec": {"type": "process", "maxVcpus": 1, "maxMemoryMiB": 1, "colour": "red"}}),
            "spec.colour: unknown field `colour`, expected one of `type`, `state`, `maxVcpus`, `maxMemoryMiB`, `maxGpus`, `dockerHost`, `allowPrivileged`, `keepFailedContainers`, `namespace`, `kubeconfig`, `kubeconfigContext`, `serviceAccountName`, `allowedHostPaths`, `gpuIds`, `podDefaults`",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "ComputeEnvironment", "metadata": {"name": "c"},
                   "spec": {"type": "kubernetes", "maxVcpus": 1, "maxMemoryMiB": 1}}),
            "spec.namespace: is required for a kubernetes compute environment: the namespace its Jobs are created in (lowercase letters, digits and '-', at most 63)",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "ComputeEnvironment", "metadata": {"name": "c"},
                   "spec": {"type": "kubernetes", "namespace": "batch", "dockerHost": "unix:///x", "maxVcpus": 1, "maxMemoryMiB": 1}}),
            "spec.dockerHost: applies to docker compute environments only; remove it or set type: docker",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "ComputeEnvironment", "metadata": {"name": "c"},
                   "spec": {"type": "docker", "namespace": "batch", "maxVcpus": 1, "maxMemoryMiB": 1}}),
            "spec.namespace: applies to kubernetes compute environments only; remove it or set type: kubernetes",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "JobQueue", "metadata": {"name": "q"},
                   "spec": {"priority": 1, "computeEnvironmentOrder": []}}),
            "spec.computeEnvironmentOrder: must name at least one compute environment",
        ),
        (
            definition(json!({"containerProperties": {"command": ["true"]}})),
            "spec.containerProperties.image: is required: name the container image to run (process environments ignore it)",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"],
                   "resourceRequirements": [{"type": "VCPU", "value": "-2"}]}})),
            "spec.containerProperties.resourceRequirements[0].value: -2 is negative or not finite; give 0 or more vCPUs",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"],
                   "environment": [{"name": "AWS_BATCH_JOB_ID", "value": "x"}]}})),
            "spec.containerProperties.environment[0].name: \"AWS_BATCH_JOB_ID\" starts with \"AWS_BATCH_\", which batchctl reserves for the variables it sets",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]}, "retryStrategy": {"attempts": 11}})),
            "spec.retryStrategy.attempts: 11 is out of range; use 1 to 10",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "retryStrategy": {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1*2", "action": "EXIT"}]}})),
            "spec.retryStrategy.evaluateOnExit[0].onExitCode: \"1*2\" is not a pattern: 1 to 512 characters, with `*` only at the end",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "retryStrategy": {"evaluateOnExit": [{"onExitCode": "x", "action": "EXIT"}]}})),
            "spec.retryStrategy.evaluateOnExit[0].onExitCode: \"x\" may only hold digits and a trailing `*`",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "retryStrategy": {"evaluateOnExit": [{"onReason": "OOM*", "action": "STOP"}]}})),
            "spec.retryStrategy.evaluateOnExit[0].action: \"STOP\" is not an action; use RETRY, EXIT or RETRY_WITHOUT_COUNT",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "retryStrategy": {"evaluateOnExit": [
                       {"action": "EXIT"}, {"action": "EXIT"}, {"action": "EXIT"}, {"action": "EXIT"}, {"action": "EXIT"}, {"action": "EXIT"}]}})),
            "spec.retryStrategy.evaluateOnExit: has 6 rules; at most 5 are allowed",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "retryStrategy": {"backoff": {"initialDelaySeconds": 10, "maxDelaySeconds": 5}}})),
            "spec.retryStrategy.backoff.maxDelaySeconds: 5 is below initialDelaySeconds (10); give at least that",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"], "memory": 5}})),
            "spec.containerProperties.memory: unknown field `memory`, expected one of `image`, `command`, `environment`, `resourceRequirements`, `workingDir`, `user`, `imagePullPolicy`, `privileged`, `linuxParameters`, `secrets`, `ulimits`, `readonlyRootFilesystem`, `volumes`, `mountPoints`",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "tags": {"": "x"}})),
            "spec.tags: \"\" is not a tag key: 1 to 128 characters",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "tags": (0..51).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()})),
            "spec.tags: has 51 tags; give at most 50",
        ),
        (
            definition(json!({"containerProperties": {"image": "i", "command": ["true"]},
                   "consumableResourceProperties": {"consumableResourceList": [
                       {"consumableResource": "seats", "quantity": 1},
                       {"consumableResource": "seats", "quantity": 2}]}})),
            "spec.consumableResourceProperties.consumableResourceList[1].consumableResource: seats is listed twice",
        ),
        (
            json!({"apiVersion": "batchctl/v1", "kind": "ConsumableResource", "metadata": {"name": "c"},
                   "spec": {"totalQuantity": 1, "resourceType": "FOREVER"}}),
            "spec.resourceType: \"FOREVER\" is not a type; use REPLENISHABLE or NON_REPLENISHABLE",
        ),
    ];
    for (document, expected) in cases {
        assert_eq!(error_of(document), expected);
    }
}

#[test]
fn queues_order_their_environments() {
    let resource = parse_document(&json!({"apiVersion": "batchctl/v1", "kind": "JobQueue",
        "metadata": {"name": "q"}, "spec": {"priority": 5, "computeEnvironmentOrder": [
            {"order": 2, "computeEnvironment": "second"}, {"order": 1, "computeEnvironment": "first"}]}}))
    .unwrap();
    let Resource::JobQueue(queue) = resource else {
        panic!("not a queue")
    };
    let names: Vec<_> = queue
        .compute_environments
        .iter()
        .map(|e| e.as_str())
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(queue.state, ResourceState::Enabled);
}

#[test]
fn vcpus_may_be_fractional() {
    assert_eq!(vcpus("0.25"), Ok(250));
    assert_eq!(vcpus("4"), Ok(4000));
    assert!(vcpus("0.0001").is_err());
    assert!(vcpus("lots").is_err());
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let documents = [
        json!({"apiVersion": "batchctl/v1", "kind": "WebhookTrigger", "metadata": {"name": "w"},
            "spec": {"profile": "github", "secrets": [123456789012345678_u64], "source": "s"}}),
        json!({"apiVersion": "batchctl/v1", "kind": "Notification", "metadata": {"name": "n"},
            "spec": {"eventPattern": {}, "endpoint": "https://example.com", "secret": {"v": 987654321987_u64}}}),
    ];
    for document in documents {
        let error = parse_document(&document).unwrap_err();
        let text = format!("{error} {:?}", error);
        assert!(
            !text.contains("123456789012345678") && !text.contains("987654321987"),
            "{text}"
        );
        assert!(text.contains("secret"), "{text}");
    }
}

#[test]
fn dependency_conditions_are_read_and_wrong_ones_named() {
    let spec = |value: serde_json::Value| -> Vec<JobDependencySpec> {
        serde_json::from_value(value).unwrap()
    };
    let read = dependencies(
        &spec(json!([
            {"jobId": "a"},
            {"jobId": "b", "condition": "afterany"},
            {"jobId": "c", "type": "N_TO_N", "condition": "afternotok"}
        ])),
        Some(2),
    )
    .unwrap();
    assert_eq!(
        read.iter().map(|d| d.condition).collect::<Vec<_>>(),
        [
            DependencyCondition::AfterOk,
            DependencyCondition::AfterAny,
            DependencyCondition::AfterNotOk
        ]
    );
    let error =
        dependencies(&spec(json!([{"jobId": "a", "condition": "later"}])), None).unwrap_err();
    assert_eq!(error.field, "dependsOn[0].condition");
    assert!(error.message.contains("afterany"), "{error}");
    let error = dependencies(
        &spec(json!([{"type": "SEQUENTIAL", "condition": "afterany"}])),
        Some(3),
    )
    .unwrap_err();
    assert_eq!(error.field, "dependsOn[0].condition");
}
