//! `kind: ComputeEnvironment`: its wire spec and its validation into the model.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeEnvironmentSpec {
    #[serde(rename = "type")]
    pub environment_type: String,
    #[serde(default)]
    pub state: Option<ResourceState>,
    pub max_vcpus: serde_json::Number,
    #[serde(rename = "maxMemoryMiB")]
    pub max_memory_mib: serde_json::Number,
    #[serde(default)]
    pub max_gpus: Option<serde_json::Number>,
    /// Docker only: the engine's address; `DOCKER_HOST` or the local socket when absent.
    #[serde(default)]
    pub docker_host: Option<String>,
    /// Docker only: let definitions that ask for `privileged: true` run here.
    #[serde(default)]
    pub allow_privileged: Option<bool>,
    /// Docker only: keep failed attempts' containers for debugging.
    #[serde(default)]
    pub keep_failed_containers: Option<bool>,
    /// Kubernetes only (required there): the namespace the Jobs are created in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kubernetes only: a kubeconfig file; `KUBECONFIG`, `~/.kube/config` or, in a pod, its
    /// service account when absent.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Kubernetes only: the kubeconfig context; its current context when absent.
    #[serde(default)]
    pub kubeconfig_context: Option<String>,
    /// Kubernetes only: the service account the Jobs' pods run as.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Docker and Kubernetes: the host (node) directories jobs may mount, with what is below
    /// them. None by default.
    #[serde(default)]
    pub allowed_host_paths: Vec<String>,
    /// Docker only: the ids of the engine host's GPUs jobs may get (NVIDIA's device ids or UUIDs);
    /// `0` to `maxGpus - 1` when absent.
    #[serde(default)]
    pub gpu_ids: Vec<String>,
    /// Kubernetes only: pod options every job here gets, under its definition's `podProperties`.
    #[serde(default)]
    pub pod_defaults: Option<PodPropertiesSpec>,
}

