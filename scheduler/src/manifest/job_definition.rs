//! `kind: JobDefinition`: container properties, retry strategy, timeout; and the checks shared
//! with submits (environment, resources, retries).

use super::*;
use crate::core::multinode::NodeProperties;
use crate::core::output_limit::MIN_MAX_LOG_BYTES;
use crate::core::secret::{secret_name_of, SecretReference};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDefinitionSpec {
    /// AWS Batch's `type`: `container` (the default) or `multinode`.
    #[serde(default, rename = "type")]
    pub definition_type: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The container of a `container` definition.
    #[serde(default)]
    pub container_properties: Option<ContainerPropertiesSpec>,
    /// The nodes of a `multinode` definition.
    #[serde(default)]
    pub node_properties: Option<NodePropertiesSpec>,
    #[serde(default)]
    pub retry_strategy: Option<RetryStrategySpec>,
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    /// Order within a share of a fair-share queue; higher first.
    #[serde(default)]
    pub scheduling_priority: Option<i64>,
    /// The most bytes of output one attempt keeps (its first and last halves), instead of the
    /// server's `--max-log-bytes-per-attempt`.
    #[serde(default)]
    pub max_log_bytes_per_attempt: Option<u64>,
    /// Consumable resources each job asks for (AWS Batch's field).
    #[serde(default)]
    pub consumable_resource_properties: Option<ConsumableResourceProperties>,
    /// Tags each job of the definition carries (a submit's own tags win); concurrency limits may
    /// be keyed by one (`tag:NAME`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Whether jobs' tags become labels of their containers (Docker), Jobs and pods (Kubernetes).
    #[serde(default)]
    pub propagate_tags: Option<bool>,
    /// Kubernetes only: node selector, tolerations, affinity, priority class, pod user and groups.
    #[serde(default)]
    pub pod_properties: Option<PodPropertiesSpec>,
}

/// AWS Batch's `nodeProperties` of a multi-node parallel definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePropertiesSpec {
    pub num_nodes: u32,
    #[serde(default)]
    pub main_node: u32,
    pub node_range_properties: Vec<NodeRangeSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRangeSpec {
    /// `"0:"`, `"1:3"`, `"2"`, `":1"`.
    pub target_nodes: String,
    pub container: ContainerPropertiesSpec,
}

/// `podProperties` of a definition and `podDefaults` of a kubernetes environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodPropertiesSpec {
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<crate::core::pod::Toleration>,
    #[serde(default)]
    pub affinity: Option<serde_json::Value>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
    #[serde(default)]
    pub security_context: Option<crate::core::pod::PodSecurity>,
}

