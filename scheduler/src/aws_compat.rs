//! AWS Batch job definitions, accepted unchanged by `apply`: the input of RegisterJobDefinition, one
//! entry of `describe-job-definitions` output, or that whole output (`{"jobDefinitions": [...]}`).
//! Each becomes a batchctl JobDefinition document; every field batchctl does not carry out is named
//! in a warning, never dropped silently. AWS Batch on EKS's `eksProperties` is `aws_eks.rs`. Pure: JSON in, JSON and warnings out.

use serde_json::{json, Map, Value};

use crate::manifest::{FieldError, API_VERSION};

/// A document converted from AWS Batch's shape, and the fields it had that batchctl ignores.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub document: Value,
    pub ignored_fields: Vec<String>,
}

/// Whether a document is in AWS Batch's shape rather than batchctl's.
pub fn is_aws_document(document: &Value) -> bool {
    document.get("apiVersion").is_none()
        && (document.get("jobDefinitionName").is_some() || document.get("jobDefinitions").is_some())
}

/// The AWS job definitions a document holds: itself, or each entry of `jobDefinitions`.
pub fn aws_job_definitions(document: &Value) -> Vec<&Value> {
    match document.get("jobDefinitions").and_then(Value::as_array) {
        Some(entries) => entries.iter().collect(),
        None => vec![document],
    }
}

/// Fields taken over as they are, at the top level and in `containerProperties`.
const TOP_LEVEL_KEPT: [&str; 8] = [
    "propagateTags",
    "parameters",
    "retryStrategy",
    "timeout",
    "schedulingPriority",
    "type",
    "tags",
    "consumableResourceProperties",
];
const CONTAINER_KEPT: [&str; 12] = [
    "image",
    "volumes",
    "mountPoints",
    "linuxParameters",
    "ulimits",
    "readonlyRootFilesystem",
    "secrets",
    "command",
    "environment",
    "resourceRequirements",
    "user",
    "privileged",
];

/// Converts one AWS Batch job definition.
pub fn convert_job_definition(aws: &Value) -> Result<Converted, FieldError> {
    let Some(object) = aws.as_object() else {
        return Err(FieldError::new(
            "",
            "an AWS Batch job definition must be a JSON object",
        ));
    };
    let name = object
        .get("jobDefinitionName")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            FieldError::new("jobDefinitionName", "is required: name the job definition")
        })?;
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("container");
    if kind != "container" && kind != "multinode" {
        return Err(FieldError::new(
            "type",
            format!(
                "{kind:?} job definitions are not supported; batchctl runs \"container\" and \"multinode\" ones"
            ),
        ));
    }
    let mut ignored = Vec::new();
    let mut spec = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "jobDefinitionName" => {}
            "containerProperties" => {
                let container = convert_container(value, key, &mut ignored)?;
                spec.insert(key.clone(), container);
            }
            "nodeProperties" => {
                let nodes = convert_nodes(value, &mut ignored)?;
                spec.insert(key.clone(), nodes);
            }
            "eksProperties" if !value.is_null() => {
                if object.contains_key("containerProperties") {
                    return Err(FieldError::new(
                        "eksProperties",
                        "is given with containerProperties; give one of them",
                    ));
                }
                let (container, pod) = crate::aws_eks::convert_eks(value, &mut ignored)?;
                spec.insert("containerProperties".into(), container);
                if let Some(pod) = pod {
                    spec.insert("podProperties".into(), pod);
                }
            }
            "retryStrategy" => {
                spec.insert(key.clone(), convert_retry_strategy(value));
            }
            kept if TOP_LEVEL_KEPT.contains(&kept) => {
                spec.insert(key.clone(), value.clone());
            }
            _ if value.is_null() => {}
            other => ignored.push(other.to_string()),
        }
    }
    let required = match kind {
        "multinode" => "nodeProperties",
        _ => "containerProperties",
    };
    if !spec.contains_key(required) {
        return Err(FieldError::new(
            required,
            format!("is required: batchctl runs {kind} job definitions from it"),
        ));
    }
    ignored.sort();
    Ok(Converted {
        document: json!({
            "apiVersion": API_VERSION,
            "kind": "JobDefinition",
            "metadata": {"name": name},
            "spec": Value::Object(spec),
        }),
        ignored_fields: ignored,
    })
}

/// `nodeProperties`: each range's container converted as `containerProperties` is; what a range
/// has beside `targetNodes` and `container` (instance types, ECS and EKS properties) is ignored.
fn convert_nodes(value: &Value, ignored: &mut Vec<String>) -> Result<Value, FieldError> {
    let Some(object) = value.as_object() else {
        return Err(FieldError::new("nodeProperties", "must be an object"));
    };
    let mut nodes = object.clone();
    let ranges = object
        .get("nodeRangeProperties")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut converted = Vec::with_capacity(ranges.len());
    for (position, range) in ranges.iter().enumerate() {
        let prefix = format!("nodeProperties.nodeRangeProperties[{position}]");
        let Some(range) = range.as_object() else {
            return Err(FieldError::new(prefix, "must be an object"));
        };
        let mut kept = Map::new();
        for (key, value) in range {
            match key.as_str() {
                "targetNodes" => {
                    kept.insert(key.clone(), value.clone());
                }
                "container" => {
                    let container =
                        convert_container(value, &format!("{prefix}.container"), ignored)?;
                    kept.insert(key.clone(), container);
                }
                _ if value.is_null() || is_empty(value) => {}
                other => ignored.push(format!("{prefix}.{other}")),
            }
        }
        converted.push(Value::Object(kept));
    }
    nodes.insert("nodeRangeProperties".into(), Value::Array(converted));
    Ok(Value::Object(nodes))
}

