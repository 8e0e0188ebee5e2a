//! The HTTP API: JSON under `/v1`, problem+json errors, cursor pagination, `GET /healthz`.
//!
//! Invariants:
//! - Handlers parse and validate input at the edge (`manifest`), then call the store, the submitter
//!   or `control`; they make no scheduling decision of their own.
//! - A 2xx to a submit or an apply means the write committed.

pub mod error;
pub mod streams;
pub mod views;

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batchctl_executor::OutputStream;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
use views::{JobView, Page, ResourceView};

use crate::aws_compat;
use crate::control::{stop_job, StopMode};
use crate::core::model::{DefinitionName, DefinitionRef, JobId, JobStatus, QueueName};
use crate::dispatcher::DispatcherHandle;
use crate::manifest::{self, build_job, FieldError, Kind, SubmitContext, SubmitJobRequest};
use crate::rules::RuleHandle;
use crate::schedules::ScheduleRunner;
use crate::store::{now_millis, JobFilter, Store};
use crate::submitter::Submitter;
use std::sync::Arc;

/// Jobs per page when a list request names no limit, and the most it may ask for.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
const LOG_FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub submitter: Submitter,
    pub dispatcher: DispatcherHandle,
    pub schedules: Arc<ScheduleRunner>,
    pub rules: RuleHandle,
    /// Cancelled at shutdown, so log followers end instead of holding the server open.
    pub shutdown: CancellationToken,
    /// This installation's id (the `batchctl.owner` label of its containers).
    pub installation: String,
    /// API tokens; empty means the API is open (the server allows that only on loopback).
    pub tokens: Arc<crate::core::auth::Tokens>,
    /// Whether this server leads (runs the dispatcher) or follows (serves the API only).
    pub role: crate::leadership::Role,
    /// The directory holding the SQLite database; `None` on Postgres (whose disk is its own).
    pub sqlite_data_dir: Option<std::path::PathBuf>,
    /// The address the server is bound to: on loopback, requests must name it in `Host`.
    pub listening: std::net::SocketAddr,
    /// Slots for open log follows and event streams.
    pub streams: streams::StreamSlots,
    /// Whether process environments may be applied.
    pub process_executor: crate::server::ProcessExecutorSetting,
}

/// A slot for a long-lived answer, or 429 saying why there is none.
fn stream_slot(state: &AppState, headers: &HeaderMap) -> Result<streams::StreamSlot, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    state.streams.take(authorization).map_err(|no_slot| {
        let detail = match no_slot {
            streams::NoSlot::CallerFull => format!(
                "this caller has {} streams open (log follows and event streams), the most it may; close one and try again",
                streams::MAX_STREAMS_PER_CALLER
            ),
            streams::NoSlot::ServerFull => format!(
                "the server has {} streams open, the most it serves; try again later",
                streams::MAX_STREAMS
            ),
        };
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            title: "Too many streams".into(),
            detail,
            errors: Vec::new(),
            retry_after: Some(5),
        }
    })
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/apply", post(apply))
        .route("/v1/computeenvironments", get(list_compute_environments))
        .route("/v1/jobqueues", get(list_job_queues))
        .route("/v1/jobdefinitions", get(list_job_definitions))
        .route("/v1/schedules", get(list_schedules))
        .route("/v1/events", post(put_events).get(list_events))
        .route("/v1/events/stream", get(stream_events))
        .route("/v1/eventrules", get(list_event_rules))
        .route("/v1/webhooktriggers", get(list_webhook_triggers))
        .route("/v1/notifications", get(list_notifications))
        .route("/v1/dlq", get(list_dead_letters))
        .route("/v1/dlq/redrive", post(redrive_dead_letters))
        .route("/v1/hooks/{name}", post(receive_hook))
        .route("/v1/schedules/{name}/trigger", post(trigger_schedule))
        .route("/v1/jobs", post(submit).get(list_jobs))
        .route("/v1/jobs/{job_id}", get(describe_job))
        .route("/v1/jobs/{job_id}/cancel", post(cancel))
        .route("/v1/jobs/{job_id}/terminate", post(terminate))
        .route("/v1/jobs/{job_id}/logs", get(logs))
        .route("/v1/jobs/{job_id}/why", get(why))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see the API section of the README")
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_browser_pages,
        ))
        .with_state(state)
}

/// Refuses what a web page could send to drive the API (`core::request_guard`), before
/// authentication: an open server on a laptop has no token to stop a page.
async fn refuse_browser_pages(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::core::request_guard::{check, Refusal, RequestFacts};
    let verdict = {
        let header = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let facts = RequestFacts {
            method: request.method().as_str(),
            path: request.uri().path(),
            host: header(header::HOST),
            origin: header(header::ORIGIN),
            sec_fetch_site: header(header::HeaderName::from_static("sec-fetch-site")),
            content_type: header(header::CONTENT_TYPE),
        };
        check(&facts, state.listening)
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(refusal @ Refusal::NotJson(_)) => ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            title: "Unsupported media type".into(),
            detail: refusal.to_string(),
            errors: Vec::new(),
            retry_after: None,
        }
        .into_response(),
        Err(refusal) => ApiError::forbidden(refusal.to_string()).into_response(),
    }
}