/// Checks `podProperties` (or `podDefaults`), naming the field under `prefix`.
pub fn pod_options(
    spec: Option<&PodPropertiesSpec>,
    prefix: &str,
) -> Result<crate::core::pod::PodOptions, FieldError> {
    let Some(spec) = spec else {
        return Ok(Default::default());
    };
    let options = crate::core::pod::PodOptions {
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.as_ref().map(|affinity| affinity.to_string()),
        priority_class_name: spec.priority_class_name.clone(),
        security_context: spec.security_context.clone().unwrap_or_default(),
    };
    options
        .check()
        .map_err(|(field, message)| FieldError::new(format!("{prefix}.{field}"), message))?;
    Ok(options)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPropertiesSpec {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
    #[serde(default)]
    pub resource_requirements: Vec<ResourceRequirement>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<ImagePullPolicy>,
    #[serde(default)]
    pub privileged: Option<bool>,
    #[serde(default)]
    pub linux_parameters: Option<LinuxParametersSpec>,
    /// Variables set from stored secrets when an attempt starts (AWS Batch's field): `valueFrom`
    /// names a `kind: Secret`, or a Secrets Manager or SSM parameter ARN whose name is one.
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    /// Resource limits (`ulimit`), by Docker's names.
    #[serde(default)]
    pub ulimits: Vec<UlimitSpec>,
    #[serde(default)]
    pub readonly_root_filesystem: Option<bool>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default)]
    pub mount_points: Vec<MountPointSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UlimitSpec {
    pub name: String,
    pub soft_limit: i64,
    pub hard_limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    pub value_from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinuxParametersSpec {
    #[serde(default)]
    pub capabilities: Option<CapabilitiesSpec>,
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    #[serde(default)]
    pub init_process_enabled: Option<bool>,
    /// MiB.
    #[serde(default)]
    pub shared_memory_size: Option<i64>,
    #[serde(default)]
    pub tmpfs: Vec<TmpfsSpec>,
    /// MiB of swap beyond memory (0: none).
    #[serde(default)]
    pub max_swap: Option<i64>,
    #[serde(default)]
    pub swappiness: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSpec {
    pub host_path: String,
    #[serde(default)]
    pub container_path: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TmpfsSpec {
    pub container_path: String,
    /// MiB.
    pub size: i64,
    #[serde(default)]
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilitiesSpec {
    #[serde(default)]
    pub add: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirement {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryStrategySpec {
    #[serde(default)]
    pub attempts: Option<i64>,
    /// How many disruptions `RETRY_WITHOUT_COUNT` may retry without spending an attempt
    /// (default 3, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disruptions: Option<u32>,
    #[serde(default)]
    pub evaluate_on_exit: Vec<EvaluateOnExitSpec>,
    #[serde(default)]
    pub backoff: Option<BackoffSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluateOnExitSpec {
    #[serde(default)]
    pub on_exit_code: Option<String>,
    #[serde(default)]
    pub on_reason: Option<String>,
    #[serde(default)]
    pub on_status_reason: Option<String>,
    pub action: String,
    /// On a retry this rule decides, grow the next attempt's requirements:
    /// `{memoryFactor: 2.0, maxMemoryMiB: 8192}`, and the same for vCPUs (`vcpuFactor`,
    /// `maxVcpus`). Not in AWS Batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_adjustments: Option<crate::core::model::ResourceAdjustments>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackoffSpec {
    pub initial_delay_seconds: i64,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub max_delay_seconds: Option<i64>,
    #[serde(default)]
    pub jitter: Option<bool>,
}

/// AWS Batch allows up to 5 `evaluateOnExit` rules.
pub const MAX_EXIT_RULES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutSpec {
    pub attempt_duration_seconds: i64,
}

pub fn definition_spec(spec: &JobDefinitionSpec) -> Result<DefinitionSpec, FieldError> {
    let (container, nodes) = match (
        spec.definition_type.as_deref().unwrap_or("container"),
        &spec.container_properties,
        &spec.node_properties,
    ) {
        ("container", Some(properties), None) => (
            container_properties(properties, "containerProperties")?,
            None,
        ),
        ("container", None, None) => {
            return Err(FieldError::new(
                "containerProperties",
                "is required: give the container to run (image, command, resourceRequirements)",
            ))
        }
        ("container", _, Some(_)) => {
            return Err(FieldError::new(
                "nodeProperties",
                "belongs to multinode definitions; set type: multinode, or leave nodeProperties out",
            ))
        }
        ("multinode", None, Some(properties)) => {
            let nodes = node_properties(properties)?;
            let mut container = nodes.container_of(nodes.main_node).clone();
            container.resources = nodes.total_resources();
            (container, Some(nodes))
        }
        ("multinode", _, None) => {
            return Err(FieldError::new(
                "nodeProperties",
                "is required for a multinode definition: give numNodes, mainNode and nodeRangeProperties",
            ))
        }
        ("multinode", Some(_), Some(_)) => {
            return Err(FieldError::new(
                "containerProperties",
                "a multinode definition gives each node's container in nodeProperties.nodeRangeProperties; leave containerProperties out",
            ))
        }
        (other, _, _) => {
            return Err(FieldError::new(
                "type",
                format!("{other:?} job definitions are not supported; use \"container\" or \"multinode\""),
            ))
        }
    };
    Ok(DefinitionSpec {
        parameters: spec.parameters.clone(),
        container,
        retry: retry_policy(spec.retry_strategy.as_ref())?,
        timeout_seconds: timeout_seconds(spec.timeout.as_ref())?,
        scheduling_priority: spec.scheduling_priority.unwrap_or(0),
        max_log_bytes: match spec.max_log_bytes_per_attempt {
            Some(bytes) if bytes < MIN_MAX_LOG_BYTES => {
                return Err(FieldError::new(
                    "maxLogBytesPerAttempt",
                    format!("is {bytes}; give at least {MIN_MAX_LOG_BYTES} (room for the start and the end of the output)"),
                ))
            }
            bytes => bytes,
        },
        consumable_resources: match &spec.consumable_resource_properties {
            Some(properties) => consumable_requests(properties)
                .map_err(|error| error.within("consumableResourceProperties"))?,
            None => Vec::new(),
        },
        tags: tags(&spec.tags)?,
        propagate_tags: spec.propagate_tags.unwrap_or(false),
        pod: pod_options(spec.pod_properties.as_ref(), "podProperties")?,
        nodes,
    })
}

/// One container's properties, checked, its fields named under `prefix`.
fn container_properties(
    properties: &ContainerPropertiesSpec,
    prefix: &str,
) -> Result<ContainerProperties, FieldError> {
    let within = |error: FieldError| error.within(prefix);
    let image = match properties.image.as_deref().map(str::trim) {
        Some(image) if !image.is_empty() => image.to_string(),
        _ => {
            return Err(FieldError::new(
                format!("{prefix}.image"),
                "is required: name the container image to run (process environments ignore it)",
            ))
        }
    };
    if properties.command.is_empty() {
        return Err(FieldError::new(
            format!("{prefix}.command"),
            "is required: give the command to run as a list, e.g. [\"sh\", \"-c\", \"echo hi\"]",
        ));
    }
    Ok(ContainerProperties {
        image,
        command: properties.command.clone(),
        environment: environment(&properties.environment, "environment").map_err(within)?,
        resources: resources(&properties.resource_requirements, DEFAULT_RESOURCES)
            .map_err(within)?,
        working_dir: properties.working_dir.clone(),
        user: properties.user.clone(),
        image_pull_policy: properties.image_pull_policy.unwrap_or_default(),
        privileged: properties.privileged.unwrap_or(false),
        capabilities: capabilities(properties.linux_parameters.as_ref()).map_err(within)?,
        secrets: secret_references(&properties.secrets, &properties.environment).map_err(within)?,
        linux: super::linux::linux_settings(properties).map_err(within)?,
        storage: super::storage::storage(&properties.volumes, &properties.mount_points)
            .map_err(within)?,
    })
}

/// `nodeProperties`, checked (`core::multinode`): each range's container as a definition's, and
/// every node in exactly one range.
fn node_properties(spec: &NodePropertiesSpec) -> Result<NodeProperties, FieldError> {
    let ranges = spec
        .node_range_properties
        .iter()
        .enumerate()
        .map(|(position, range)| {
            let prefix = format!("nodeProperties.nodeRangeProperties[{position}].container");
            Ok((
                range.target_nodes.clone(),
                container_properties(&range.container, &prefix)?,
            ))
        })
        .collect::<Result<Vec<_>, FieldError>>()?;
    NodeProperties::new(spec.num_nodes, spec.main_node, ranges)
        .map_err(|(field, message)| FieldError::new(format!("nodeProperties.{field}"), message))
}

/// The most tags a definition or a job may carry (AWS Batch's limit).
const MAX_TAGS: usize = 50;

/// Tags as AWS Batch allows them: at most 50, keys of 1 to 128 characters, values up to 256.
pub(super) fn tags(
    tags: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            format!("has {} tags; give at most {MAX_TAGS}", tags.len()),
        ));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(FieldError::new(
                "tags",
                format!("{key:?} is not a tag key: 1 to 128 characters"),
            ));
        }
        if key.starts_with("batchctl.") || key.starts_with("aws:") {
            return Err(FieldError::new(
                "tags",
                format!("{key:?} starts with a prefix batchctl reserves (batchctl., aws:) for its own labels"),
            ));
        }
        if value.chars().count() > 256 {
            return Err(FieldError::new(
                format!("tags.{key}"),
                "is longer than 256 characters",
            ));
        }
    }
    Ok(tags.clone())
}

/// Capability names as Docker takes them (`NET_ADMIN`; a `CAP_` prefix is accepted and removed).
pub(super) fn capabilities(
    parameters: Option<&LinuxParametersSpec>,
) -> Result<Vec<String>, FieldError> {
    let added = parameters
        .and_then(|p| p.capabilities.as_ref())
        .map(|c| c.add.clone())
        .unwrap_or_default();
    added
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let name = name.strip_prefix("CAP_").unwrap_or(name);
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
            if valid {
                Ok(name.to_string())
            } else {
                Err(FieldError::new(
                    format!("linuxParameters.capabilities.add[{index}]"),
                    format!("{name:?} is not a capability name such as NET_ADMIN"),
                ))
            }
        })
        .collect()
}

pub fn retry_policy(strategy: Option<&RetryStrategySpec>) -> Result<RetryPolicy, FieldError> {
    let Some(strategy) = strategy else {
        return Ok(RetryPolicy::attempts(1));
    };
    let attempts = match strategy.attempts {
        None => 1,
        Some(attempts @ 1..=10) => attempts as u32,
        Some(other) => {
            return Err(FieldError::new(
                "retryStrategy.attempts",
                format!("{other} is out of range; use 1 to {MAX_RETRY_ATTEMPTS}"),
            ))
        }
    };
    if strategy.evaluate_on_exit.len() > MAX_EXIT_RULES {
        return Err(FieldError::new(
            "retryStrategy.evaluateOnExit",
            format!(
                "has {} rules; at most {MAX_EXIT_RULES} are allowed",
                strategy.evaluate_on_exit.len()
            ),
        ));
    }
    let evaluate_on_exit = strategy
        .evaluate_on_exit
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            exit_rule(rule).map_err(|e| e.within(&format!("retryStrategy.evaluateOnExit[{index}]")))
        })
        .collect::<Result<_, _>>()?;
    let backoff = strategy
        .backoff
        .as_ref()
        .map(|b| backoff(b).map_err(|e| e.within("retryStrategy.backoff")))
        .transpose()?;
    let max_disruptions = match strategy.max_disruptions {
        None => DEFAULT_MAX_DISRUPTIONS,
        Some(max @ 0..=MAX_DISRUPTIONS) => max,
        Some(other) => {
            return Err(FieldError::new(
                "retryStrategy.maxDisruptions",
                format!("{other} is out of range; use 0 to {MAX_DISRUPTIONS}"),
            ))
        }
    };
    Ok(RetryPolicy {
        attempts,
        evaluate_on_exit,
        backoff,
        max_disruptions,
    })
}

