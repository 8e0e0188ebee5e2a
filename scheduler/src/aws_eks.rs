//! AWS Batch on EKS job definitions (`eksProperties.podProperties`) into batchctl's container
//! properties, where they map: the one container's image, command and args, env, resources,
//! security context and volume mounts, the pod's volumes and `shareProcessNamespace`. What has no
//! counterpart (the service account, host network, DNS policy, image pull secrets, init containers,
//! pod metadata, a mount's `subPath`) is named as ignored; more than one container is refused.
//! Pure: JSON in, JSON and warnings out.

use serde_json::{json, Map, Value};

use crate::manifest::FieldError;

const PREFIX: &str = "eksProperties.podProperties";

/// `eksProperties` → (`containerProperties`, the definition's `podProperties` when the pod sets
/// a group), naming what is ignored in `ignored`.
pub fn convert_eks(
    value: &Value,
    ignored: &mut Vec<String>,
) -> Result<(Value, Option<Value>), FieldError> {
    let pod = value
        .get("podProperties")
        .and_then(Value::as_object)
        .ok_or_else(|| FieldError::new(PREFIX, "is required: give the pod's containers"))?;
    for (key, value) in value.as_object().into_iter().flatten() {
        if key != "podProperties" && !value.is_null() {
            ignored.push(format!("eksProperties.{key}"));
        }
    }
    let containers = pod
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let [container] = containers.as_slice() else {
        return Err(FieldError::new(
            format!("{PREFIX}.containers"),
            format!(
                "has {} containers; batchctl runs one container per attempt (put side work in the main container, or run it as a job of its own)",
                containers.len()
            ),
        ));
    };
    let Some(container) = container.as_object() else {
        return Err(FieldError::new(
            format!("{PREFIX}.containers[0]"),
            "must be an object",
        ));
    };
    let mut converted = Map::new();
    let mut group = None;
    let here = |key: &str| format!("{PREFIX}.containers[0].{key}");
    for (key, value) in container {
        match key.as_str() {
            "image" | "imagePullPolicy" => {
                converted.insert(key.clone(), value.clone());
            }
            // A container's name is the executor's (`main`).
            "name" | "command" | "args" => {}
            "env" => {
                converted.insert("environment".into(), value.clone());
            }
            "resources" => {
                converted.insert(
                    "resourceRequirements".into(),
                    resource_requirements(value, &here(key))?,
                );
            }
            "securityContext" => {
                for (field, setting) in value.as_object().into_iter().flatten() {
                    match (field.as_str(), setting) {
                        ("runAsUser", Value::Number(user)) => {
                            converted.insert("user".into(), Value::String(user.to_string()));
                        }
                        ("runAsGroup", Value::Number(_)) => group = Some(setting.clone()),
                        ("privileged", Value::Bool(_)) => {
                            converted.insert("privileged".into(), setting.clone());
                        }
                        ("readOnlyRootFilesystem", Value::Bool(_)) => {
                            converted.insert("readonlyRootFilesystem".into(), setting.clone());
                        }
                        // What batchctl's pods always have.
                        ("runAsNonRoot", Value::Bool(true))
                        | ("allowPrivilegeEscalation", Value::Bool(false)) => {}
                        _ if setting.is_null() => {}
                        _ => ignored.push(format!("{}.{field}", here(key))),
                    }
                }
            }
            "volumeMounts" => {
                let mounts = value.as_array().cloned().unwrap_or_default();
                let mut points = Vec::with_capacity(mounts.len());
                for (index, mount) in mounts.iter().enumerate() {
                    if mount.get("subPath").is_some_and(|sub| !sub.is_null()) {
                        ignored.push(format!("{}[{index}].subPath", here(key)));
                    }
                    points.push(json!({
                        "sourceVolume": mount.get("name").cloned().unwrap_or(Value::Null),
                        "containerPath": mount.get("mountPath").cloned().unwrap_or(Value::Null),
                        "readOnly": mount.get("readOnly").cloned().unwrap_or(Value::Bool(false)),
                    }));
                }
                converted.insert("mountPoints".into(), Value::Array(points));
            }
            _ if value.is_null() => {}
            other => ignored.push(here(other)),
        }
    }
    // Kubernetes' command replaces the image's entrypoint and args follow it; batchctl's command
    // replaces the entrypoint, so args alone (the entrypoint's) cannot be carried over.
    let words = |key: &str| -> Vec<Value> {
        container
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (command, args) = (words("command"), words("args"));
    if command.is_empty() && !args.is_empty() {
        return Err(FieldError::new(
            here("args"),
            "is given without command: batchctl runs the command as given, in place of the image's entrypoint; put the entrypoint first, in command",
        ));
    }
    converted.insert(
        "command".into(),
        Value::Array(command.into_iter().chain(args).collect()),
    );
    for (key, value) in pod {
        match key.as_str() {
            "containers" => {}
            "volumes" => {
                converted.insert("volumes".into(), volumes(value, ignored)?);
            }
            "shareProcessNamespace" if value == &Value::Bool(true) => {
                converted.insert(
                    "linuxParameters".into(),
                    json!({"initProcessEnabled": true}),
                );
            }
            _ if value.is_null() || value == &Value::Bool(false) => {}
            _ if value.as_array().is_some_and(Vec::is_empty) => {}
            other => ignored.push(format!("{PREFIX}.{other}")),
        }
    }
    let pod_properties = group.map(|group| json!({"securityContext": {"runAsGroup": group}}));
    Ok((Value::Object(converted), pod_properties))
}

/// `limits` (else `requests`) of `cpu`, `memory` and `nvidia.com/gpu` as resource requirements.
fn resource_requirements(value: &Value, field: &str) -> Result<Value, FieldError> {
    let amounts = value
        .get("limits")
        .or_else(|| value.get("requests"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut requirements = Vec::new();
    for (name, amount) in &amounts {
        let text = match amount {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => {
                return Err(FieldError::new(
                    format!("{field}.{name}"),
                    "must be a quantity",
                ))
            }
        };
        let (kind, value) = match name.as_str() {
            "cpu" => (
                "VCPU",
                vcpus(&text).map_err(|m| FieldError::new(format!("{field}.cpu"), m))?,
            ),
            "memory" => (
                "MEMORY",
                crate::core::storage::mebibytes_of_quantity(&text)
                    .map_err(|m| FieldError::new(format!("{field}.memory"), m))?
                    .to_string(),
            ),
            "nvidia.com/gpu" => ("GPU", text),
            other => {
                return Err(FieldError::new(
                    format!("{field}.{other}"),
                    "is not a resource batchctl places; use cpu, memory or nvidia.com/gpu",
                ))
            }
        };
        requirements.push(json!({"type": kind, "value": value}));
    }
    Ok(Value::Array(requirements))
}

/// A CPU quantity (`500m`, `2`, `0.5`) as vCPUs.
fn vcpus(text: &str) -> Result<String, String> {
    match text.strip_suffix('m') {
        Some(millis) => millis
            .parse::<u64>()
            .map(|millis| format!("{}", millis as f64 / 1000.0))
            .map_err(|_| format!("{text:?} is not a CPU quantity such as 500m or 2")),
        None => text
            .parse::<f64>()
            .map(|_| text.to_string())
            .map_err(|_| format!("{text:?} is not a CPU quantity such as 500m or 2")),
    }
}

/// The pod's volumes in batchctl's shape: `hostPath` becomes `host.sourcePath`; `emptyDir`,
/// `persistentVolumeClaim` and `secret` are batchctl's already.
fn volumes(value: &Value, ignored: &mut Vec<String>) -> Result<Value, FieldError> {
    let volumes = value.as_array().cloned().unwrap_or_default();
    let mut converted = Vec::with_capacity(volumes.len());
    for (index, volume) in volumes.iter().enumerate() {
        let field = format!("{PREFIX}.volumes[{index}]");
        let Some(volume) = volume.as_object() else {
            return Err(FieldError::new(field, "must be an object"));
        };
        let mut kept = Map::new();
        for (key, value) in volume {
            match key.as_str() {
                "name" | "emptyDir" | "persistentVolumeClaim" => {
                    kept.insert(key.clone(), value.clone());
                }
                "hostPath" => {
                    kept.insert(
                        "host".into(),
                        json!({"sourcePath": value.get("path").cloned().unwrap_or(Value::Null)}),
                    );
                }
                "secret" => {
                    if value.get("optional").is_some_and(|o| !o.is_null()) {
                        ignored.push(format!("{field}.secret.optional"));
                    }
                    kept.insert(
                        key.clone(),
                        json!({"secretName": value.get("secretName").cloned().unwrap_or(Value::Null)}),
                    );
                }
                _ if value.is_null() => {}
                other => ignored.push(format!("{field}.{other}")),
            }
        }
        converted.push(Value::Object(kept));
    }
    Ok(Value::Array(converted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws_compat::convert_job_definition;
    use crate::core::resource::Resource;
    use crate::manifest::parse_document;

    #[test]
    fn an_eks_definition_applies_where_it_maps() {
        let described = json!({
            "jobDefinitionName": "eks-render",
            "type": "container",
            "platformCapabilities": ["EC2"],
            "eksProperties": {"podProperties": {
                "serviceAccountName": "render",
                "hostNetwork": true,
                "shareProcessNamespace": true,
                "metadata": {"labels": {"team": "graphics"}},
                "containers": [{
                    "name": "render",
                    "image": "render:2",
                    "imagePullPolicy": "Always",
                    "command": ["render"],
                    "args": ["--scene", "Ref::scene"],
                    "env": [{"name": "MODE", "value": "fast"}],
                    "resources": {"limits": {"cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": "1"}},
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true, "readOnlyRootFilesystem": true},
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}, {"name": "scratch", "mountPath": "/scratch", "subPath": "x"}]
                }],
                "volumes": [
                    {"name": "data", "hostPath": {"path": "/data/in"}},
                    {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
                ]
            }}
        });
        let converted = convert_job_definition(&described).unwrap();
        assert_eq!(
            converted.ignored_fields,
            [
                "eksProperties.podProperties.containers[0].volumeMounts[1].subPath",
                "eksProperties.podProperties.hostNetwork",
                "eksProperties.podProperties.metadata",
                "eksProperties.podProperties.serviceAccountName",
                "platformCapabilities",
            ]
        );
        let Resource::JobDefinition { spec, .. } = parse_document(&converted.document).unwrap()
        else {
            panic!("not a job definition")
        };
        let container = &spec.container;
        assert_eq!(container.image, "render:2");
        assert_eq!(container.command, ["render", "--scene", "Ref::scene"]);
        assert_eq!(container.resources.vcpu_millis, 1500);
        assert_eq!(container.resources.memory_mib, 2048);
        assert_eq!(container.resources.gpus, 1);
        assert_eq!(container.user.as_deref(), Some("1000"));
        assert!(container.linux.read_only_root_filesystem && container.linux.init_process_enabled);
        assert_eq!(container.storage.volumes.len(), 2);
        assert!(container.storage.mount_points[0].read_only);
        assert_eq!(spec.pod.security_context.run_as_group, Some(1000));
    }

    #[test]
    fn what_cannot_map_is_refused_by_name() {
        let cases = [
            (
                json!({"podProperties": {"containers": [{"image": "a"}, {"image": "b"}]}}),
                "eksProperties.podProperties.containers: has 2 containers",
            ),
            (
                json!({"podProperties": {"containers": [{"image": "a", "args": ["x"]}]}}),
                "containers[0].args: is given without command",
            ),
            (
                json!({"podProperties": {"containers": [{"image": "a", "command": ["x"], "resources": {"limits": {"cpu": "lots"}}}]}}),
                "resources.cpu",
            ),
            (json!({}), "eksProperties.podProperties: is required"),
        ];
        for (eks, expected) in cases {
            let document = json!({"jobDefinitionName": "e", "eksProperties": eks});
            let error = convert_job_definition(&document).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