/// Checks the bearer token against the scope the request needs: 401 without a valid token,
/// 403 with one that lacks the scope. Open when no tokens are configured.
async fn authenticate(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::core::auth::{required_scope, Access};
    if state.tokens.is_empty() {
        return next.run(request).await;
    }
    let Some(needs) = required_scope(request.method().as_str(), request.uri().path()) else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match state.tokens.check(authorization, needs) {
        Access::Allowed => next.run(request).await,
        Access::Unauthenticated => {
            let mut response = ApiError::unauthorized(
                "a valid API token is required: send Authorization: Bearer TOKEN (the CLI reads BATCHCTL_TOKEN)",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
        Access::Forbidden { has, needs } => ApiError::forbidden(format!(
            "this token has the {} scope; this request needs {}",
            has.as_str(),
            needs.as_str()
        ))
        .into_response(),
    }
}

/// Parses a JSON body strictly, naming the offending field.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::invalid(FieldError::new(
            "body",
            format!("is not valid JSON: {error}"),
        ))
    })?;
    manifest::parse_strict(&value).map_err(ApiError::invalid)
}

/// The server, its database, and each compute environment (`ok`, or why its executor could not
/// be reached the last time it was used). 503 only when the database does not answer.
fn leader_view(role: crate::leadership::RoleState) -> serde_json::Value {
    use crate::leadership::RoleState;
    match role {
        RoleState::Follower => serde_json::json!({"role": "follower"}),
        RoleState::Leader { term } => serde_json::json!({"role": "leader", "term": term}),
    }
}

/// Prometheus text exposition: job counts by status, leadership, and compute environment health.
/// Open like `/healthz`: counts only, no job data.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    use crate::core::model::JobStatus;
    use crate::leadership::RoleState;
    use std::fmt::Write;
    let counts: HashMap<String, i64> = state.store.job_counts().await?.into_iter().collect();
    let mut text =
        String::from("# HELP batchctl_jobs Jobs in each status.\n# TYPE batchctl_jobs gauge\n");
    for status in JobStatus::ALL {
        let n = counts.get(status.as_str()).copied().unwrap_or(0);
        let _ = writeln!(text, "batchctl_jobs{{status=\"{}\"}} {n}", status.as_str());
    }
    let (leader, term) = match state.role.get() {
        RoleState::Leader { term } => (1, term.unwrap_or(0)),
        RoleState::Follower => (0, 0),
    };
    let _ = write!(
        text,
        "# HELP batchctl_leader Whether this server leads (runs the dispatcher).\n\
         # TYPE batchctl_leader gauge\nbatchctl_leader {leader}\n\
         # HELP batchctl_leader_term The lease term this server leads in (0: follower or SQLite).\n\
         # TYPE batchctl_leader_term gauge\nbatchctl_leader_term {term}\n\
         # HELP batchctl_compute_environment_up Whether the environment's executor answered last time.\n\
         # TYPE batchctl_compute_environment_up gauge\n"
    );
    let unhealthy = state.dispatcher.unhealthy_environments();
    for environment in state.store.compute_environments().await? {
        let name = environment.name.to_string();
        let up = u8::from(!unhealthy.contains_key(&name));
        let _ = writeln!(
            text,
            "batchctl_compute_environment_up{{environment=\"{name}\"}} {up}"
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn health(State(state): State<AppState>) -> Response {
    let unhealthy = state.dispatcher.unhealthy_environments();
    let environments = match state.store.compute_environments().await {
        Ok(environments) => environments,
        Err(error) => {
            let body = serde_json::json!({"status": "unavailable", "database": error.to_string()});
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, error::UNAVAILABLE_RETRY_AFTER_SECONDS)],
                Json(body),
            )
                .into_response();
        }
    };
    let health: serde_json::Map<String, serde_json::Value> = environments
        .iter()
        .map(|environment| {
            let name = environment.name.to_string();
            let problem = unhealthy.get(&name).cloned().unwrap_or_else(|| "ok".into());
            (name, problem.into())
        })
        .collect();
    let storage = storage_health(state.sqlite_data_dir.as_deref());
    let status = if unhealthy.is_empty() && storage.full.is_none() {
        "ok"
    } else {
        "degraded"
    };
    Json(serde_json::json!({
        "status": status,
        "database": "ok",
        "storage": storage.view(),
        "installation": state.installation,
        "leader": leader_view(state.role.get()),
        "computeEnvironments": health,
    }))
    .into_response()
}

/// Below this many free bytes in the SQLite data directory, writes are about to fail.
const LOW_SPACE_BYTES: u64 = 1024 * 1024;