pub(super) fn exit_rule(rule: &EvaluateOnExitSpec) -> Result<ExitRule, FieldError> {
    let action = match rule.action.to_ascii_uppercase().as_str() {
        "RETRY" => RetryAction::Retry,
        "EXIT" => RetryAction::Exit,
        "RETRY_WITHOUT_COUNT" => RetryAction::RetryWithoutCount,
        _ => {
            return Err(FieldError::new(
                "action",
                format!(
                    "{:?} is not an action; use RETRY, EXIT or RETRY_WITHOUT_COUNT",
                    rule.action
                ),
            ))
        }
    };
    let pattern = |field: &str, value: &Option<String>| -> Result<Option<String>, FieldError> {
        let Some(value) = value else { return Ok(None) };
        let star_inside = value.trim_end_matches('*').contains('*') || value.ends_with("**");
        if value.is_empty() || value.len() > 512 || star_inside {
            return Err(FieldError::new(
                field,
                format!(
                    "{value:?} is not a pattern: 1 to 512 characters, with `*` only at the end"
                ),
            ));
        }
        Ok(Some(value.clone()))
    };
    let on_exit_code = pattern("onExitCode", &rule.on_exit_code)?;
    if let Some(code) = &on_exit_code {
        if !code
            .trim_end_matches('*')
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            return Err(FieldError::new(
                "onExitCode",
                format!("{code:?} may only hold digits and a trailing `*`"),
            ));
        }
    }
    let resource_adjustments = match (rule.resource_adjustments, action) {
        (None, _) => None,
        (Some(adjustments), RetryAction::Retry | RetryAction::RetryWithoutCount) => {
            if adjustments.memory_factor_percent <= 100 && adjustments.vcpu_factor_percent <= 100 {
                return Err(FieldError::new(
                    "resourceAdjustments",
                    "grows nothing; give memoryFactor or vcpuFactor above 1",
                ));
            }
            Some(adjustments)
        }
        (Some(_), RetryAction::Exit) => {
            return Err(FieldError::new(
                "resourceAdjustments",
                "applies to a rule that retries; use it with action RETRY or RETRY_WITHOUT_COUNT",
            ))
        }
    };
    Ok(ExitRule {
        on_exit_code,
        on_reason: pattern("onReason", &rule.on_reason)?,
        on_status_reason: pattern("onStatusReason", &rule.on_status_reason)?,
        action,
        resource_adjustments,
    })
}

