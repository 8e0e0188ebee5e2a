//! The wire form of resources (`batchctl apply -f`) and of submit requests: camelCase, AWS Batch's
//! field names, parsed strictly (unknown fields are errors) and validated once into model types.
//! Every error names the field it is about.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::attempt::RESERVED_VARIABLE_PREFIXES;
use crate::core::event_pattern::EventPattern;
use crate::core::events::{check_input_paths, EventRule};
use crate::core::model::{
    ArrayRole, Backend, Backoff, ComputeEnvironment, ContainerProperties, DefinitionName,
    DefinitionSpec, Dependency, DependencyKind, DockerSettings, EnvironmentName, ExitRule,
    FairSharePolicy, ImagePullPolicy, Job, JobDefinition, JobId, JobName, JobQueue, JobSpec,
    JobStatus, KubernetesSettings, QueueName, ResourceState, Resources, RetryAction, RetryPolicy,
    RunnableTimeLimit, ShareWeight, MAX_ARRAY_SIZE,
};
use crate::core::schedule::{parse_expression, CatchUp, CatchUpPolicy, OverlapPolicy, Schedule};
use crate::core::webhooks::Profile;

pub const API_VERSION: &str = "batchctl/v1";
/// Used when a definition names no VCPU or MEMORY requirement.
pub const DEFAULT_RESOURCES: Resources = Resources {
    vcpu_millis: 1000,
    memory_mib: 512,
    gpus: 0,
};
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// A problem with one field of the input, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, for a field inside `prefix`.
    pub fn within(mut self, prefix: &str) -> FieldError {
        self.field = match self.field.as_str() {
            "" | "." => prefix.to_string(),
            field => format!("{prefix}.{field}"),
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    ComputeEnvironment,
    JobQueue,
    JobDefinition,
    Schedule,
    EventRule,
    WebhookTrigger,
    Notification,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::ComputeEnvironment,
        Kind::JobQueue,
        Kind::JobDefinition,
        Kind::Schedule,
        Kind::EventRule,
        Kind::WebhookTrigger,
        Kind::Notification,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::ComputeEnvironment => "ComputeEnvironment",
            Kind::JobQueue => "JobQueue",
            Kind::JobDefinition => "JobDefinition",
            Kind::Schedule => "Schedule",
            Kind::EventRule => "EventRule",
            Kind::WebhookTrigger => "WebhookTrigger",
            Kind::Notification => "Notification",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
}

/// One document of a manifest, before its spec is looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Document {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: serde_json::Value,
}

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobQueueSpec {
    pub priority: i64,
    #[serde(default)]
    pub state: Option<ResourceState>,
    pub compute_environment_order: Vec<ComputeEnvironmentOrder>,
    #[serde(default)]
    pub job_state_time_limit_actions: Vec<JobStateTimeLimitActionSpec>,
    /// AWS Batch references a SchedulingPolicy by ARN; here the policy is written in the queue.
    #[serde(default)]
    pub scheduling_policy: Option<SchedulingPolicySpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulingPolicySpec {
    pub fairshare_policy: FairsharePolicySpec,
}

/// AWS Batch's FairsharePolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FairsharePolicySpec {
    #[serde(default)]
    pub share_decay_seconds: Option<u64>,
    #[serde(default)]
    pub compute_reservation: Option<u32>,
    #[serde(default)]
    pub share_distribution: Vec<ShareAttributesSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShareAttributesSpec {
    pub share_identifier: String,
    #[serde(default)]
    pub weight_factor: Option<f64>,
}

/// AWS Batch's limits on a fair-share policy.
const MAX_SHARE_DECAY_SECONDS: u64 = 604_800;
const MAX_COMPUTE_RESERVATION: u32 = 99;
const WEIGHT_FACTOR_RANGE: std::ops::RangeInclusive<f64> = 0.0001..=999.9999;

/// AWS Batch's JobStateTimeLimitAction: what to do with a job left too long in a state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobStateTimeLimitActionSpec {
    pub reason: String,
    pub state: String,
    pub max_time_seconds: u64,
    pub action: String,
}