struct StorageHealth {
    /// Why writes fail or are about to, if they do.
    full: Option<String>,
    data_dir: Option<String>,
    free_bytes: Option<u64>,
}

impl StorageHealth {
    fn view(&self) -> serde_json::Value {
        let mut view =
            serde_json::json!({"status": if self.full.is_some() { "full" } else { "ok" }});
        if let Some(reason) = &self.full {
            view["reason"] = reason.clone().into();
        }
        if let Some(dir) = &self.data_dir {
            view["dataDirectory"] = dir.clone().into();
        }
        if let Some(free) = self.free_bytes {
            view["freeBytes"] = free.into();
        }
        view
    }
}

/// Whether the database has room to write: a write refused for space in the last few seconds,
/// or (on SQLite) less than `LOW_SPACE_BYTES` free in the data directory, says it has not.
fn storage_health(sqlite_data_dir: Option<&std::path::Path>) -> StorageHealth {
    let free_bytes = sqlite_data_dir.and_then(|dir| {
        nix::sys::statvfs::statvfs(dir)
            .ok()
            .map(|stat| stat.blocks_available() * stat.fragment_size())
    });
    let place = sqlite_data_dir.map_or("the database's disk".to_string(), |dir| {
        format!("the data directory {}", dir.display())
    });
    let full = if error::storage_full_recently() {
        Some(format!("{place} is full: writes fail; free space there"))
    } else if free_bytes.is_some_and(|free| free < LOW_SPACE_BYTES) {
        Some(format!(
            "{place} has less than {} KiB free: writes are about to fail; free space there",
            LOW_SPACE_BYTES / 1024
        ))
    } else {
        None
    };
    StorageHealth {
        full,
        data_dir: sqlite_data_dir.map(|dir| dir.display().to_string()),
        free_bytes,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    documents: Vec<serde_json::Value>,
}

async fn apply(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: ApplyRequest = parse_body(&body)?;
    if request.documents.is_empty() {
        return Err(ApiError::invalid(FieldError::new(
            "documents",
            "is empty; send at least one document",
        )));
    }
    let (valid, warnings) =
        aws_compat::documents_to_apply(&request.documents).map_err(ApiError::invalid)?;
    if let Some(error) = crate::server::process_environment_refusal(&valid, state.process_executor)
    {
        return Err(ApiError::invalid(error));
    }
    let applied = state.store.apply(&valid, now_millis()).await?;
    state.dispatcher.notify_resources_changed();
    state.schedules.handle().notify_changed();
    state.store.refresh_job_event_interest().await?;
    state.rules.notify();
    Ok(Json(serde_json::json!({ "applied": applied, "warnings": warnings })).into_response())
}

async fn resources(store: &Store, kind: Kind) -> Result<Json<Page<ResourceView>>, ApiError> {
    let items = store
        .resource_specs(kind)
        .await?
        .into_iter()
        .map(|(name, spec)| ResourceView::new(kind.as_str(), name, None, spec))
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

async fn list_compute_environments(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    resources(&state.store, Kind::ComputeEnvironment).await
}

async fn list_job_queues(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    resources(&state.store, Kind::JobQueue).await
}

/// PutEvents: `{"entries": [event, …]}` → per entry its `eventId` or an `errorCode` and
/// `errorMessage`. Accepted entries are committed before the answer; an id already on the bus
/// is accepted again without being stored twice.
async fn put_events(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    use crate::core::events::{event_from_entry, MAX_ENTRIES};
    let request: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::invalid(FieldError::new(
            "body",
            format!("is not valid JSON: {error}"),
        ))
    })?;
    let Some(entries) = request.get("entries").and_then(|e| e.as_array()) else {
        return Err(ApiError::invalid(FieldError::new(
            "entries",
            "is required: a list of events ({source, detail-type, detail})",
        )));
    };
    if entries.is_empty() || entries.len() > MAX_ENTRIES {
        return Err(ApiError::invalid(FieldError::new(
            "entries",
            format!("has {} events; send 1 to {MAX_ENTRIES}", entries.len()),
        )));
    }
    let now = chrono::Utc::now();
    let checked: Vec<Result<crate::core::events::Event, String>> = entries
        .iter()
        .map(|entry| event_from_entry(entry, &uuid::Uuid::new_v4().to_string(), now))
        .collect();
    let accepted: Vec<crate::core::events::Event> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    state
        .store
        .put_events(&accepted, now.timestamp_millis())
        .await?;
    state.rules.notify();
    let answers: Vec<serde_json::Value> = checked
        .iter()
        .map(|checked| match checked {
            Ok(event) => serde_json::json!({"eventId": event.id}),
            Err(message) => {
                serde_json::json!({"errorCode": "InvalidEvent", "errorMessage": message})
            }
        })
        .collect();
    let failed = checked.iter().filter(|c| c.is_err()).count();
    Ok(Json(serde_json::json!({"failedEntryCount": failed, "entries": answers})).into_response())
}