fn convert_container(
    value: &Value,
    prefix: &str,
    ignored: &mut Vec<String>,
) -> Result<Value, FieldError> {
    let Some(object) = value.as_object() else {
        return Err(FieldError::new(prefix, "must be an object"));
    };
    let mut container = Map::new();
    let mut legacy = Map::new();
    for (key, value) in object {
        match key.as_str() {
            kept if CONTAINER_KEPT.contains(&kept) => {
                container.insert(key.clone(), value.clone());
            }
            // The deprecated top-level vcpus and memory become resource requirements.
            "vcpus" | "memory" => {
                legacy.insert(key.clone(), value.clone());
            }
            _ if value.is_null() => {}
            // Empty lists and objects (as describe output often has) ask for nothing.
            _ if is_empty(value) => {}
            other => ignored.push(format!("{prefix}.{other}")),
        }
    }
    let mut requirements: Vec<Value> = container
        .get("resourceRequirements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (field, kind) in [("vcpus", "VCPU"), ("memory", "MEMORY")] {
        let Some(amount) = legacy.get(field) else {
            continue;
        };
        let already = requirements.iter().any(|r| r["type"] == kind);
        if !already {
            let amount = match amount {
                Value::Number(number) => number.to_string(),
                Value::String(text) => text.clone(),
                _ => {
                    return Err(FieldError::new(
                        format!("{prefix}.{field}"),
                        "must be a number",
                    ))
                }
            };
            requirements.push(json!({"type": kind, "value": amount}));
        }
    }
    if !requirements.is_empty() {
        container.insert("resourceRequirements".into(), Value::Array(requirements));
    }
    Ok(Value::Object(container))
}

/// AWS Batch matches `action` without regard to case; batchctl's manifests spell it in capitals.
fn convert_retry_strategy(value: &Value) -> Value {
    let mut strategy = value.clone();
    if let Some(rules) = strategy
        .get_mut("evaluateOnExit")
        .and_then(Value::as_array_mut)
    {
        for rule in rules {
            if let Some(action) = rule.get("action").and_then(Value::as_str) {
                rule["action"] = Value::String(action.to_ascii_uppercase());
            }
        }
    }
    strategy
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    }
}