pub(super) fn backoff(spec: &BackoffSpec) -> Result<Backoff, FieldError> {
    if spec.initial_delay_seconds < 1 {
        return Err(FieldError::new(
            "initialDelaySeconds",
            format!(
                "{} is not a delay; give 1 or more seconds",
                spec.initial_delay_seconds
            ),
        ));
    }
    let factor = spec.factor.unwrap_or(2.0);
    if !(1.0..=10.0).contains(&factor) {
        return Err(FieldError::new(
            "factor",
            format!("{factor} is out of range; use 1 to 10"),
        ));
    }
    let max_delay_seconds = spec.max_delay_seconds.unwrap_or(3600);
    if max_delay_seconds < spec.initial_delay_seconds {
        return Err(FieldError::new(
            "maxDelaySeconds",
            format!(
                "{max_delay_seconds} is below initialDelaySeconds ({}); give at least that",
                spec.initial_delay_seconds
            ),
        ));
    }
    Ok(Backoff {
        initial_delay_seconds: spec.initial_delay_seconds as u64,
        factor_percent: (factor * 100.0).round() as u64,
        max_delay_seconds: max_delay_seconds as u64,
        jitter: spec.jitter.unwrap_or(false),
    })
}

pub fn timeout_seconds(timeout: Option<&TimeoutSpec>) -> Result<Option<u64>, FieldError> {
    match timeout.map(|t| t.attempt_duration_seconds) {
        None => Ok(None),
        Some(seconds @ 1..) => Ok(Some(seconds as u64)),
        Some(other) => Err(FieldError::new(
            "timeout.attemptDurationSeconds",
            format!("{other} is not a duration; give a positive number of seconds"),
        )),
    }
}