/// The longest `maxTimeSeconds` (AWS Batch's; it also has a floor of 600, which is lifted here so
/// a short limit can be tried out).
pub const MAX_TIME_LIMIT_SECONDS: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeEnvironmentOrder {
    pub order: i64,
    pub compute_environment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDefinitionSpec {
    /// AWS Batch's `type`; only `container` exists here.
    #[serde(default, rename = "type")]
    pub definition_type: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    pub container_properties: ContainerPropertiesSpec,
    #[serde(default)]
    pub retry_strategy: Option<RetryStrategySpec>,
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    /// Order within a share of a fair-share queue; higher first.
    #[serde(default)]
    pub scheduling_priority: Option<i64>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinuxParametersSpec {
    #[serde(default)]
    pub capabilities: Option<CapabilitiesSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilitiesSpec {
    #[serde(default)]
    pub add: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirement {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryStrategySpec {
    #[serde(default)]
    pub attempts: Option<i64>,
    #[serde(default)]
    pub evaluate_on_exit: Vec<EvaluateOnExitSpec>,
    #[serde(default)]
    pub backoff: Option<BackoffSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluateOnExitSpec {
    #[serde(default)]
    pub on_exit_code: Option<String>,
    #[serde(default)]
    pub on_reason: Option<String>,
    #[serde(default)]
    pub on_status_reason: Option<String>,
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutSpec {
    pub attempt_duration_seconds: i64,
}

/// A document whose spec has been parsed and validated on its own (references to other resources
/// are checked later, against the store and the rest of the apply).
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    ComputeEnvironment(ComputeEnvironment),
    JobQueue(JobQueue),
    JobDefinition {
        name: DefinitionName,
        spec: Box<DefinitionSpec>,
    },
    /// A schedule and the submit it makes at each tick.
    Schedule {
        schedule: Box<Schedule>,
        target: Box<SubmitJobRequest>,
    },
    /// An event rule and the submit it makes for each matching event.
    EventRule {
        rule: Box<EventRule>,
        target: Box<SubmitJobRequest>,
    },
    WebhookTrigger(Box<WebhookTrigger>),
    Notification(Box<Notification>),
}

/// A validated `kind: Notification`: events matching the pattern are POSTed to the endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub name: String,
    pub pattern: EventPattern,
    pub endpoint: String,
    /// Signs each POST per Standard Webhooks when present.
    pub secret: Option<String>,
    /// Retries after the first try; then the delivery goes to the dead-letter list.
    pub maximum_retry_attempts: u32,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationSpec {
    pub event_pattern: serde_json::Value,
    pub endpoint: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicySpec>,
    #[serde(default)]
    pub state: Option<ResourceState>,
}

/// EventBridge's target RetryPolicy (the attempts part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicySpec {
    pub maximum_retry_attempts: u32,
}

/// EventBridge's ceiling on retries.
const MAX_NOTIFICATION_RETRIES: u32 = 185;

pub fn notification(name: String, spec: &NotificationSpec) -> Result<Notification, FieldError> {
    use base64::Engine as _;
    let pattern = EventPattern::parse(&spec.event_pattern)
        .map_err(|error| FieldError::new(format!("eventPattern.{}", error.path), error.message))?;
    let endpoint = spec.endpoint.trim();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(FieldError::new(
            "endpoint",
            format!("{endpoint:?} is not an http:// or https:// URL"),
        ));
    }
    if let Some(secret) = &spec.secret {
        let key = secret.strip_prefix("whsec_").unwrap_or(secret);
        if base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_or(true, |key| key.len() < 16)
        {
            return Err(FieldError::new(
                "secret",
                "is not a Standard Webhooks secret: whsec_ followed by at least 16 base64 bytes",
            ));
        }
    }
    let maximum_retry_attempts = spec
        .retry_policy
        .as_ref()
        .map_or(5, |p| p.maximum_retry_attempts);
    if maximum_retry_attempts > MAX_NOTIFICATION_RETRIES {
        return Err(FieldError::new(
            "retryPolicy.maximumRetryAttempts",
            format!("is {maximum_retry_attempts}; give 0 to {MAX_NOTIFICATION_RETRIES}"),
        ));
    }
    Ok(Notification {
        name,
        pattern,
        endpoint: endpoint.to_string(),
        secret: spec.secret.clone(),
        maximum_retry_attempts,
        enabled: spec.state.unwrap_or(ResourceState::Enabled) == ResourceState::Enabled,
    })
}

/// A validated `kind: WebhookTrigger`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookTrigger {
    pub name: String,
    pub profile: Profile,
    /// Any of them may have signed a delivery (rotation).
    pub secrets: Vec<String>,
    /// The `source` of the events it makes.
    pub source: String,
    /// Their `detail-type`, when the profile does not name one (GitHub's event name does).
    pub detail_type: String,
}

/// `kind: WebhookTrigger`: `POST /v1/hooks/NAME` takes any JSON a third party sends, checks its
/// signature, and puts it on the bus as an event's detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookTriggerSpec {
    pub profile: Profile,
    pub secrets: Vec<String>,
    pub source: String,
    #[serde(default)]
    pub detail_type: Option<String>,
}

pub fn webhook_trigger(
    name: String,
    spec: &WebhookTriggerSpec,
) -> Result<WebhookTrigger, FieldError> {
    use base64::Engine as _;
    if spec.secrets.is_empty() {
        return Err(FieldError::new(
            "secrets",
            "is empty; give at least one (several while rotating)",
        ));
    }
    for (index, secret) in spec.secrets.iter().enumerate() {
        let field = format!("secrets[{index}]");
        match spec.profile {
            Profile::StandardWebhooks => {
                let key = secret.strip_prefix("whsec_").unwrap_or(secret);
                let decoded = base64::engine::general_purpose::STANDARD.decode(key);
                if decoded.map_or(true, |key| key.len() < 16) {
                    return Err(FieldError::new(
                        field,
                        "is not a Standard Webhooks secret: whsec_ followed by at least 16 base64 bytes",
                    ));
                }
            }
            Profile::Github if secret.len() < 16 => {
                return Err(FieldError::new(
                    field,
                    "is shorter than 16 characters; use a long random secret",
                ));
            }
            Profile::Github => {}
        }
    }
    let source = spec.source.trim();
    if source.is_empty() || source == crate::core::events::JOB_EVENT_SOURCE {
        return Err(FieldError::new(
            "source",
            "names where the events come from; not empty, and not batchctl (reserved)",
        ));
    }
    Ok(WebhookTrigger {
        name,
        profile: spec.profile,
        secrets: spec.secrets.clone(),
        source: source.to_string(),
        detail_type: spec.detail_type.clone().unwrap_or_else(|| "Webhook".into()),
    })
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::ComputeEnvironment(_) => Kind::ComputeEnvironment,
            Resource::JobQueue(_) => Kind::JobQueue,
            Resource::JobDefinition { .. } => Kind::JobDefinition,
            Resource::Schedule { .. } => Kind::Schedule,
            Resource::EventRule { .. } => Kind::EventRule,
            Resource::WebhookTrigger(_) => Kind::WebhookTrigger,
            Resource::Notification(_) => Kind::Notification,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::ComputeEnvironment(environment) => environment.name.as_str(),
            Resource::JobQueue(queue) => queue.name.as_str(),
            Resource::JobDefinition { name, .. } => name.as_str(),
            Resource::Schedule { schedule, .. } => &schedule.name,
            Resource::EventRule { rule, .. } => &rule.name,
            Resource::WebhookTrigger(trigger) => &trigger.name,
            Resource::Notification(notification) => &notification.name,
        }
    }
}

