//! The web console, served by `batchctl server`: one page shell at `/` and `/console/…` (no data
//! in it, open like `/healthz`), its script and style embedded in the binary, and HTML fragments
//! under `/ui/…` that the script fetches with the caller's token in the `Authorization` header.
//!
//! Invariants:
//! - Fragments pass the same authentication and scopes as the API (a GET needs `read`); they
//!   read through the same store calls and list handlers, so the console shows nothing the API
//!   would not (secrets stay hidden).
//! - Buttons are rendered only for tokens whose scope allows their request; the requests
//!   themselves are the API's (`POST /v1/jobs/{id}/cancel`, …), checked there again.
//! - Every page carries a Content-Security-Policy allowing only this origin's script and style:
//!   nothing is fetched from elsewhere, and no inline script runs.

pub mod chart;
mod pages;
mod resource_pages;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use maud::Markup;

use super::jobs::{parse_cursor, parse_name, parse_queue, parse_status};
use super::{ApiError, AppState, QueryParameters, DEFAULT_PAGE_SIZE};
use crate::core::audit::Caller;
use crate::core::auth::Scope;
use crate::core::model::{ArrayRole, JobId, JobStatus, ResourceState};
use crate::store::{now_millis, JobFilter};
use pages::{Abilities, JobFilters, JobRows};

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
/// Only this origin's files; no inline script or style, no frames, no form posts elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// Recent failures on the overview, and recent events on the events page.
const RECENT_FAILURES: u32 = 10;
const RECENT_EVENTS: i64 = 100;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(shell))
        .route("/console", get(shell))
        .route("/console/{*rest}", get(shell))
        .route("/console-assets/console.js", get(script))
        .route("/console-assets/console.css", get(style))
        .route("/ui/overview", get(overview))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{job_id}", get(job))
        .route("/ui/schedules", get(schedules))
        .route("/ui/rules", get(rules))
        .route("/ui/notifications", get(notifications))
        .route("/ui/events", get(events))
}