/// Validates environment variables into ordered, unique pairs.
pub fn environment(
    variables: &[KeyValue],
    field: &str,
) -> Result<Vec<(String, String)>, FieldError> {
    let mut seen = HashSet::new();
    for (index, variable) in variables.iter().enumerate() {
        let field = format!("{field}[{index}].name");
        let valid = !variable.name.is_empty()
            && !variable.name.contains('=')
            && !variable.name.contains('\0');
        if !valid {
            return Err(FieldError::new(
                field,
                format!("{:?} is not a valid variable name", variable.name),
            ));
        }
        if let Some(prefix) = RESERVED_VARIABLE_PREFIXES
            .iter()
            .find(|prefix| variable.name.starts_with(*prefix))
        {
            return Err(FieldError::new(
                field,
                format!(
                    "{:?} starts with {prefix:?}, which batchctl reserves for the variables it sets",
                    variable.name
                ),
            ));
        }
        if !seen.insert(variable.name.as_str()) {
            return Err(FieldError::new(
                field,
                format!("{:?} is set twice", variable.name),
            ));
        }
    }
    Ok(variables
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect())
}

/// A definition's `secrets`: each a valid variable name, set once, and not also in `environment`;
/// each `valueFrom` a secret's name or an ARN that names one.
fn secret_references(
    secrets: &[SecretSpec],
    plain: &[KeyValue],
) -> Result<Vec<SecretReference>, FieldError> {
    let as_variables: Vec<KeyValue> = secrets
        .iter()
        .map(|secret| KeyValue {
            name: secret.name.clone(),
            value: String::new(),
        })
        .collect();
    environment(&as_variables, "secrets")?;
    secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| {
            if plain.iter().any(|variable| variable.name == secret.name) {
                return Err(FieldError::new(
                    format!("secrets[{index}].name"),
                    format!(
                        "{:?} is also set in environment; set it in one place",
                        secret.name
                    ),
                ));
            }
            let value_from = secret_name_of(&secret.value_from).map_err(|message| {
                FieldError::new(format!("secrets[{index}].valueFrom"), message)
            })?;
            Ok(SecretReference {
                name: secret.name.clone(),
                value_from,
            })
        })
        .collect()
}