pub fn compute_environment(
    name: EnvironmentName,
    spec: &ComputeEnvironmentSpec,
) -> Result<ComputeEnvironment, FieldError> {
    let docker_only = [
        ("dockerHost", spec.docker_host.is_some()),
        ("gpuIds", !spec.gpu_ids.is_empty()),
        (
            "keepFailedContainers",
            spec.keep_failed_containers.is_some(),
        ),
    ];
    let kubernetes_only = [
        ("namespace", spec.namespace.is_some()),
        ("kubeconfig", spec.kubeconfig.is_some()),
        ("kubeconfigContext", spec.kubeconfig_context.is_some()),
        ("serviceAccountName", spec.service_account_name.is_some()),
        ("podDefaults", spec.pod_defaults.is_some()),
    ];
    let refuse_others = |fields: &[(&'static str, bool)], kind: &str| match fields
        .iter()
        .find(|(_, set)| *set)
    {
        Some((field, _)) => Err(FieldError::new(
            *field,
            format!("applies to {kind} compute environments only; remove it or set type: {kind}"),
        )),
        None => Ok(()),
    };
    let backend = match spec.environment_type.as_str() {
        "process" => {
            refuse_others(&docker_only, "docker")?;
            refuse_others(&kubernetes_only, "kubernetes")?;
            if spec.allow_privileged.is_some() {
                return Err(FieldError::new(
                    "allowPrivileged",
                    "applies to docker and kubernetes compute environments only; remove it",
                ));
            }
            if !spec.allowed_host_paths.is_empty() {
                return Err(FieldError::new(
                    "allowedHostPaths",
                    "applies to docker and kubernetes compute environments only (process jobs see the host's files as they are); remove it",
                ));
            }
            Backend::Process
        }
        "docker" => {
            refuse_others(&kubernetes_only, "kubernetes")?;
            Backend::Docker(DockerSettings {
                host: spec
                    .docker_host
                    .clone()
                    .filter(|host| !host.trim().is_empty()),
                allow_privileged: spec.allow_privileged.unwrap_or(false),
                keep_failed_containers: spec.keep_failed_containers.unwrap_or(false),
                allowed_host_paths: allowed_host_paths(&spec.allowed_host_paths)?,
                gpu_ids: gpu_ids(&spec.gpu_ids)?,
            })
        }
        "kubernetes" => {
            refuse_others(&docker_only, "docker")?;
            let namespace = spec.namespace.clone().unwrap_or_default();
            if !is_dns_label(&namespace) {
                return Err(FieldError::new(
                    "namespace",
                    "is required for a kubernetes compute environment: the namespace its Jobs are created in (lowercase letters, digits and '-', at most 63)",
                ));
            }
            let optional = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
            Backend::Kubernetes(KubernetesSettings {
                namespace,
                kubeconfig: optional(&spec.kubeconfig),
                context: optional(&spec.kubeconfig_context),
                service_account_name: optional(&spec.service_account_name),
                allow_privileged: spec.allow_privileged.unwrap_or(false),
                allowed_host_paths: allowed_host_paths(&spec.allowed_host_paths)?,
                pod_defaults: Box::new(pod_options(spec.pod_defaults.as_ref(), "podDefaults")?),
            })
        }
        other => {
            return Err(FieldError::new(
                "type",
                format!("unknown type {other:?}; use \"process\", \"docker\" or \"kubernetes\""),
            ))
        }
    };
    let vcpu_millis =
        vcpus(&spec.max_vcpus.to_string()).map_err(|m| FieldError::new("maxVcpus", m))?;
    let memory_mib = whole_number(&spec.max_memory_mib.to_string())
        .map_err(|m| FieldError::new("maxMemoryMiB", m))?;
    let gpus = match &spec.max_gpus {
        Some(gpus) => whole_number(&gpus.to_string()).map_err(|m| FieldError::new("maxGpus", m))?,
        None => 0,
    };
    if let Backend::Docker(settings) = &backend {
        if !settings.gpu_ids.is_empty() && gpus > settings.gpu_ids.len() as u64 {
            return Err(FieldError::new(
                "gpuIds",
                format!(
                    "lists {} GPUs but maxGpus is {gpus}; list every GPU jobs may get",
                    settings.gpu_ids.len()
                ),
            ));
        }
    }
    Ok(ComputeEnvironment {
        name,
        backend,
        state: spec.state.unwrap_or(ResourceState::Enabled),
        capacity: Resources {
            vcpu_millis,
            memory_mib,
            gpus,
        },
    })
}

/// `allowedHostPaths`: absolute directories without `..` or `:`, at most 64.
fn allowed_host_paths(paths: &[String]) -> Result<Vec<String>, FieldError> {
    if paths.len() > 64 {
        return Err(FieldError::new(
            "allowedHostPaths",
            format!("lists {} paths; list at most 64", paths.len()),
        ));
    }
    for (index, path) in paths.iter().enumerate() {
        crate::core::linux::check_absolute_path(path)
            .map_err(|message| FieldError::new(format!("allowedHostPaths[{index}]"), message))?;
    }
    Ok(paths.to_vec())
}

/// `gpuIds`: each an index or a UUID as NVIDIA's runtime names devices, each once, at most 64.
fn gpu_ids(ids: &[String]) -> Result<Vec<String>, FieldError> {
    if ids.len() > 64 {
        return Err(FieldError::new(
            "gpuIds",
            format!("lists {} GPUs; list at most 64", ids.len()),
        ));
    }
    for (index, id) in ids.iter().enumerate() {
        let valid = !id.is_empty()
            && id.len() <= 128
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid || ids[..index].contains(id) {
            return Err(FieldError::new(
                format!("gpuIds[{index}]"),
                format!("{id:?} is not a GPU id listed once (an index such as 0, or a UUID such as GPU-8e2c…)"),
            ));
        }
    }
    Ok(ids.to_vec())
}
