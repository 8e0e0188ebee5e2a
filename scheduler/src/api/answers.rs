//! The API's answers other than jobs and plain resources (`views.rs`): what apply, delete, redrive
//! and PutEvents did, health, `why`, and the lists whose items carry a `status` of their own.
//! Typed, so the OpenAPI document (`openapi.rs`) is generated from what the handlers return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::ResourceMetadataView;
use crate::core::model::JobStatus;
use crate::core::why::Hold;
use crate::store::{Applied, Deleted};

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyAnswer {
    pub applied: Vec<Applied>,
    /// AWS Batch fields batchctl does not use, each named (never dropped silently).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeleteAnswer {
    pub deleted: Vec<Deleted>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RedriveAnswer {
    /// Dead letters queued to be sent again.
    pub redriven: u64,
}

/// What holds a job (`batchctl why`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhyAnswer {
    pub job_id: String,
    pub status: JobStatus,
    pub holds: Vec<Hold>,
    /// For a RUNNABLE job, when it may start and what that rests on (`core::estimate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_start: Option<crate::core::estimate::StartEstimate>,
}

/// PutEvents' answer: per entry, in order, its id or why it was refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutEventsAnswer {
    pub failed_entry_count: u64,
    pub entries: Vec<PutEventsEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PutEventsEntry {
    Accepted {
        #[serde(rename = "eventId")]
        event_id: String,
    },
    Refused {
        #[serde(rename = "errorCode")]
        error_code: String,
        #[serde(rename = "errorMessage")]
        error_message: String,
    },
}

/// Events on the bus, oldest first, with the cursor to read on from.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub items: Vec<BusEventView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BusEventView {
    pub seq: i64,
    /// The EventBridge envelope: `id`, `source`, `detail-type`, `time`, `detail`, …
    pub event: serde_json::Value,
}

/// A webhook delivery taken (202) or seen before (200).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookAnswer {
    pub event_id: String,
    pub duplicate: bool,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthAnswer {
    /// `ok`, or `degraded` when an environment is unavailable or the disk is full.
    pub status: String,
    pub database: String,
    pub storage: StorageView,
    pub installation: String,
    pub leader: LeaderView,
    /// Per compute environment: `ok`, or why its executor could not be reached.
    pub compute_environments: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageView {
    /// `ok` or `full`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeaderView {
    /// `leader` or `follower`.
    pub role: String,
    /// The lease term (Postgres); absent for a follower, null on SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<Option<i64>>,
}

/// `GET /healthz` when the database does not answer (503).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnavailableAnswer {
    pub status: String,
    pub database: String,
}

/// A resource listed with a `status` of its own (schedules, rules, webhook triggers).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceWithStatus<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMetadataView,
    /// As applied (secrets hidden).
    pub spec: serde_json::Value,
    pub status: S,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// RFC 3339 in the schedule's time zone; null when it will not fire again.
    pub next_fire_time: Option<String>,
    pub last_firing: Option<LastFiring>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastFiring {
    pub scheduled_time: Option<String>,
    /// `submitted`, `skipped`, `failed`, …
    pub outcome: String,
    pub job_id: Option<String>,
    pub job_status: Option<JobStatus>,
    pub reason: Option<String>,
}

/// When a secret was stored and last changed (epoch milliseconds); its value is never shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStatus {
    pub created_at: i64,
    pub updated_at: i64,
}

/// A consumable resource's use, as AWS Batch's DescribeConsumableResource reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumableStatus {
    /// Held by STARTING and RUNNING attempts (REPLENISHABLE), or used up (NON_REPLENISHABLE).
    pub in_use_quantity: u64,
    pub available_quantity: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatus {
    pub recent_deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub event_id: String,
    pub outcome: String,
    pub job_id: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookTriggerStatus {
    /// Where deliveries go: `/v1/hooks/{name}`.
    pub url: String,
}

/// A notification whose retries are spent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    pub event_id: String,
    pub notification: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The event it carried (null if it could not be read back).
    pub event: serde_json::Value,
}