/// Server-sent events: each event on the bus from now on (or after `after`, or after the
/// `Last-Event-ID` a reconnecting client sends), as `id: seq` and `data: envelope`, filtered by an
/// optional EventBridge `pattern` (JSON). Ends at server shutdown.
async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures::StreamExt;
    let mut query = QueryParameters(query);
    let pattern = query
        .take("pattern")
        .map(|text| {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
                ApiError::invalid(FieldError::new("pattern", format!("is not JSON: {error}")))
            })?;
            crate::core::event_pattern::EventPattern::parse(&value).map_err(|error| {
                ApiError::invalid(FieldError::new(
                    format!("pattern.{}", error.path),
                    error.message,
                ))
            })
        })
        .transpose()?;
    let after = query
        .take("after")
        .or_else(|| {
            headers
                .get("last-event-id")
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        })
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::invalid(FieldError::new("after", "is not a sequence number"))
            })
        })
        .transpose()?;
    query.finish("pattern or after")?;
    let slot = stream_slot(&state, &headers)?;
    let start = match after {
        Some(seq) => seq,
        None => state.store.latest_event_seq().await?,
    };
    let store = state.store.clone();
    let shutdown = state.shutdown.clone();
    // Held by the stream: job events are stored while it is open.
    let guard = std::sync::Arc::new(state.store.watch_events());
    let events = futures::stream::unfold(
        (start, std::collections::VecDeque::new(), guard),
        move |(mut cursor, mut pending, guard)| {
            let (store, shutdown, pattern) = (store.clone(), shutdown.clone(), pattern.clone());
            async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((event, (cursor, pending, guard)));
                    }
                    if shutdown.is_cancelled() {
                        return None;
                    }
                    match store.events_after(cursor, 256).await {
                        Ok(batch) if !batch.is_empty() => {
                            cursor = batch.last().map_or(cursor, |event| event.seq);
                            pending.extend(batch.into_iter().filter(|event| {
                                pattern.as_ref().is_none_or(|p| p.matches(&event.envelope))
                            }));
                        }
                        Ok(_) => {
                            tokio::select! {
                                () = shutdown.cancelled() => return None,
                                () = tokio::time::sleep(LOG_FOLLOW_INTERVAL) => {}
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "event stream read failed");
                            return None;
                        }
                    }
                }
            }
        },
    )
    .map(move |event| {
        // The slot is held for as long as the stream is open.
        let _held = &slot;
        Ok::<_, std::convert::Infallible>(
            SseEvent::default()
                .id(event.seq.to_string())
                .data(event.envelope.to_string()),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Events on the bus after `after` (a `seq`), oldest first.
async fn list_events(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut query = QueryParameters(query);
    let after = query
        .take("after")
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::invalid(FieldError::new("after", "is not a sequence number"))
            })
        })
        .transpose()?
        .unwrap_or(0);
    query.finish("after")?;
    let events = state.store.events_after(after, MAX_PAGE_SIZE).await?;
    let next = events.last().map(|event| event.seq);
    Ok(Json(serde_json::json!({
        "items": events.into_iter().map(|event| serde_json::json!({"seq": event.seq, "event": event.envelope})).collect::<Vec<_>>(),
        "nextCursor": next.map(|seq| seq.to_string()),
    })))
}

/// A third party's delivery to a webhook trigger: its signature is checked (401, nothing stored,
/// when it does not hold), and its JSON body becomes an event's detail. A delivery id seen before
/// is answered 200 and not stored again.
async fn receive_hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    use crate::core::events::{Event, MAX_ENTRY_BYTES, WEBHOOK_EVENT_ID_PREFIX};
    use crate::core::webhooks::{verify, Rejected};
    if body.len() > MAX_ENTRY_BYTES {
        return Err(ApiError::invalid(FieldError::new(
            "body",
            format!(
                "is {} bytes; a delivery may have {MAX_ENTRY_BYTES} at most",
                body.len()
            ),
        )));
    }
    // A missing trigger and a bad signature get the same answer, so trigger names cannot be
    // told apart from outside; the log says which it was.
    let refused = || {
        ApiError::unauthorized(
            "the delivery is refused: no webhook trigger by this name accepts this signature",
        )
    };
    let Some(trigger) = state.store.webhook_trigger(&name).await? else {
        tracing::warn!(trigger = %name, "webhook delivery for a trigger that does not exist");
        return Err(refused());
    };
    let lower: std::collections::BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_ascii_lowercase(),
                value.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let now = chrono::Utc::now();
    // MACs over a body of up to MAX_ENTRY_BYTES are CPU work: done on the blocking pool, so a
    // flood of deliveries cannot stall the workers that answer everything else.
    let verification = tokio::task::spawn_blocking({
        let (profile, secrets, body) = (trigger.profile, trigger.secrets.clone(), body.clone());
        move || verify(profile, &secrets, &lower, &body, now.timestamp())
    })
    .await
    .map_err(|error| ApiError::internal(&error))?;
    let verified = match verification {
        Ok(verified) => verified,
        Err(Rejected(reason)) => {
            tracing::warn!(trigger = %name, %reason, "webhook delivery refused");
            return Err(refused());
        }
    };
    let payload: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::invalid(FieldError::new("body", format!("is not JSON: {error}")))
    })?;
    let detail = match payload {
        serde_json::Value::Object(object) => object,
        other => {
            let mut wrapped = serde_json::Map::new();
            wrapped.insert("payload".into(), other);
            wrapped
        }
    };
    let event = Event {
        id: format!("{WEBHOOK_EVENT_ID_PREFIX}{name}-{}", verified.delivery_id),
        source: trigger.source.clone(),
        detail_type: verified.event_name.unwrap_or(trigger.detail_type.clone()),
        time: now,
        detail,
        resources: Vec::new(),
    };
    let new = state
        .store
        .put_events(std::slice::from_ref(&event), now.timestamp_millis())
        .await?;
    state.rules.notify();
    let (status, duplicate) = match new.first() {
        Some(true) => (StatusCode::ACCEPTED, false),
        _ => (StatusCode::OK, true),
    };
    Ok((
        status,
        Json(serde_json::json!({"eventId": event.id, "duplicate": duplicate})),
    )
        .into_response())
}

