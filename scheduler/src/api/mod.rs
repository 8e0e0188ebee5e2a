//! The HTTP API: JSON under `/v1`, problem+json errors, cursor pagination, `GET /healthz`.
//!
//! Invariants:
//! - Handlers parse and validate input at the edge (`manifest`), then call the store, the submitter
//!   or `control`; they make no scheduling decision of their own.
//! - A 2xx to a submit or an apply means the write committed.

pub mod answers;
pub mod console;
pub mod error;
mod events;
mod health;
mod job_logs;
mod jobs;
pub mod openapi;
pub mod requests;
mod resources;
pub mod secret_views;
pub mod streams;
pub mod views;

use events::*;
use health::*;
use job_logs::*;
use jobs::*;
use resources::*;

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use batchctl_executor::OutputStream;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
use error::Problem;
use requests::{ApplyRequest, PutEventsRequest, RedriveRequest, StopRequest};
use views::{JobView, Page, ResourceView};

use crate::aws_compat;
use crate::control::{stop_job, StopMode};
use crate::core::audit::Caller;
use crate::core::model::{DefinitionName, JobId, JobStatus, QueueName};
use crate::dispatcher::DispatcherHandle;
use crate::manifest::{self, FieldError, Kind, SubmitJobRequest};
use crate::rules::RuleHandle;
use crate::schedules::ScheduleRunner;
use crate::store::{now_millis, JobChange, JobChangeError, JobFilter, Store};
use crate::submitter::Submitter;
use std::sync::Arc;

/// Jobs per page when a list request names no limit, and the most it may ask for.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
const LOG_FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// What the handlers share, behind one `Arc`: axum clones the state for every request and every
/// middleware layer, and a clone of the fields themselves (the store's pools, the handles, two
/// owned strings) cost a measurable share of a submit's server time (BENCHMARKS.md, "Turnaround
/// re-measured"). Fields are read through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<ApiContext>);

impl AppState {
    pub fn new(context: ApiContext) -> AppState {
        AppState(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = ApiContext;

    fn deref(&self) -> &ApiContext {
        &self.0
    }
}

pub struct ApiContext {
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
    /// The console's per-minute chart counts of minutes that are over.
    pub console_charts: Arc<std::sync::Mutex<console::chart::MinuteCache>>,
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
    routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_browser_pages,
        ))
        // Set after the layers, so it replaces the 405 they wrap: a method a path does not serve
        // is 405 (with `Allow`) before any token or content type is asked for; it holds no data.
        .method_not_allowed_fallback(|request: axum::extract::Request| async move {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                title: "Method not allowed".into(),
                detail: format!(
                    "{} is not served at {}; the Allow header lists what is",
                    request.method(),
                    request.uri().path()
                ),
                errors: Vec::new(),
                retry_after: None,
            }
        })
        .with_state(state)
}

/// Every route, before the middlewares and the state (`openapi`'s test reads them).
fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for kind in Kind::ALL {
        router = router.route(
            &format!("/v1/{}/{{name}}", kind.collection()),
            axum::routing::delete(
                move |State(state): State<AppState>,
                      Extension(caller): Extension<Caller>,
                      Path(name): Path<String>| {
                    delete_resource(state, caller, kind, name)
                },
            )
            .patch(
                move |State(state): State<AppState>,
                      Extension(caller): Extension<Caller>,
                      Path(name): Path<String>,
                      body: Bytes| {
                    patch_resource(state, caller, kind, name, body)
                },
            ),
        );
    }
    router
        .merge(console::routes())
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
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
        .route("/v1/concurrencylimits", get(list_concurrency_limits))
        .route("/v1/consumableresources", get(list_consumable_resources))
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/dlq", get(list_dead_letters))
        .route("/v1/dlq/redrive", post(redrive_dead_letters))
        .route("/v1/hooks/{name}", post(receive_hook))
        .route("/v1/schedules/{name}/trigger", post(trigger_schedule))
        .route("/v1/jobs", post(submit).get(list_jobs))
        .route(
            "/v1/jobs/{job_id}",
            get(describe_job).delete(delete_job).patch(patch_job),
        )
        .route("/v1/jobs/{job_id}/suspend", post(suspend))
        .route("/v1/jobs/{job_id}/resume", post(resume))
        .route("/v1/jobs/{job_id}/cancel", post(cancel))
        .route("/v1/jobs/{job_id}/terminate", post(terminate))
        .route("/v1/jobs/{job_id}/logs", get(logs))
        .route("/v1/jobs/{job_id}/why", get(why))
        .route("/v1/jobs/{job_id}/wait", get(wait_for_job))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see the API section of the README")
        })
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
    use crate::core::audit::Caller;
    use crate::core::auth::{required_scope, Access};
    let mut request = request;
    if state.tokens.is_empty() {
        request.extensions_mut().insert(Caller::Open);
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
        Access::Allowed => {
            // Who made a change, for its audit event (`core::audit`).
            let caller = state
                .tokens
                .scope_of(authorization)
                .map_or(Caller::Open, Caller::Token);
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
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

/// Query parameters, read by name; any left unread are reported as unknown.
pub(super) struct QueryParameters(HashMap<String, String>);

impl QueryParameters {
    pub(super) fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    pub(super) fn finish(self, known: &str) -> Result<(), ApiError> {
        match self.0.into_keys().min() {
            Some(unknown) => Err(ApiError::invalid(FieldError::new(
                unknown,
                format!("is not a query parameter here; use {known}"),
            ))),
            None => Ok(()),
        }
    }
}