/// Applies resource requirements over `base`: each listed type replaces the base's value.
pub fn resources(
    requirements: &[ResourceRequirement],
    base: Resources,
) -> Result<Resources, FieldError> {
    let mut result = base;
    let mut seen = HashSet::new();
    for (index, requirement) in requirements.iter().enumerate() {
        let field = format!("resourceRequirements[{index}]");
        let value_error = |message: String| FieldError::new(format!("{field}.value"), message);
        if !seen.insert(requirement.resource_type.as_str()) {
            return Err(FieldError::new(
                format!("{field}.type"),
                format!("{} is listed twice", requirement.resource_type),
            ));
        }
        match requirement.resource_type.as_str() {
            "VCPU" => {
                result.vcpu_millis = vcpus(&requirement.value).map_err(value_error)?;
                if result.vcpu_millis == 0 {
                    return Err(value_error("a job needs more than 0 vCPUs".into()));
                }
            }
            "MEMORY" => {
                result.memory_mib = whole_number(&requirement.value).map_err(value_error)?;
                if result.memory_mib == 0 {
                    return Err(value_error("a job needs more than 0 MiB of memory".into()));
                }
            }
            "GPU" => result.gpus = whole_number(&requirement.value).map_err(value_error)?,
            other => {
                return Err(FieldError::new(
                    format!("{field}.type"),
                    format!("unknown resource type {other:?}; use VCPU, MEMORY or GPU"),
                ))
            }
        }
    }
    Ok(result)
}

/// Parses a vCPU count ("2", "0.25") into thousandths.
pub(super) fn vcpus(text: &str) -> Result<u64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of vCPUs"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "{text} is negative or not finite; give 0 or more vCPUs"
        ));
    }
    let millis = value * 1000.0;
    if millis.fract() != 0.0 {
        return Err(format!("{text} is finer than a thousandth of a vCPU"));
    }
    Ok(millis as u64)
}

pub(super) fn whole_number(text: &str) -> Result<u64, String> {
    match text.trim().parse::<i64>() {
        Ok(value) if value >= 0 => Ok(value as u64),
        Ok(value) => Err(format!("{value} is negative; give 0 or more")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}