/// `kind: Schedule`: EventBridge Scheduler's fields, Kubernetes CronJob's overlap policy, and a
/// catch-up policy for ticks missed while no server ran. The target is a SubmitJob request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    pub schedule_expression: String,
    /// IANA name; UTC when absent. EventBridge Scheduler calls it scheduleExpressionTimezone.
    #[serde(default, alias = "scheduleExpressionTimezone")]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub state: Option<ResourceState>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    #[serde(default)]
    pub flexible_time_window: Option<FlexibleTimeWindowSpec>,
    #[serde(default)]
    pub overlap_policy: Option<OverlapPolicy>,
    #[serde(default)]
    pub catch_up: Option<CatchUpSpec>,
    pub target: SubmitJobRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlexibleTimeWindowSpec {
    /// EventBridge Scheduler's `OFF` or `FLEXIBLE`; the window alone decides here.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub maximum_window_in_minutes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatchUpSpec {
    pub policy: CatchUpPolicy,
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
}

/// `kind: EventRule`: an EventBridge event pattern, and the job to submit for each matching
/// event, with values carried over by `inputTransformer.inputPathsMap` into `<name>` placeholders
/// of the target's parameters, command and environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRuleSpec {
    pub event_pattern: serde_json::Value,
    #[serde(default)]
    pub state: Option<ResourceState>,
    pub target: SubmitJobRequest,
    #[serde(default)]
    pub input_transformer: Option<InputTransformerSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputTransformerSpec {
    pub input_paths_map: BTreeMap<String, String>,
}

pub fn event_rule(name: String, spec: &EventRuleSpec) -> Result<EventRule, FieldError> {
    let pattern = EventPattern::parse(&spec.event_pattern)
        .map_err(|error| FieldError::new(format!("eventPattern.{}", error.path), error.message))?;
    let input_paths = spec
        .input_transformer
        .as_ref()
        .map(|transformer| transformer.input_paths_map.clone())
        .unwrap_or_default();
    check_input_paths(&input_paths).map_err(|(name, message)| {
        FieldError::new(format!("inputTransformer.inputPathsMap.{name}"), message)
    })?;
    if !spec.target.depends_on.is_empty() {
        return Err(FieldError::new(
            "target.dependsOn",
            "a rule's jobs cannot depend on job ids; match the other job's state change event instead",
        ));
    }
    if spec.target.job_queue.trim().is_empty() || spec.target.job_definition.trim().is_empty() {
        return Err(FieldError::new(
            "target",
            "needs jobQueue and jobDefinition: the job each matching event submits",
        ));
    }
    Ok(EventRule {
        name,
        pattern,
        enabled: spec.state.unwrap_or(ResourceState::Enabled) == ResourceState::Enabled,
        input_paths,
    })
}

/// The longest flexible window EventBridge Scheduler allows.
const MAX_FLEXIBLE_WINDOW_MINUTES: u32 = 1440;