/// Notifications as applied, without their secrets.
async fn list_notifications(
    State(state): State<AppState>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let items = state
        .store
        .resource_specs(Kind::Notification)
        .await?
        .into_iter()
        .map(|(name, mut spec)| {
            if spec.get("secret").is_some() {
                spec["secret"] = serde_json::json!("(hidden)");
            }
            if let Some(endpoint) = spec.get("endpoint").and_then(|e| e.as_str()) {
                spec["endpoint"] = views::redacted_endpoint(endpoint).into();
            }
            serde_json::json!({"apiVersion": manifest::API_VERSION, "kind": "Notification", "metadata": {"name": name}, "spec": spec})
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// The dead-letter list: notifications whose retries are spent.
async fn list_dead_letters(
    State(state): State<AppState>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let items = state
        .store
        .dead_notifications(MAX_PAGE_SIZE)
        .await?
        .into_iter()
        .map(|delivery| {
            serde_json::json!({
                "eventId": delivery.event_id,
                "notification": delivery.notification,
                "attempts": delivery.attempts,
                "lastError": delivery.last_error,
                "event": serde_json::from_str::<serde_json::Value>(&delivery.body).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    notification: Option<String>,
}

/// Sends dead letters again (those of one notification, or all); their retries start over.
async fn redrive_dead_letters(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: RedriveRequest = if body.is_empty() {
        RedriveRequest::default()
    } else {
        parse_body(&body)?
    };
    let redriven = state
        .store
        .redrive_notifications(request.notification.as_deref(), now_millis())
        .await?;
    Ok(Json(serde_json::json!({"redriven": redriven})))
}

/// Webhook triggers as applied, without their secrets.
async fn list_webhook_triggers(
    State(state): State<AppState>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let items = state
        .store
        .resource_specs(Kind::WebhookTrigger)
        .await?
        .into_iter()
        .map(|(name, mut spec)| {
            let n_secrets = spec["secrets"].as_array().map_or(0, Vec::len);
            spec["secrets"] = serde_json::json!(format!("({n_secrets} hidden)"));
            serde_json::json!({"apiVersion": manifest::API_VERSION, "kind": "WebhookTrigger", "metadata": {"name": name}, "spec": spec, "status": {"url": format!("/v1/hooks/{name}")}})
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Event rules as applied, each with its latest deliveries.
async fn list_event_rules(
    State(state): State<AppState>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let mut items = Vec::new();
    for (name, spec) in state.store.resource_specs(Kind::EventRule).await? {
        let deliveries: Vec<serde_json::Value> = state
            .store
            .rule_deliveries(&name, 10)
            .await?
            .into_iter()
            .map(|(event_id, outcome, job_id, reason)| {
                serde_json::json!({"eventId": event_id, "outcome": outcome, "jobId": job_id, "reason": reason})
            })
            .collect();
        let view = ResourceView::new("EventRule", name, None, spec);
        items.push(serde_json::json!({
            "apiVersion": view.api_version,
            "kind": view.kind,
            "metadata": view.metadata,
            "spec": view.spec,
            "status": {"recentDeliveries": deliveries},
        }));
    }
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Schedules as applied, with when each fires next and what its last tick did.
async fn list_schedules(
    State(state): State<AppState>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    let now = chrono::Utc::now();
    let mut items = Vec::new();
    for stored in state.store.schedules().await? {
        let schedule = &stored.schedule;
        let created = chrono::DateTime::from_timestamp_millis(stored.created_at).unwrap_or(now);
        let anchor = schedule.start.unwrap_or(created);
        let last = state.store.last_firing(&schedule.name).await?;
        let next = schedule
            .enabled
            .then(|| {
                crate::core::schedule::next_fire(
                    &schedule.expression,
                    schedule.time_zone,
                    anchor,
                    now,
                )
            })
            .flatten()
            .filter(|tick| schedule.end.is_none_or(|end| *tick <= end));
        let last_view = match last {
            Some(firing) => {
                let job_status = match &firing.job_id {
                    Some(job_id) => state.store.job(job_id).await?.map(|job| job.status),
                    None => None,
                };
                serde_json::json!({
                    "scheduledTime": chrono::DateTime::from_timestamp_millis(firing.scheduled_time)
                        .map(|t| t.with_timezone(&schedule.time_zone).to_rfc3339()),
                    "outcome": firing.outcome.as_str(),
                    "jobId": firing.job_id.map(|id| id.0),
                    "jobStatus": job_status,
                    "reason": firing.reason,
                })
            }
            None => serde_json::Value::Null,
        };
        items.push(serde_json::json!({
            "apiVersion": manifest::API_VERSION,
            "kind": "Schedule",
            "metadata": {"name": schedule.name},
            "spec": stored.spec,
            "status": {
                "nextFireTime": next.map(|t| t.with_timezone(&schedule.time_zone).to_rfc3339()),
                "lastFiring": last_view,
            },
        }));
    }
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Fires a schedule now, as a tick at this instant (subject to its overlap policy).
async fn trigger_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let stored = state
        .store
        .schedules()
        .await?
        .into_iter()
        .find(|stored| stored.schedule.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "schedule {name} does not exist; see `batchctl get schedules`"
            ))
        })?;
    let fired = state
        .schedules
        .fire(&stored, chrono::Utc::now())
        .await
        .map_err(|crate::schedules::ScheduleError::Store(error)| ApiError::from(error))?;
    let last = state.store.last_firing(&name).await?;
    match fired {
        Some(job_id) => {
            let job = state
                .store
                .job(&job_id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
            Ok((
                StatusCode::CREATED,
                Json(job_view(&state.store, &job).await?),
            )
                .into_response())
        }
        None => Err(ApiError::conflict(format!(
            "schedule {name} did not fire: {}",
            last.and_then(|firing| firing.reason)
                .unwrap_or_else(|| "this instant was already handled".into())
        ))),
    }
}

async fn list_job_definitions(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    let name = query
        .get("name")
        .map(|name| DefinitionName::try_from(name.clone()))
        .transpose()
        .map_err(|m| ApiError::invalid(FieldError::new("name", m)))?;
    let items = state
        .store
        .job_definitions(name.as_ref())
        .await?
        .into_iter()
        .map(|stored| {
            let definition = stored.definition;
            ResourceView::new(
                Kind::JobDefinition.as_str(),
                definition.name.to_string(),
                Some(definition.revision),
                stored.spec,
            )
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SubmitJobRequest = parse_body(&body)?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid(FieldError::new(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                    ))
                })?
                .to_string(),
        ),
        None => None,
    };
    let queue_name = QueueName::try_from(request.job_queue.clone())
        .map_err(|m| ApiError::invalid(FieldError::new("jobQueue", m)))?;
    let definition_ref = DefinitionRef::parse(&request.job_definition)
        .map_err(|m| ApiError::invalid(FieldError::new("jobDefinition", m)))?;
    let queue = state.store.job_queue(&queue_name).await?.ok_or_else(|| {
        ApiError::invalid(FieldError::new(
            "jobQueue",
            format!("queue \"{queue_name}\" does not exist; see `batchctl get queues`"),
        ))
    })?;
    let definition = state
        .store
        .job_definition(&definition_ref)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(FieldError::new(
                "jobDefinition",
                format!(
                    "job definition \"{}\" does not exist; see `batchctl get definitions`",
                    request.job_definition
                ),
            ))
        })?;
    let environments = state.store.compute_environments().await?;
    let context = SubmitContext {
        definition: &definition.definition,
        queue: &queue,
        environments: &environments,
    };
    let job_id = JobId(uuid::Uuid::new_v4().to_string());
    let job = build_job(
        &request,
        &context,
        job_id.clone(),
        idempotency_key,
        now_millis(),
    )
    .map_err(ApiError::invalid)?;
    let named: Vec<JobId> = job
        .spec
        .depends_on
        .iter()
        .filter_map(|dependency| dependency.job_id.clone())
        .collect();
    let found = state.store.existing_jobs(&named).await?;
    manifest::check_dependency_targets(&job.spec.depends_on, job.spec.array_size, &found)
        .map_err(ApiError::invalid)?;
    let stored = state.submitter.submit(job).await?;
    let status = if stored.job_id == job_id {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = job_view(&state.store, &stored).await?;
    Ok((status, Json(view)).into_response())
}

/// Query parameters, read by name; any left unread are reported as unknown.
struct QueryParameters(HashMap<String, String>);

impl QueryParameters {
    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    fn finish(self, known: &str) -> Result<(), ApiError> {
        match self.0.into_keys().min() {
            Some(unknown) => Err(ApiError::invalid(FieldError::new(
                unknown,
                format!("is not a query parameter here; use {known}"),
            ))),
            None => Ok(()),
        }
    }
}

/// Jobs, newest first. Array children (`arrayJobId`) are listed as summaries without the spec
/// they share with their parent; other jobs in full, a page holding fewer than `limit` when
/// their specs are large (`MAX_PAGE_SPEC_BYTES`), so no list answer is unbounded.
async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut query = QueryParameters(query);
    let queue = query
        .take("queue")
        .map(QueueName::try_from)
        .transpose()
        .map_err(|m| ApiError::invalid(FieldError::new("queue", m)))?;
    let status = query
        .take("status")
        .map(|text| {
            JobStatus::parse(&text).ok_or_else(|| {
                ApiError::invalid(FieldError::new(
                    "status",
                    format!("unknown status {text:?}; use one of SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED, FAILED"),
                ))
            })
        })
        .transpose()?;
    let before = query
        .take("cursor")
        .map(|cursor| {
            cursor.parse::<i64>().map_err(|_| {
                ApiError::invalid(FieldError::new(
                    "cursor",
                    "is not a cursor this server returned",
                ))
            })
        })
        .transpose()?;
    let limit = query
        .take("limit")
        .map(|text| {
            text.parse::<u32>().map_err(|_| {
                ApiError::invalid(FieldError::new(
                    "limit",
                    format!("{text:?} is not a whole number"),
                ))
            })
        })
        .transpose()?
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .clamp(1, MAX_PAGE_SIZE);
    let array_parent = query.take("arrayJobId").map(JobId);
    query.finish("queue, status, arrayJobId, limit or cursor")?;
    if let Some(parent) = &array_parent {
        if queue.is_some() {
            return Err(ApiError::invalid(FieldError::new(
                "queue",
                "cannot be combined with arrayJobId: an array's children are in its queue",
            )));
        }
        let page = state
            .store
            .array_children(parent, status, before, limit)
            .await?;
        return Ok(Json(Page {
            items: page
                .children
                .iter()
                .map(views::ChildView::from)
                .collect::<Vec<_>>(),
            next_cursor: page.next.map(|seq| seq.to_string()),
        })
        .into_response());
    }
    let page = state
        .store
        .jobs(&JobFilter {
            array_parent,
            queue,
            status,
            before,
            limit,
        })
        .await?;
    Ok(Json(Page {
        items: job_views(&state.store, &page.jobs).await?,
        next_cursor: page.next.map(|seq| seq.to_string()),
    })
    .into_response())
}

async fn describe_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = state
        .store
        .job(&JobId(job_id.clone()))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    Ok(Json(job_view(&state.store, &job).await?))
}

/// Jobs as the API shows them, with each array parent's `statusSummary` (one query for all).
async fn job_views(
    store: &Store,
    jobs: &[crate::core::model::Job],
) -> Result<Vec<JobView>, ApiError> {
    let parents: Vec<JobId> = jobs
        .iter()
        .filter(|job| matches!(job.array, crate::core::model::ArrayRole::Parent { .. }))
        .map(|job| job.job_id.clone())
        .collect();
    let summaries = if parents.is_empty() {
        HashMap::new()
    } else {
        store.array_status_summaries(&parents).await?
    };
    Ok(jobs
        .iter()
        .map(|job| JobView::from(job).with_status_summary(summaries.get(&job.job_id)))
        .collect())
}

async fn job_view(store: &Store, job: &crate::core::model::Job) -> Result<JobView, ApiError> {
    let mut views = job_views(store, std::slice::from_ref(job)).await?;
    Ok(views.remove(0))
}

/// What holds a job that is not running (`batchctl why`).
async fn why(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job_id = JobId(job_id);
    let job = state
        .store
        .job(&job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    let queue = state.store.job_queue(&job.queue).await?;
    let environments = state
        .store
        .compute_environments()
        .await?
        .into_iter()
        .map(|environment| (environment.name.clone(), environment))
        .collect();
    let used = state.store.capacity_in_use().await?;
    let runnable_ahead = state.store.runnable_ahead(&job_id).await?;
    let unfinished_dependencies = state.store.unfinished_dependencies(&job_id).await?;
    let unhealthy = state.dispatcher.unhealthy_environments();
    let unfinished_children = match job.array {
        crate::core::model::ArrayRole::Parent { .. } => state
            .store
            .array_status_summaries(std::slice::from_ref(&job_id))
            .await?
            .get(&job_id)
            .map(|counts| {
                counts
                    .iter()
                    .filter(|(status, _)| !status.is_terminal())
                    .map(|(_, count)| count)
                    .sum()
            })
            .unwrap_or(0),
        crate::core::model::ArrayRole::Single | crate::core::model::ArrayRole::Child { .. } => 0,
    };
    let holds = crate::core::why::why(&crate::core::why::Snapshot {
        job: &job,
        queue: queue.as_ref(),
        environments: &environments,
        used: &used,
        runnable_ahead,
        unfinished_dependencies: &unfinished_dependencies,
        unhealthy: &unhealthy,
        unfinished_children,
        shares: &state.dispatcher.share_standings(&job.queue),
        now: now_millis(),
    });
    Ok(Json(
        serde_json::json!({"jobId": job_id.0, "status": job.status, "holds": holds}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    reason: Option<String>,
}

async fn stop(
    state: AppState,
    job_id: String,
    body: Bytes,
    mode: StopMode,
) -> Result<Json<JobView>, ApiError> {
    let request: StopRequest = if body.is_empty() {
        StopRequest::default()
    } else {
        parse_body(&body)?
    };
    let default_reason = match mode {
        StopMode::Cancel => "Cancelled by user",
        StopMode::Terminate => "Terminated by user",
    };
    let reason = request
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| default_reason.to_string());
    let job = stop_job(
        &state.store,
        &state.dispatcher,
        &JobId(job_id),
        &reason,
        mode,
    )
    .await?;
    Ok(Json(job_view(&state.store, &job).await?))
}

async fn cancel(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    stop(state, job_id, body, StopMode::Cancel).await
}

async fn terminate(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    stop(state, job_id, body, StopMode::Terminate).await
}

/// An attempt's output as raw bytes (stdout and stderr interleaved as they were read, or one of
/// them). With `follow=true` the response streams until the attempt has ended and all is sent.
async fn logs(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut query = QueryParameters(query);
    let (attempt, follow, stream) = (
        query.take("attempt"),
        query.take("follow"),
        query.take("stream"),
    );
    query.finish("attempt, follow or stream")?;
    let job_id = JobId(job_id);
    let job = state
        .store
        .job(&job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    let attempt = match attempt.as_deref() {
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::invalid(FieldError::new(
                    "attempt",
                    format!("{text:?} is not an attempt number (1, 2, …)"),
                ))
            })?,
        None => job
            .current_attempt
            .as_ref()
            .map_or(job.n_attempts.max(1), |attempt| attempt.number),
    };
    let follow = matches!(follow.as_deref(), Some("true" | "1"));
    // Following holds a slot while the attempt runs; a plain read ends at once.
    let slot = if follow {
        Some(stream_slot(&state, &headers)?)
    } else {
        None
    };
    let stream = match stream.as_deref() {
        None => None,
        Some("stdout") => Some(OutputStream::Stdout),
        Some("stderr") => Some(OutputStream::Stderr),
        Some(other) => {
            return Err(ApiError::invalid(FieldError::new(
                "stream",
                format!("{other:?} is not a stream; use stdout or stderr"),
            )))
        }
    };
    let follower = LogFollower {
        store: state.store.clone(),
        job_id,
        attempt,
        after: 0,
        stream,
        follow,
        done: false,
        shutdown: state.shutdown.clone(),
    };
    let body = futures::stream::unfold((follower, slot), |(mut follower, slot)| async move {
        follower.next().await.map(|item| (item, (follower, slot)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

struct LogFollower {
    store: Store,
    job_id: JobId,
    attempt: u32,
    after: i64,
    stream: Option<OutputStream>,
    follow: bool,
    done: bool,
    shutdown: CancellationToken,
}

impl LogFollower {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        while !self.done {
            // Whether the attempt was over is read before its chunks, so the chunks read after it
            // include everything the attempt wrote.
            let over = !self.follow || self.attempt_over().await;
            let lines = match self
                .store
                .logs(&self.job_id, self.attempt, self.after, 256)
                .await
            {
                Ok(lines) => lines,
                Err(error) => return Some(Err(std::io::Error::other(error.to_string()))),
            };
            if let Some(last) = lines.last() {
                self.after = last.id;
                let data: Vec<u8> = lines
                    .into_iter()
                    .filter(|line| self.stream.is_none_or(|stream| stream == line.stream))
                    .flat_map(|line| line.data)
                    .collect();
                if !data.is_empty() {
                    return Some(Ok(Bytes::from(data)));
                }
                continue;
            }
            if over {
                self.done = true;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(LOG_FOLLOW_INTERVAL) => {}
                    () = self.shutdown.cancelled() => self.done = true,
                }
            }
        }
        None
    }

    async fn attempt_over(&self) -> bool {
        match self.store.job(&self.job_id).await {
            Ok(Some(job)) => job.status.is_terminal() || job.n_attempts >= self.attempt,
            Ok(None) | Err(_) => true,
        }
    }
}