/// Validates documents to apply: native ones as they are, AWS Batch job definitions converted
/// (with a warning naming what was ignored). The first invalid document fails all of them, its
/// field named within `documents[i]`.
pub fn documents_to_apply(
    documents: &[serde_json::Value],
) -> Result<(Vec<crate::store::ValidDocument>, Vec<String>), FieldError> {
    let mut valid = Vec::with_capacity(documents.len());
    let mut warnings = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let at = |error: FieldError| error.within(&format!("documents[{index}]"));
        let native: Vec<serde_json::Value> = if is_aws_document(document) {
            let mut converted = Vec::new();
            for aws in aws_job_definitions(document) {
                let conversion = convert_job_definition(aws).map_err(at)?;
                if !conversion.ignored_fields.is_empty() {
                    warnings.push(format!(
                        "documents[{index}]: job definition {}: batchctl does not support, and ignored: {}",
                        conversion.document["metadata"]["name"].as_str().unwrap_or_default(),
                        conversion.ignored_fields.join(", ")
                    ));
                }
                converted.push(conversion.document);
            }
            converted
        } else {
            vec![document.clone()]
        };
        for document in native {
            let resource = crate::manifest::parse_document(&document).map_err(at)?;
            valid.push((resource, document["spec"].clone()));
        }
    }
    Ok((valid, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_document, Resource};

    /// A job definition as `aws batch describe-job-definitions` prints it.
    fn described() -> Value {
        json!({
            "jobDefinitionName": "render",
            "jobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/render:3",
            "revision": 3,
            "status": "ACTIVE",
            "type": "container",
            "parameters": {"scene": "intro"},
            "retryStrategy": {"attempts": 3, "evaluateOnExit": [
                {"onStatusReason": "Host EC2*", "action": "retry"},
                {"onReason": "*", "action": "EXIT"}
            ]},
            "timeout": {"attemptDurationSeconds": 600},
            "containerProperties": {
                "image": "public.ecr.aws/render:1",
                "vcpus": 2,
                "memory": 2048,
                "command": ["render", "Ref::scene"],
                "jobRoleArn": "arn:aws:iam::123456789012:role/render",
                "volumes": [],
                "environment": [{"name": "MODE", "value": "fast"}],
                "mountPoints": [],
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                "readonlyRootFilesystem": true,
                "linuxParameters": {"initProcessEnabled": true, "sharedMemorySize": 64,
                                    "tmpfs": [{"containerPath": "/tmp", "size": 32, "mountOptions": ["noexec"]}]},
                "resourceRequirements": [{"type": "GPU", "value": "1"}],
                "logConfiguration": {"logDriver": "awslogs"},
                "secrets": []
            },
            "tags": {"team": "graphics"},
            "propagateTags": false,
            "platformCapabilities": ["EC2"],
            "containerOrchestrationType": "ECS"
        })
    }

    #[test]
    fn a_described_definition_applies_with_the_ignored_fields_named() {
        let converted = convert_job_definition(&described()).unwrap();
        assert_eq!(
            converted.ignored_fields,
            [
                "containerOrchestrationType",
                "containerProperties.jobRoleArn",
                "containerProperties.logConfiguration",
                "jobDefinitionArn",
                "platformCapabilities",
                "revision",
                "status",
            ]
        );
        let Resource::JobDefinition { name, spec } = parse_document(&converted.document).unwrap()
        else {
            panic!("not a job definition")
        };
        assert_eq!(name.as_str(), "render");
        assert_eq!(spec.retry.attempts, 3);
        assert_eq!(spec.retry.evaluate_on_exit.len(), 2);
        assert_eq!(spec.timeout_seconds, Some(600));
        assert_eq!(spec.tags["team"], "graphics", "tags are kept");
        let linux = &spec.container.linux;
        assert_eq!(linux.ulimits[0].soft_limit, 1024);
        assert!(linux.read_only_root_filesystem && linux.init_process_enabled);
        assert_eq!(linux.shared_memory_mib, Some(64));
        assert_eq!(linux.tmpfs[0].mount_options, ["noexec"]);
        assert!(!spec.propagate_tags);
        assert_eq!(spec.container.resources.vcpu_millis, 2000);
        assert_eq!(spec.container.resources.memory_mib, 2048);
        assert_eq!(spec.container.resources.gpus, 1);
        assert_eq!(spec.container.command, ["render", "Ref::scene"]);
    }

    #[test]
    fn a_multinode_definition_applies_with_each_range_converted() {
        let described = json!({
            "jobDefinitionName": "mpi",
            "type": "multinode",
            "platformCapabilities": ["EC2"],
            "nodeProperties": {
                "numNodes": 3,
                "mainNode": 0,
                "nodeRangeProperties": [
                    {"targetNodes": "0", "container": {"image": "mpi", "command": ["main"], "vcpus": 2, "memory": 256}},
                    {"targetNodes": "1:", "instanceTypes": ["c5.large"],
                     "container": {"image": "mpi", "command": ["worker"], "vcpus": 1, "memory": 128, "instanceType": "c5.large"}}
                ]
            }
        });
        let converted = convert_job_definition(&described).unwrap();
        assert_eq!(
            converted.ignored_fields,
            [
                "nodeProperties.nodeRangeProperties[1].container.instanceType",
                "nodeProperties.nodeRangeProperties[1].instanceTypes",
                "platformCapabilities",
            ]
        );
        let Resource::JobDefinition { spec, .. } = parse_document(&converted.document).unwrap()
        else {
            panic!("not a job definition")
        };
        let nodes = spec.nodes.expect("nodes");
        assert_eq!((nodes.num_nodes, nodes.main_node), (3, 0));
        assert_eq!(nodes.container_of(2).command, ["worker"]);
        assert_eq!(
            spec.container.command,
            ["main"],
            "the main node's container"
        );
        assert_eq!(
            spec.container.resources.vcpu_millis, 4000,
            "all nodes reserved"
        );
        assert_eq!(spec.container.resources.memory_mib, 512);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                json!({"type": "container"}),
                "jobDefinitionName: is required",
            ),
            (
                json!({"jobDefinitionName": "m", "type": "multinode"}),
                "nodeProperties: is required",
            ),
            (
                json!({"jobDefinitionName": "m", "type": "batch"}),
                "type: \"batch\" job definitions are not supported",
            ),
            (
                json!({"jobDefinitionName": "e"}),
                "containerProperties: is required",
            ),
            (
                json!({"jobDefinitionName": "e", "containerProperties": {"image": "a", "command": ["x"]}, "eksProperties": {"podProperties": {}}}),
                "eksProperties: is given with containerProperties",
            ),
        ];
        for (document, expected) in cases {
            let error = convert_job_definition(&document).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_whole_describe_output_is_a_list_of_definitions() {
        let output = json!({"jobDefinitions": [described(), described()]});
        assert!(is_aws_document(&output));
        assert_eq!(aws_job_definitions(&output).len(), 2);
        assert!(is_aws_document(&described()));
        assert!(!is_aws_document(
            &json!({"apiVersion": "batchctl/v1", "kind": "JobDefinition"})
        ));
    }
}
