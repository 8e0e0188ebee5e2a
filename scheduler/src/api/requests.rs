//! The API's request bodies, one set for the handlers (which parse them strictly) and the CLI
//! (which sends them): apply, cancel/terminate, redrive and PutEvents. The submit request is
//! `manifest::SubmitJobRequest`, since schedules and rules keep it as their target too.

use serde::{Deserialize, Serialize};

/// `POST /v1/apply`: manifest documents (`{apiVersion, kind, metadata, spec}`), each also
/// accepted as an AWS Batch JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub documents: Vec<serde_json::Value>,
}

/// `POST /v1/jobs/{id}/cancel` and `…/terminate`: the reason the job ends with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/dlq/redrive`: one notification's dead letters, or all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<String>,
}

/// PutEvents' body: 1 to 100 entries of `{source, detail-type, detail, id?, time?, resources?}`,
/// each checked on its own (`core::events::event_from_entry`), so one bad entry refuses only
/// itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PutEventsRequest {
    #[serde(default)]
    pub entries: Option<Vec<serde_json::Value>>,
}

/// One PutEvents entry as the CLI builds it (`batchctl put-event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PutEventsEntryRequest {
    pub source: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub detail: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