fn html(markup: Markup) -> Response {
    let mut response = markup.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn shell() -> Response {
    html(pages::shell())
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn abilities(caller: Option<Extension<Caller>>) -> Abilities {
    match caller.map(|Extension(caller)| caller) {
        Some(Caller::Token(scope)) => Abilities {
            submit: scope >= Scope::Submit,
            admin: scope >= Scope::Admin,
        },
        Some(Caller::Open | Caller::Server) => Abilities {
            submit: true,
            admin: true,
        },
        None => Abilities {
            submit: false,
            admin: false,
        },
    }
}

fn lock(
    cache: &std::sync::Mutex<chart::MinuteCache>,
) -> std::sync::MutexGuard<'_, chart::MinuteCache> {
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn state_name(state: ResourceState) -> &'static str {
    match state {
        ResourceState::Enabled => "ENABLED",
        ResourceState::Disabled => "DISABLED",
    }
}

async fn overview(State(state): State<AppState>) -> Result<Response, ApiError> {
    use crate::leadership::RoleState;
    let counts = state.store.job_counts().await?;
    let count = |queue: &str, statuses: &[JobStatus]| -> i64 {
        counts
            .iter()
            .filter(|c| c.queue == queue && statuses.iter().any(|s| s.as_str() == c.status))
            .map(|c| c.n)
            .sum()
    };
    let queues: Vec<pages::QueueRow> = state
        .store
        .job_queues()
        .await?
        .into_iter()
        .map(|queue| {
            let name = queue.name.to_string();
            pages::QueueRow {
                state: state_name(queue.state),
                priority: queue.priority,
                stop_policy: match (queue.held, queue.drain) {
                    (_, true) => "HoldAndDrain",
                    (true, false) => "Hold",
                    (false, false) => "None",
                },
                waiting: count(
                    &name,
                    &[
                        JobStatus::Submitted,
                        JobStatus::Pending,
                        JobStatus::Runnable,
                    ],
                ),
                running: count(&name, &[JobStatus::Starting, JobStatus::Running]),
                succeeded: count(&name, &[JobStatus::Succeeded]),
                failed: count(&name, &[JobStatus::Failed]),
                name,
            }
        })
        .collect();
    let unhealthy = state.dispatcher.unhealthy_environments();
    let used = state.store.capacity_in_use().await?;
    let environments: Vec<pages::EnvironmentRow> = state
        .store
        .compute_environments()
        .await?
        .into_iter()
        .map(|environment| pages::EnvironmentRow {
            name: environment.name.to_string(),
            kind: match environment.backend.environment_type() {
                crate::core::model::EnvironmentType::Process => "process",
                crate::core::model::EnvironmentType::Docker => "docker",
                crate::core::model::EnvironmentType::Kubernetes => "kubernetes",
            },
            state: state_name(environment.state),
            health: unhealthy
                .get(environment.name.as_str())
                .cloned()
                .unwrap_or_else(|| "ok".into()),
            used: used.get(&environment.name).copied().unwrap_or_default(),
            capacity: environment.capacity,
        })
        .collect();
    let failed = state
        .store
        .jobs(&JobFilter {
            status: Some(JobStatus::Failed),
            limit: RECENT_FAILURES,
            ..JobFilter::default()
        })
        .await?;
    let storage = super::health::storage_health(state.sqlite_data_dir.as_deref());
    let queue_names: Vec<String> = queues.iter().map(|queue| queue.name.clone()).collect();
    let now = now_millis();
    let since = lock(&state.console_charts).read_since(&queue_names, now);
    let read = state.store.finished_by_minute(&queue_names, since).await?;
    let minutes = lock(&state.console_charts).merge(&queue_names, now, since, read);
    let overview = pages::Overview {
        status: super::health::overall_status(&unhealthy, &storage).into(),
        leader: match state.role.get() {
            RoleState::Leader { term: Some(term) } => format!("leader (term {term})"),
            RoleState::Leader { term: None } => "leader (SQLite: the only server)".into(),
            RoleState::Follower => "follower: serves the API, another server dispatches".into(),
        },
        storage: storage.summary(),
        queues,
        environments,
        failures: super::jobs::job_views(&state.store, &failed.jobs).await?,
        charts: chart::series(&queue_names, &minutes, now),
    };
    Ok(html(pages::overview(&overview)))
}

async fn jobs(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut query = QueryParameters(query);
    let nonempty = |value: Option<String>| value.filter(|value| !value.is_empty());
    let filters = JobFilters {
        queue: nonempty(query.take("queue")),
        status: nonempty(query.take("status"))
            .as_deref()
            .map(parse_status)
            .transpose()?,
        name: nonempty(query.take("name")),
        array_job_id: nonempty(query.take("arrayJobId")),
    };
    let cursor = nonempty(query.take("cursor"));
    query.finish("queue, status, name, arrayJobId or cursor")?;
    let before = cursor.as_deref().map(parse_cursor).transpose()?;
    let (rows, next) = match &filters.array_job_id {
        Some(parent) => {
            let page = state
                .store
                .array_children(
                    &JobId(parent.clone()),
                    filters.status,
                    before,
                    DEFAULT_PAGE_SIZE,
                )
                .await?;
            (
                JobRows::Children(
                    page.children
                        .iter()
                        .map(super::views::ChildView::from)
                        .collect(),
                ),
                page.next,
            )
        }
        None => {
            let filter = JobFilter {
                queue: filters.queue.clone().map(parse_queue).transpose()?,
                status: filters.status,
                name: filters.name.as_deref().map(parse_name).transpose()?,
                before,
                limit: DEFAULT_PAGE_SIZE,
                array_parent: None,
                tags: Default::default(),
            };
            let page = state.store.jobs(&filter).await?;
            (
                JobRows::Jobs(super::jobs::job_views(&state.store, &page.jobs).await?),
                page.next,
            )
        }
    };
    let queues: Vec<String> = state
        .store
        .job_queues()
        .await?
        .into_iter()
        .map(|queue| queue.name.to_string())
        .collect();
    let next = next.map(|seq| seq.to_string());
    Ok(html(pages::jobs(
        &filters,
        &queues,
        &rows,
        next.as_deref(),
        cursor.is_some(),
    )))
}

async fn job(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(stored) = state.store.job(&JobId(job_id.clone())).await? else {
        let mut response = html(pages::not_found(&format!(
            "Job {job_id} does not exist (it may have been deleted or pruned)."
        )));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    let view = super::jobs::job_view(&state.store, &stored).await?;
    let waiting = matches!(
        stored.status,
        JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable
    );
    let super::jobs::Waiting {
        holds,
        estimated_start: estimate,
    } = if waiting {
        super::jobs::waiting(&state, &stored).await?
    } else {
        super::jobs::Waiting {
            holds: Vec::new(),
            estimated_start: None,
        }
    };
    // An array parent runs nothing itself: its output is its children's.
    let view = match stored.array {
        ArrayRole::Parent { .. } => super::views::JobView {
            attempts: Vec::new(),
            current_attempt: None,
            ..view
        },
        ArrayRole::Single | ArrayRole::Child { .. } => view,
    };
    Ok(html(pages::job(
        &view,
        &holds,
        estimate.as_ref(),
        abilities(caller),
    )))
}

async fn schedules(State(state): State<AppState>) -> Result<Response, ApiError> {
    let page = super::resources::list_schedules(State(state)).await?;
    Ok(html(resource_pages::schedules(&page.0.items)))
}

async fn rules(State(state): State<AppState>) -> Result<Response, ApiError> {
    let page = super::resources::list_event_rules(State(state)).await?;
    Ok(html(resource_pages::rules(&page.0.items)))
}

async fn notifications(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let items = super::resources::list_notifications(State(state.clone())).await?;
    let dead = super::resources::list_dead_letters(State(state)).await?;
    Ok(html(resource_pages::notifications(
        &items.0.items,
        &dead.0.items,
        abilities(caller),
    )))
}

async fn events(State(state): State<AppState>) -> Result<Response, ApiError> {
    let latest = state.store.latest_event_seq().await?;
    let mut recent: Vec<(i64, serde_json::Value)> = state
        .store
        .events_after((latest - RECENT_EVENTS).max(0), RECENT_EVENTS as u32)
        .await?
        .into_iter()
        .map(|event| (event.seq, event.envelope))
        .collect();
    recent.reverse();
    Ok(html(resource_pages::events(&recent)))
}