pub fn schedule(name: String, spec: &ScheduleSpec) -> Result<Schedule, FieldError> {
    let expression = parse_expression(&spec.schedule_expression).map_err(|error| {
        FieldError::new(
            "scheduleExpression",
            format!("{:?} {error}", spec.schedule_expression),
        )
    })?;
    let time_zone: chrono_tz::Tz = match &spec.time_zone {
        Some(zone) => zone.parse().map_err(|_| {
            FieldError::new(
                "timeZone",
                format!("{zone:?} is not an IANA time zone; use a name like Europe/Berlin or UTC"),
            )
        })?,
        None => chrono_tz::UTC,
    };
    let date = |field: &str,
                text: &Option<String>|
     -> Result<Option<chrono::DateTime<chrono::Utc>>, FieldError> {
        text.as_ref()
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|time| time.with_timezone(&chrono::Utc))
                    .map_err(|error| {
                        FieldError::new(
                            field,
                            format!("{text:?} is not an RFC 3339 time like 2026-12-01T00:00:00Z: {error}"),
                        )
                    })
            })
            .transpose()
    };
    let start = date("startDate", &spec.start_date)?;
    let end = date("endDate", &spec.end_date)?;
    if let (Some(start), Some(end)) = (start, end) {
        if end <= start {
            return Err(FieldError::new("endDate", "must be after startDate"));
        }
    }
    let flexible_window_minutes = match &spec.flexible_time_window {
        Some(window) => {
            let minutes = window.maximum_window_in_minutes.unwrap_or(0);
            match window.mode.as_deref() {
                None | Some("FLEXIBLE") | Some("OFF") => {}
                Some(other) => {
                    return Err(FieldError::new(
                        "flexibleTimeWindow.mode",
                        format!("{other:?} is not a mode; use OFF or FLEXIBLE"),
                    ))
                }
            }
            if minutes > MAX_FLEXIBLE_WINDOW_MINUTES {
                return Err(FieldError::new(
                    "flexibleTimeWindow.maximumWindowInMinutes",
                    format!("is {minutes}; give 0 to {MAX_FLEXIBLE_WINDOW_MINUTES}"),
                ));
            }
            match window.mode.as_deref() {
                Some("OFF") => 0,
                _ => minutes,
            }
        }
        None => 0,
    };
    let catch_up = match &spec.catch_up {
        Some(catch_up) => CatchUp {
            policy: catch_up.policy,
            max_age_seconds: catch_up.max_age_seconds,
        },
        None => CatchUp {
            policy: CatchUpPolicy::Latest,
            max_age_seconds: None,
        },
    };
    if !spec.target.depends_on.is_empty() {
        return Err(FieldError::new(
            "target.dependsOn",
            "a schedule's runs cannot depend on job ids; chain jobs with an event rule instead",
        ));
    }
    if spec.target.job_queue.trim().is_empty() || spec.target.job_definition.trim().is_empty() {
        return Err(FieldError::new(
            "target",
            "needs jobQueue and jobDefinition: the job each tick submits",
        ));
    }
    Ok(Schedule {
        name,
        expression,
        expression_text: spec.schedule_expression.clone(),
        time_zone,
        enabled: spec.state.unwrap_or(ResourceState::Enabled) == ResourceState::Enabled,
        start,
        end,
        flexible_window_minutes,
        overlap: spec.overlap_policy.unwrap_or(OverlapPolicy::Allow),
        catch_up,
    })
}

/// Parses any JSON value strictly into `T`, naming the path of the first offending field.
pub fn parse_strict<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        // serde names the value it could not take ("invalid type: integer `123`"): a secret
        // given with the wrong type must not come back in the error, nor reach a log.
        if is_secret_path(&path) {
            return FieldError::new(
                path,
                "has the wrong type or form; give the secret as a string (its value is not shown)",
            );
        }
        FieldError::new(path, error.into_inner().to_string())
    })
}

/// Whether a field path names a secret (`spec.secret`, `spec.secrets[0]`, …).
fn is_secret_path(path: &str) -> bool {
    path.rsplit('.')
        .next()
        .is_some_and(|last| last.to_ascii_lowercase().starts_with("secret"))
}

/// Reads manifest text: YAML with one or more `---`-separated documents, or JSON (one document or a
/// list of them). Empty documents are skipped.
pub fn documents_from_text(text: &str) -> Result<Vec<serde_json::Value>, FieldError> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document).map_err(|error| {
            FieldError::new(
                format!("documents[{index}]"),
                format!("is not valid YAML or JSON: {error}"),
            )
        })?;
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Array(items) => documents.extend(items),
            other => documents.push(other),
        }
    }
    if documents.is_empty() {
        return Err(FieldError::new("documents", "the file holds no document"));
    }
    Ok(documents)
}

/// Validates one document on its own.
pub fn parse_document(value: &serde_json::Value) -> Result<Resource, FieldError> {
    let document: Document = parse_strict(value)?;
    if document.api_version != API_VERSION {
        return Err(FieldError::new(
            "apiVersion",
            format!(
                "{:?} is not supported; use {API_VERSION:?}",
                document.api_version
            ),
        ));
    }
    let kind = Kind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == document.kind)
        .ok_or_else(|| {
            FieldError::new(
                "kind",
                format!(
                    "unknown kind {:?}; use one of ComputeEnvironment, JobQueue, JobDefinition, Schedule, EventRule, WebhookTrigger, Notification",
                    document.kind
                ),
            )
        })?;
    let name = document.metadata.name;
    let name_error = |message: String| FieldError::new("metadata.name", message);
    let spec = &document.spec;
    let within_spec = |error: FieldError| error.within("spec");
    Ok(match kind {
        Kind::ComputeEnvironment => {
            let name = EnvironmentName::try_from(name).map_err(name_error)?;
            let spec = parse_strict(spec).map_err(within_spec)?;
            Resource::ComputeEnvironment(compute_environment(name, &spec).map_err(within_spec)?)
        }
        Kind::JobQueue => {
            let name = QueueName::try_from(name).map_err(name_error)?;
            let spec = parse_strict(spec).map_err(within_spec)?;
            Resource::JobQueue(job_queue(name, &spec).map_err(within_spec)?)
        }
        Kind::JobDefinition => {
            let name = DefinitionName::try_from(name).map_err(name_error)?;
            let spec = parse_strict(spec).map_err(within_spec)?;
            Resource::JobDefinition {
                name,
                spec: Box::new(definition_spec(&spec).map_err(within_spec)?),
            }
        }
        Kind::Notification => {
            crate::core::model::validate_name(&name).map_err(name_error)?;
            let spec: NotificationSpec = parse_strict(spec).map_err(within_spec)?;
            Resource::Notification(Box::new(notification(name, &spec).map_err(within_spec)?))
        }
        Kind::WebhookTrigger => {
            crate::core::model::validate_name(&name).map_err(name_error)?;
            let spec: WebhookTriggerSpec = parse_strict(spec).map_err(within_spec)?;
            Resource::WebhookTrigger(Box::new(webhook_trigger(name, &spec).map_err(within_spec)?))
        }
        Kind::EventRule => {
            crate::core::model::validate_name(&name).map_err(name_error)?;
            let spec: EventRuleSpec = parse_strict(spec).map_err(within_spec)?;
            Resource::EventRule {
                rule: Box::new(event_rule(name, &spec).map_err(within_spec)?),
                target: Box::new(spec.target),
            }
        }
        Kind::Schedule => {
            crate::core::model::validate_name(&name).map_err(name_error)?;
            let spec: ScheduleSpec = parse_strict(spec).map_err(within_spec)?;
            Resource::Schedule {
                schedule: Box::new(schedule(name, &spec).map_err(within_spec)?),
                target: Box::new(spec.target),
            }
        }
    })
}

