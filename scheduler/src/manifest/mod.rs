//! The wire form of resources (`batchctl apply -f`) and of submit requests: camelCase, AWS Batch's
//! field names, parsed strictly (unknown fields are errors) and validated once into model types.
//! Every error names the field it is about.

mod compute_environment;
mod concurrency_limit;
mod consumable_resource;
mod event_rule;
mod job_definition;
mod job_queue;
mod linux;
mod notification;
mod schedule;
mod secret;
mod storage;
mod submit;
#[cfg(test)]
mod tests;
mod webhook_trigger;

pub use compute_environment::*;
pub use concurrency_limit::*;
pub use consumable_resource::*;
pub use event_rule::*;
pub use job_definition::*;
pub use job_queue::*;
pub use notification::*;
pub use schedule::*;
pub use secret::*;
pub use storage::*;
pub use submit::*;
pub use webhook_trigger::*;

pub use crate::core::resource::{
    FieldError, Kind, Notification, Resource, SubmitTemplate, WebhookTrigger,
};

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::attempt::RESERVED_VARIABLE_PREFIXES;
use crate::core::event_pattern::EventPattern;
use crate::core::events::{check_input_paths, EventRule};
use crate::core::model::{
    ArrayRole, ArraySuccessPolicy, Backend, Backoff, ComputeEnvironment, ContainerProperties,
    DefinitionName, DefinitionSpec, Dependency, DependencyCondition, DependencyKind,
    DockerSettings, EnvironmentName, ExitRule, FairSharePolicy, ImagePullPolicy, Job,
    JobDefinition, JobId, JobName, JobQueue, JobRetention, JobSpec, KubernetesSettings, QueueName,
    ResourceState, Resources, RetryAction, RetryPolicy, RunnableTimeLimit, ShareWeight,
    DEFAULT_MAX_DISRUPTIONS, MAX_ARRAY_SIZE, MAX_DISRUPTIONS,
};
use crate::core::schedule::{
    parse_expression, CatchUp, CatchUpPolicy, HistoryLimits, OverlapPolicy, Schedule,
};
use crate::core::webhooks::Profile;

pub const API_VERSION: &str = "batchctl/v1";
/// Used when a definition names no VCPU or MEMORY requirement.
pub const DEFAULT_RESOURCES: Resources = Resources {
    vcpu_millis: 1000,
    memory_mib: 512,
    gpus: 0,
};
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

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
                    "unknown kind {:?}; use one of ComputeEnvironment, JobQueue, JobDefinition, Schedule, EventRule, WebhookTrigger, Notification, ConcurrencyLimit, ConsumableResource, Secret",
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
        Kind::ConsumableResource => {
            crate::core::model::validate_name(&name).map_err(name_error)?;
            let spec: ConsumableResourceSpec = parse_strict(spec).map_err(within_spec)?;
            Resource::ConsumableResource(Box::new(
                consumable_resource(name, &spec).map_err(within_spec)?,
            ))
        }
        Kind::Secret => Resource::Secret(Box::new(secret(name, spec)?)),
        Kind::ConcurrencyLimit => {
            crate::core::model::validate_name(&name).map_err(name_error)?;
            let spec: ConcurrencyLimitSpec = parse_strict(spec).map_err(within_spec)?;
            Resource::ConcurrencyLimit(Box::new(
                concurrency_limit(name, &spec).map_err(within_spec)?,
            ))
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
                target: template_of(&document.spec),
            }
        }
        Kind::Schedule => {
            crate::core::model::validate_name(&name).map_err(name_error)?;
            let spec: ScheduleSpec = parse_strict(spec).map_err(within_spec)?;
            Resource::Schedule {
                schedule: Box::new(schedule(name, &spec).map_err(within_spec)?),
                target: template_of(&document.spec),
            }
        }
    })
}

/// The `target` of a schedule's or a rule's spec (already parsed strictly), as applied.
fn template_of(spec: &serde_json::Value) -> SubmitTemplate {
    SubmitTemplate(spec.get("target").cloned().unwrap_or_default())
}

/// The submit request a schedule or rule keeps, decoded for use; its errors name `target.…`.
pub fn submit_request(template: &SubmitTemplate) -> Result<SubmitJobRequest, FieldError> {
    parse_strict(&template.0).map_err(|error| error.within("target"))
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
