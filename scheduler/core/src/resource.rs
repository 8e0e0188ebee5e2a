//! The kinds of resource and their validated forms, as the store keeps them: each is serialised
//! with serde (its stored form) and read back without running the wire format's validation
//! again, so a rule tightened in a later release never turns a stored row into an error.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::concurrency::ConcurrencyLimit;
use crate::consumable::ConsumableResource;
use crate::event_pattern::EventPattern;
use crate::events::EventRule;
use crate::model::{ComputeEnvironment, DefinitionName, DefinitionSpec, JobQueue};
use crate::schedule::Schedule;
use crate::secret::Secret;
use crate::webhooks::Profile;

/// A problem with one field of the input, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Kind {
    ComputeEnvironment,
    JobQueue,
    JobDefinition,
    Schedule,
    EventRule,
    WebhookTrigger,
    Notification,
    ConcurrencyLimit,
    ConsumableResource,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::ComputeEnvironment,
        Kind::JobQueue,
        Kind::JobDefinition,
        Kind::Schedule,
        Kind::EventRule,
        Kind::WebhookTrigger,
        Kind::Notification,
        Kind::ConcurrencyLimit,
        Kind::ConsumableResource,
        Kind::Secret,
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
            Kind::ConcurrencyLimit => "ConcurrencyLimit",
            Kind::ConsumableResource => "ConsumableResource",
            Kind::Secret => "Secret",
        }
    }

    /// What `batchctl get` calls the kind.
    pub fn plural(&self) -> &'static str {
        match self {
            Kind::ComputeEnvironment => "computeenvironments",
            Kind::JobQueue => "queues",
            Kind::JobDefinition => "definitions",
            Kind::Schedule => "schedules",
            Kind::EventRule => "rules",
            Kind::WebhookTrigger => "webhooktriggers",
            Kind::Notification => "notifications",
            Kind::ConcurrencyLimit => "concurrencylimits",
            Kind::ConsumableResource => "consumableresources",
            Kind::Secret => "secrets",
        }
    }

    /// The kind's collection under `/v1`.
    pub fn collection(&self) -> &'static str {
        match self {
            Kind::ComputeEnvironment => "computeenvironments",
            Kind::JobQueue => "jobqueues",
            Kind::JobDefinition => "jobdefinitions",
            Kind::Schedule => "schedules",
            Kind::EventRule => "eventrules",
            Kind::WebhookTrigger => "webhooktriggers",
            Kind::Notification => "notifications",
            Kind::ConcurrencyLimit => "concurrencylimits",
            Kind::ConsumableResource => "consumableresources",
            Kind::Secret => "secrets",
        }
    }

    /// The kind whose collection under `/v1` is `collection`.
    pub fn from_collection(collection: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.collection() == collection)
    }
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
        target: SubmitTemplate,
    },
    /// An event rule and the submit it makes for each matching event.
    EventRule {
        rule: Box<EventRule>,
        target: SubmitTemplate,
    },
    WebhookTrigger(Box<WebhookTrigger>),
    Notification(Box<Notification>),
    ConcurrencyLimit(Box<ConcurrencyLimit>),
    ConsumableResource(Box<ConsumableResource>),
    Secret(Box<Secret>),
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
            Resource::ConcurrencyLimit(_) => Kind::ConcurrencyLimit,
            Resource::ConsumableResource(_) => Kind::ConsumableResource,
            Resource::Secret(_) => Kind::Secret,
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
            Resource::ConcurrencyLimit(limit) => &limit.name,
            Resource::ConsumableResource(resource) => &resource.name,
            Resource::Secret(secret) => &secret.name,
        }
    }
}

/// The submit a schedule's tick or a rule's delivery makes, kept as the request JSON it was
/// applied with. It is decoded and validated each time it is used, like any submit (a queue or a
/// definition it names may be gone by then), so the store never interprets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubmitTemplate(pub serde_json::Value);

/// A validated `kind: WebhookTrigger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTrigger {
    pub name: String,
    pub profile: Profile,
    /// Any of them may have signed a delivery (rotation).
    pub secrets: Vec<crate::secret::SecretText>,
    /// The `source` of the events it makes.
    pub source: String,
    /// Their `detail-type`, when the profile does not name one (GitHub's event name does).
    pub detail_type: String,
}

/// A validated `kind: Notification`: events matching the pattern are POSTed to the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub name: String,
    pub pattern: EventPattern,
    pub endpoint: String,
    /// Signs each POST per Standard Webhooks when present.
    pub secret: Option<crate::secret::SecretText>,
    /// Retries after the first try; then the delivery goes to the dead-letter list.
    pub maximum_retry_attempts: u32,
    pub enabled: bool,
}