/// A Kubernetes namespace name (an RFC 1123 label).
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub fn compute_environment(
    name: EnvironmentName,
    spec: &ComputeEnvironmentSpec,
) -> Result<ComputeEnvironment, FieldError> {
    let docker_only = [
        ("dockerHost", spec.docker_host.is_some()),
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

pub fn job_queue(name: QueueName, spec: &JobQueueSpec) -> Result<JobQueue, FieldError> {
    if spec.compute_environment_order.is_empty() {
        return Err(FieldError::new(
            "computeEnvironmentOrder",
            "must name at least one compute environment",
        ));
    }
    let mut order = spec.compute_environment_order.clone();
    order.sort_by_key(|entry| entry.order);
    let mut seen_orders = HashSet::new();
    let mut environments = Vec::new();
    for (index, entry) in spec.compute_environment_order.iter().enumerate() {
        let field = format!("computeEnvironmentOrder[{index}]");
        if !seen_orders.insert(entry.order) {
            return Err(FieldError::new(
                format!("{field}.order"),
                format!(
                    "order {} is used twice; give each entry its own",
                    entry.order
                ),
            ));
        }
        EnvironmentName::try_from(entry.compute_environment.clone())
            .map_err(|m| FieldError::new(format!("{field}.computeEnvironment"), m))?;
    }
    for entry in order {
        environments.push(EnvironmentName::try_from(entry.compute_environment).expect("checked"));
    }
    Ok(JobQueue {
        name,
        priority: spec.priority,
        state: spec.state.unwrap_or(ResourceState::Enabled),
        compute_environments: environments,
        runnable_time_limits: time_limit_actions(&spec.job_state_time_limit_actions)?,
        fair_share: spec
            .scheduling_policy
            .as_ref()
            .map(|policy| fair_share_policy(&policy.fairshare_policy))
            .transpose()?,
    })
}

fn fair_share_policy(spec: &FairsharePolicySpec) -> Result<FairSharePolicy, FieldError> {
    let field = |name: &str| format!("schedulingPolicy.fairsharePolicy.{name}");
    let share_decay_seconds = spec.share_decay_seconds.unwrap_or(0);
    if share_decay_seconds > MAX_SHARE_DECAY_SECONDS {
        return Err(FieldError::new(
            field("shareDecaySeconds"),
            format!("is {share_decay_seconds}; give 0 to {MAX_SHARE_DECAY_SECONDS}"),
        ));
    }
    let compute_reservation = spec.compute_reservation.unwrap_or(0);
    if compute_reservation > MAX_COMPUTE_RESERVATION {
        return Err(FieldError::new(
            field("computeReservation"),
            format!(
                "is {compute_reservation}; give a percentage from 0 to {MAX_COMPUTE_RESERVATION}"
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut share_distribution = Vec::new();
    for (index, entry) in spec.share_distribution.iter().enumerate() {
        let entry_field = |name: &str| field(&format!("shareDistribution[{index}].{name}"));
        validate_share_identifier(&entry.share_identifier, true)
            .map_err(|reason| FieldError::new(entry_field("shareIdentifier"), reason))?;
        if !seen.insert(entry.share_identifier.as_str()) {
            return Err(FieldError::new(
                entry_field("shareIdentifier"),
                format!("{:?} is listed twice", entry.share_identifier),
            ));
        }
        let weight_factor = entry.weight_factor.unwrap_or(1.0);
        if !WEIGHT_FACTOR_RANGE.contains(&weight_factor) {
            return Err(FieldError::new(
                entry_field("weightFactor"),
                format!("is {weight_factor}; give 0.0001 to 999.9999 (lower gets a larger share)"),
            ));
        }
        share_distribution.push(ShareWeight {
            share_identifier: entry.share_identifier.clone(),
            weight_factor,
        });
    }
    Ok(FairSharePolicy {
        share_decay_seconds,
        compute_reservation,
        share_distribution,
    })
}

/// A share identifier: 1 to 255 letters, digits and underscores (AWS Batch's rule; hyphens are
/// accepted too), and in a policy a trailing `*` for a prefix.
fn validate_share_identifier(value: &str, prefix_allowed: bool) -> Result<(), String> {
    let body = match value.strip_suffix('*') {
        Some(body) if prefix_allowed => body,
        _ => value,
    };
    let valid = body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (value.len(), valid) {
        (0, _) => Err("is empty".into()),
        (256.., _) => Err(format!("is {} characters long; 255 at most", value.len())),
        (_, false) => Err(format!(
            "{value:?} may only contain letters, digits, underscores and hyphens{}",
            if prefix_allowed {
                ", with an optional trailing *"
            } else {
                ""
            }
        )),
        (_, true) => Ok(()),
    }
}

fn time_limit_actions(
    specs: &[JobStateTimeLimitActionSpec],
) -> Result<Vec<RunnableTimeLimit>, FieldError> {
    specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let field = |name: &str| format!("jobStateTimeLimitActions[{index}].{name}");
            if spec.state != "RUNNABLE" {
                return Err(FieldError::new(
                    field("state"),
                    format!("{:?} is not supported; RUNNABLE is the only state with a time limit, as in AWS Batch", spec.state),
                ));
            }
            if spec.action != "CANCEL" {
                return Err(FieldError::new(
                    field("action"),
                    format!("{:?} is not supported; use CANCEL", spec.action),
                ));
            }
            if !(1..=MAX_TIME_LIMIT_SECONDS).contains(&spec.max_time_seconds) {
                return Err(FieldError::new(
                    field("maxTimeSeconds"),
                    format!(
                        "is {}; give 1 to {MAX_TIME_LIMIT_SECONDS} seconds",
                        spec.max_time_seconds
                    ),
                ));
            }
            if spec.reason.trim().is_empty() {
                return Err(FieldError::new(
                    field("reason"),
                    "is empty; say why such jobs are cancelled (it becomes their statusReason)",
                ));
            }
            Ok(RunnableTimeLimit {
                max_seconds: spec.max_time_seconds,
                reason: spec.reason.clone(),
            })
        })
        .collect()
}

pub fn definition_spec(spec: &JobDefinitionSpec) -> Result<DefinitionSpec, FieldError> {
    if let Some(other) = spec
        .definition_type
        .as_deref()
        .filter(|t| *t != "container")
    {
        return Err(FieldError::new(
            "type",
            format!("{other:?} job definitions are not supported; use \"container\""),
        ));
    }
    let properties = &spec.container_properties;
    let within = |error: FieldError| error.within("containerProperties");
    let image = match properties.image.as_deref().map(str::trim) {
        Some(image) if !image.is_empty() => image.to_string(),
        _ => {
            return Err(FieldError::new(
                "containerProperties.image",
                "is required: name the container image to run (process environments ignore it)",
            ))
        }
    };
    if properties.command.is_empty() {
        return Err(FieldError::new(
            "containerProperties.command",
            "is required: give the command to run as a list, e.g. [\"sh\", \"-c\", \"echo hi\"]",
        ));
    }
    let container = ContainerProperties {
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
    };
    Ok(DefinitionSpec {
        parameters: spec.parameters.clone(),
        container,
        retry: retry_policy(spec.retry_strategy.as_ref())?,
        timeout_seconds: timeout_seconds(spec.timeout.as_ref())?,
        scheduling_priority: spec.scheduling_priority.unwrap_or(0),
    })
}

/// What a submit depends on, each once. Which jobs exist, and whether an N_TO_N partner is an
/// array of the same size, is checked against the store by the caller.
fn dependencies(
    specs: &[JobDependencySpec],
    array_size: Option<u32>,
) -> Result<Vec<Dependency>, FieldError> {
    if specs.len() > MAX_DEPENDENCIES {
        return Err(FieldError::new(
            "dependsOn",
            format!(
                "has {} entries; at most {MAX_DEPENDENCIES} are allowed",
                specs.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut dependencies = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let field = |name: &str| format!("dependsOn[{index}].{name}");
        let kind = match spec.dependency_type.as_deref() {
            None => DependencyKind::Whole,
            Some("N_TO_N") => DependencyKind::NToN,
            Some("SEQUENTIAL") => DependencyKind::Sequential,
            Some(other) => {
                return Err(FieldError::new(
                    field("type"),
                    format!("{other:?} is not a dependency type; use N_TO_N or SEQUENTIAL, or leave it out to wait for the whole job"),
                ))
            }
        };
        if kind != DependencyKind::Whole && array_size.is_none() {
            return Err(FieldError::new(
                field("type"),
                format!(
                    "{} dependencies are for array jobs; set arrayProperties.size, or leave type out to wait for the whole job",
                    kind.aws_name().unwrap_or_default()
                ),
            ));
        }
        let job_id = match (kind, spec.job_id.as_deref().map(str::trim)) {
            (DependencyKind::Sequential, None) => None,
            (DependencyKind::Sequential, Some(_)) => {
                return Err(FieldError::new(
                    field("jobId"),
                    "must be left out of a SEQUENTIAL dependency, which orders this array's own children",
                ))
            }
            (DependencyKind::Whole | DependencyKind::NToN, None | Some("")) => {
                return Err(FieldError::new(field("jobId"), "is empty; give a job id"))
            }
            (DependencyKind::Whole | DependencyKind::NToN, Some(id)) => Some(JobId(id.to_string())),
        };
        let key = (job_id.clone(), kind == DependencyKind::Sequential);
        if seen.insert(key) {
            dependencies.push(Dependency { job_id, kind });
        }
    }
    Ok(dependencies)
}

/// Checks a job's dependencies against the jobs they name, as found in the store (each with its
/// array size): every named job must exist, and an N_TO_N partner must be an array job of the same
/// size. Dependencies can only name jobs that already exist, so they can never form a cycle.
pub fn check_dependency_targets(
    dependencies: &[Dependency],
    array_size: Option<u32>,
    found: &HashMap<JobId, Option<u32>>,
) -> Result<(), FieldError> {
    for (index, dependency) in dependencies.iter().enumerate() {
        let Some(job_id) = &dependency.job_id else {
            continue;
        };
        let field = format!("dependsOn[{index}].jobId");
        let Some(target_size) = found.get(job_id) else {
            return Err(FieldError::new(
                field,
                format!("job {job_id} does not exist; depend only on jobs already submitted"),
            ));
        };
        match dependency.kind {
            DependencyKind::NToN if *target_size != array_size => {
                return Err(FieldError::new(
                    field,
                    format!(
                        "an N_TO_N dependency needs an array job of the same size; job {job_id} has {} and this job {} children",
                        target_size.map_or("no array".to_string(), |size| format!("{size} children")),
                        array_size.unwrap_or(0)
                    ),
                ))
            }
            DependencyKind::NToN | DependencyKind::Whole | DependencyKind::Sequential => {}
        }
    }
    Ok(())
}

fn array_size(properties: Option<&ArrayPropertiesSpec>) -> Result<Option<u32>, FieldError> {
    let Some(properties) = properties else {
        return Ok(None);
    };
    match properties.size {
        size @ 2..=MAX_ARRAY_SIZE => Ok(Some(size)),
        size => Err(FieldError::new(
            "arrayProperties.size",
            format!("is {size}; an array job has 2 to {MAX_ARRAY_SIZE} children (leave arrayProperties out for a single job)"),
        )),
    }
}

/// Capability names as Docker takes them (`NET_ADMIN`; a `CAP_` prefix is accepted and removed).
fn capabilities(parameters: Option<&LinuxParametersSpec>) -> Result<Vec<String>, FieldError> {
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
    Ok(RetryPolicy {
        attempts,
        evaluate_on_exit,
        backoff,
    })
}

fn exit_rule(rule: &EvaluateOnExitSpec) -> Result<ExitRule, FieldError> {
    let action = match rule.action.to_ascii_uppercase().as_str() {
        "RETRY" => RetryAction::Retry,
        "EXIT" => RetryAction::Exit,
        _ => {
            return Err(FieldError::new(
                "action",
                format!("{:?} is not an action; use RETRY or EXIT", rule.action),
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
    Ok(ExitRule {
        on_exit_code,
        on_reason: pattern("onReason", &rule.on_reason)?,
        on_status_reason: pattern("onStatusReason", &rule.on_status_reason)?,
        action,
    })
}

fn backoff(spec: &BackoffSpec) -> Result<Backoff, FieldError> {
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
fn vcpus(text: &str) -> Result<u64, String> {
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

fn whole_number(text: &str) -> Result<u64, String> {
    match text.trim().parse::<i64>() {
        Ok(value) if value >= 0 => Ok(value as u64),
        Ok(value) => Err(format!("{value} is negative; give 0 or more")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A submit request, as AWS Batch's SubmitJob: `jobName`, `jobQueue`, `jobDefinition` (`name` or
/// `name:revision`), `parameters`, `containerOverrides`, and per-job `retryStrategy` and `timeout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitJobRequest {
    #[serde(default)]
    pub job_name: Option<String>,
    pub job_queue: String,
    pub job_definition: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub container_overrides: Option<ContainerOverrides>,
    #[serde(default)]
    pub retry_strategy: Option<RetryStrategySpec>,
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    #[serde(default)]
    pub depends_on: Vec<JobDependencySpec>,
    #[serde(default)]
    pub array_properties: Option<ArrayPropertiesSpec>,
    /// The share of a fair-share queue this job counts against (required there, refused elsewhere).
    #[serde(default)]
    pub share_identifier: Option<String>,
    /// Replaces the definition's `schedulingPriority`.
    #[serde(default)]
    pub scheduling_priority_override: Option<i64>,
}

/// AWS Batch's ArrayProperties of SubmitJob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArrayPropertiesSpec {
    pub size: u32,
}

/// AWS Batch's JobDependency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDependencySpec {
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default, rename = "type")]
    pub dependency_type: Option<String>,
}

/// How many jobs one job may depend on (AWS Batch allows 20).
pub const MAX_DEPENDENCIES: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerOverrides {
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
    #[serde(default)]
    pub resource_requirements: Vec<ResourceRequirement>,
}

/// What a submit is checked against, read from the store.
pub struct SubmitContext<'a> {
    pub definition: &'a JobDefinition,
    pub queue: &'a JobQueue,
    pub environments: &'a [ComputeEnvironment],
}

/// Builds the SUBMITTED job a request asks for: the definition's spec with the request's parameters
/// and overrides applied, checked against the queue and its environments.
pub fn build_job(
    request: &SubmitJobRequest,
    context: &SubmitContext<'_>,
    job_id: JobId,
    idempotency_key: Option<String>,
    now: i64,
) -> Result<Job, FieldError> {
    let SubmitContext {
        definition,
        queue,
        environments,
    } = context;
    if queue.state == ResourceState::Disabled {
        return Err(FieldError::new(
            "jobQueue",
            format!("queue \"{}\" is DISABLED and accepts no new jobs; enable it or submit to another queue", queue.name),
        ));
    }
    let job_name = JobName::try_from(
        request
            .job_name
            .clone()
            .unwrap_or_else(|| definition.name.to_string()),
    )
    .map_err(|m| FieldError::new("jobName", m))?;
    let mut container = definition.spec.container.clone();
    let mut parameters = definition.spec.parameters.clone();
    parameters.extend(request.parameters.clone());
    if let Some(overrides) = &request.container_overrides {
        let within = |error: FieldError| error.within("containerOverrides");
        if let Some(command) = &overrides.command {
            if command.is_empty() {
                return Err(FieldError::new(
                    "containerOverrides.command",
                    "is empty; leave it out to run the definition's command",
                ));
            }
            container.command = command.clone();
        }
        for (name, value) in environment(&overrides.environment, "environment").map_err(within)? {
            match container
                .environment
                .iter_mut()
                .find(|(existing, _)| *existing == name)
            {
                Some(entry) => entry.1 = value,
                None => container.environment.push((name, value)),
            }
        }
        container.resources =
            resources(&overrides.resource_requirements, container.resources).map_err(within)?;
    }
    let fits_somewhere = queue.compute_environments.iter().any(|name| {
        environments
            .iter()
            .any(|e| e.name == *name && container.resources.fits_within(&e.capacity))
    });
    if !fits_somewhere {
        let needs = &container.resources;
        return Err(FieldError::new(
            "containerOverrides.resourceRequirements",
            format!(
                "the job needs {} vCPU, {} MiB and {} GPU, more than any compute environment of queue \"{}\" has; ask for less or add a larger environment",
                needs.vcpu_millis as f64 / 1000.0,
                needs.memory_mib,
                needs.gpus,
                queue.name
            ),
        ));
    }
    let share_identifier = match (&queue.fair_share, &request.share_identifier) {
        (Some(_), Some(share)) => {
            validate_share_identifier(share, false)
                .map_err(|reason| FieldError::new("shareIdentifier", reason))?;
            Some(share.clone())
        }
        (Some(_), None) => {
            return Err(FieldError::new(
                "shareIdentifier",
                format!("is required: queue \"{}\" has a fair-share schedulingPolicy; name the share this job counts against", queue.name),
            ))
        }
        (None, Some(_)) => {
            return Err(FieldError::new(
                "shareIdentifier",
                format!("queue \"{}\" has no schedulingPolicy; leave shareIdentifier out or submit to a fair-share queue", queue.name),
            ))
        }
        (None, None) => None,
    };
    let array_size = array_size(request.array_properties.as_ref())?;
    let depends_on = dependencies(&request.depends_on, array_size)?;
    // A submit's retryStrategy replaces the definition's, as in AWS Batch.
    let retry = match &request.retry_strategy {
        Some(strategy) => retry_policy(Some(strategy))?,
        None => definition.spec.retry.clone(),
    };
    let timeout_seconds = match &request.timeout {
        Some(timeout) => timeout_seconds(Some(timeout))?,
        None => definition.spec.timeout_seconds,
    };
    Ok(Job {
        job_id,
        job_name,
        queue: queue.name.clone(),
        status: JobStatus::Submitted,
        status_reason: None,
        spec: JobSpec {
            definition: definition.name.clone(),
            definition_revision: definition.revision,
            parameters,
            container,
            retry,
            timeout_seconds,
            depends_on,
            array_size,
            share_identifier,
            scheduling_priority: request
                .scheduling_priority_override
                .unwrap_or(definition.spec.scheduling_priority),
        },
        created_at: now,
        started_at: None,
        stopped_at: None,
        n_attempts: 0,
        attempts: Vec::new(),
        current_attempt: None,
        stop_requested: None,
        idempotency_key,
        runnable_after: None,
        array: match array_size {
            Some(size) => ArrayRole::Parent { size },
            None => ArrayRole::Single,
        },
    })
}

#[cfg(test)]
mod tests {
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
                "kind: unknown kind \"Queue\"; use one of ComputeEnvironment, JobQueue, JobDefinition, Schedule, EventRule, WebhookTrigger, Notification",
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
                "spec.colour: unknown field `colour`, expected one of `type`, `state`, `maxVcpus`, `maxMemoryMiB`, `maxGpus`, `dockerHost`, `allowPrivileged`, `keepFailedContainers`, `namespace`, `kubeconfig`, `kubeconfigContext`, `serviceAccountName`",
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
                "spec.retryStrategy.evaluateOnExit[0].action: \"STOP\" is not an action; use RETRY or EXIT",
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
                "spec.containerProperties.memory: unknown field `memory`, expected one of `image`, `command`, `environment`, `resourceRequirements`, `workingDir`, `user`, `imagePullPolicy`, `privileged`, `linuxParameters`",
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
}
