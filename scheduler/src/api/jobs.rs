//! Jobs: submit, list, describe, why, cancel and terminate (their output: `job_logs.rs`).

use super::*;
use crate::core::model::ArrayRole;

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = SubmitJobRequest, params(("Idempotency-Key" = Option<String>, Header, description = "The same key returns the job it first created")), responses((status = 201, description = "Submitted", body = JobView), (status = 200, description = "Submitted before under this Idempotency-Key", body = JobView), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn submit(
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
    let job = crate::submission::build_from_store(
        &state.store,
        &request,
        idempotency_key,
        now_millis(),
        "",
    )
    .await?
    .map_err(ApiError::invalid)?;
    let job_id = job.job_id.clone();
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

/// The filters of a job list, each refused naming its field (the API's list and the console's).
pub(super) fn parse_queue(text: String) -> Result<QueueName, ApiError> {
    QueueName::try_from(text).map_err(|m| ApiError::invalid(FieldError::new("queue", m)))
}

pub(super) fn parse_status(text: &str) -> Result<JobStatus, ApiError> {
    JobStatus::parse(text).ok_or_else(|| {
        ApiError::invalid(FieldError::new(
            "status",
            format!("unknown status {text:?}; use one of SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED, FAILED"),
        ))
    })
}

pub(super) fn parse_cursor(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().map_err(|_| {
        ApiError::invalid(FieldError::new(
            "cursor",
            "is not a cursor this server returned",
        ))
    })
}

pub(super) fn parse_name(text: &str) -> Result<crate::store::JobNameFilter, ApiError> {
    crate::store::JobNameFilter::parse(text)
        .map_err(|m| ApiError::invalid(FieldError::new("name", m)))
}

/// A page of top-level jobs in full, or of one array's children as summaries.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub(super) enum JobList {
    Jobs(Page<JobView>),
    Children(Page<views::ChildView>),
}

/// `anyOf`, not the `oneOf` a derive writes for an untagged enum: an empty page is both.
impl utoipa::PartialSchema for JobList {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::AnyOfBuilder::new()
            .item(<Page<JobView> as utoipa::PartialSchema>::schema())
            .item(<Page<views::ChildView> as utoipa::PartialSchema>::schema())
            .description(Some(
                "A page of top-level jobs in full, or (with arrayJobId) of one array's children as summaries",
            ))
            .into()
    }
}

impl utoipa::ToSchema for JobList {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        for (name, schema) in [
            (JobView::name(), JobView::schema()),
            (views::ChildView::name(), views::ChildView::schema()),
        ] {
            schemas.push((name.into(), schema));
        }
        JobView::schemas(schemas);
        views::ChildView::schemas(schemas);
    }
}

/// Jobs, newest first. Array children (`arrayJobId`) are listed as summaries without the spec
/// they share with their parent; other jobs in full, a page holding fewer than `limit` when
/// their specs are large (`MAX_PAGE_SPEC_BYTES`), so no list answer is unbounded.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(("queue" = Option<String>, Query), ("status" = Option<JobStatus>, Query), ("name" = Option<String>, Query, description = "A name, or a prefix ending in *"), ("arrayJobId" = Option<String>, Query, description = "List this array's children"), ("tagSelector" = Option<String>, Query, description = "key=value, key!=value, key or !key, comma-separated: all must hold"), ("limit" = Option<u32>, Query, description = "1 to 1000"), ("cursor" = Option<String>, Query)), responses((status = 200, description = "Jobs newest first; with arrayJobId, the children as summaries", body = JobList), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<JobList>, ApiError> {
    let mut query = QueryParameters(query);
    let queue = query.take("queue").map(parse_queue).transpose()?;
    let status = query
        .take("status")
        .as_deref()
        .map(parse_status)
        .transpose()?;
    let before = query
        .take("cursor")
        .as_deref()
        .map(parse_cursor)
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
    let name = query.take("name").as_deref().map(parse_name).transpose()?;
    let tags = query
        .take("tagSelector")
        .map(|text| {
            crate::core::tags::TagSelector::parse(&text)
                .map_err(|message| ApiError::invalid(FieldError::new("tagSelector", message)))
        })
        .transpose()?
        .unwrap_or_default();
    query.finish("queue, status, name, tagSelector, arrayJobId, limit or cursor")?;
    if let Some(parent) = &array_parent {
        let shared = [
            ("queue", queue.is_some()),
            ("name", name.is_some()),
            ("tagSelector", !tags.0.is_empty()),
        ];
        if let Some((field, _)) = shared.iter().find(|(_, given)| *given) {
            return Err(ApiError::invalid(FieldError::new(
                *field,
                "cannot be combined with arrayJobId: an array's children are in its queue and share its name and tags",
            )));
        }
        let page = state
            .store
            .array_children(parent, status, before, limit)
            .await?;
        return Ok(Json(JobList::Children(Page {
            items: page
                .children
                .iter()
                .map(views::ChildView::from)
                .collect::<Vec<_>>(),
            next_cursor: page.next.map(|seq| seq.to_string()),
        })));
    }
    let page = state
        .store
        .jobs(&JobFilter {
            array_parent,
            queue,
            status,
            name,
            tags,
            before,
            limit,
        })
        .await?;
    Ok(Json(JobList::Jobs(Page {
        items: job_views(&state.store, &page.jobs).await?,
        next_cursor: page.next.map(|seq| seq.to_string()),
    })))
}

#[utoipa::path(get, path = "/v1/jobs/{job_id}", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), responses((status = 200, description = "The job", body = JobView)))]
pub(super) async fn describe_job(
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

/// The most a wait holds its answer; a client waiting longer asks again.
const MAX_WAIT_SECONDS: u64 = 60;
/// How often a wait looks at the job without being told (an end committed by another server,
/// or by a bulk move such as a dependency failing).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// `GET /v1/jobs/{id}/wait?timeoutSeconds=N`: the job once it has finished (SUCCEEDED or FAILED),
/// or as it is after N seconds (default 30, at most 60) or when the server stops. Holds a stream
/// slot while it waits.
#[utoipa::path(get, path = "/v1/jobs/{job_id}/wait", tag = "jobs", params(("job_id" = String, Path), ("timeoutSeconds" = Option<u64>, Query, description = "1 to 60, default 30")), responses((status = 200, description = "The job once finished, or as it is at the timeout", body = JobView), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Too many open streams for this caller or server", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn wait_for_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<JobView>, ApiError> {
    let mut query = QueryParameters(query);
    let timeout = query.take("timeoutSeconds");
    query.finish("timeoutSeconds")?;
    let seconds = match timeout {
        None => 30,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_WAIT_SECONDS).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(FieldError::new(
                    "timeoutSeconds",
                    format!(
                        "{text:?} is not a whole number of seconds from 1 to {MAX_WAIT_SECONDS}"
                    ),
                ))
            })?,
    };
    let _slot = stream_slot(&state, &headers)?;
    let job_id = JobId(job_id);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let registration = state.store.wait_for_finish(&job_id);
    loop {
        // Told of ends committed from here on, before the read, so none is missed in between.
        let told = registration.notified();
        let job = state
            .store
            .job(&job_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
        let now = tokio::time::Instant::now();
        if job.status.is_terminal() || now >= deadline || state.shutdown.is_cancelled() {
            return Ok(Json(job_view(&state.store, &job).await?));
        }
        let look_again = deadline.min(now + WAIT_POLL);
        tokio::select! {
            () = told => {}
            () = tokio::time::sleep_until(look_again) => {}
            // A stopping server answers with the job as it is rather than wait for it.
            () = state.shutdown.cancelled() => {}
        }
    }
}

/// Jobs as the API shows them, with each array parent's `statusSummary` (one query for all).
pub(super) async fn job_views(
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

pub(super) async fn job_view(
    store: &Store,
    job: &crate::core::model::Job,
) -> Result<JobView, ApiError> {
    let mut views = job_views(store, std::slice::from_ref(job)).await?;
    Ok(views.remove(0))
}

/// What holds a job that is not running (`batchctl why`).
#[utoipa::path(get, path = "/v1/jobs/{job_id}/why", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), responses((status = 200, description = "What holds the job", body = answers::WhyAnswer)))]
pub(super) async fn why(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<answers::WhyAnswer>, ApiError> {
    let job_id = JobId(job_id);
    let job = state
        .store
        .job(&job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    let Waiting {
        holds,
        estimated_start,
    } = waiting(&state, &job).await?;
    Ok(Json(answers::WhyAnswer {
        job_id: job_id.0,
        status: job.status,
        holds,
        estimated_start,
    }))
}

/// What holds a waiting job (`core::why`) and, for a RUNNABLE one, when it may start
/// (`core::estimate`): the API's `why` and the console's job page.
pub(super) struct Waiting {
    pub holds: Vec<crate::core::why::Hold>,
    pub estimated_start: Option<crate::core::estimate::StartEstimate>,
}

/// Reads what `core::why` and `core::estimate` decide from, once, and asks both.
pub(super) async fn waiting(
    state: &AppState,
    job: &crate::core::model::Job,
) -> Result<Waiting, ApiError> {
    let job_id = &job.job_id;
    let runnable = match job.status {
        JobStatus::Runnable => true,
        JobStatus::Submitted
        | JobStatus::Pending
        | JobStatus::Starting
        | JobStatus::Running
        | JobStatus::Succeeded
        | JobStatus::Failed => false,
    };
    let queue = state.store.job_queue(&job.queue).await?;
    let environment_list = state.store.compute_environments().await?;
    let environments = environment_list
        .iter()
        .map(|environment| (environment.name.clone(), environment.clone()))
        .collect();
    let used = state.store.capacity_in_use().await?;
    let runnable_ahead = state
        .store
        .runnable_ahead(job_id, crate::core::why::QUEUE_POSITION_COUNTED_TO)
        .await?;
    let unfinished_dependencies = state.store.unfinished_dependencies(job_id).await?;
    let unhealthy = state.dispatcher.unhealthy_environments();
    let unfinished_children = match &job.array {
        ArrayRole::Parent { .. } => {
            children_counted(state, job_id, |status| !status.is_terminal()).await?
        }
        ArrayRole::Single | ArrayRole::Child { .. } => 0,
    };
    let array_in_flight = match (&job.array, job.spec.array_max_concurrency) {
        (ArrayRole::Child { parent, .. }, Some(_)) => {
            children_counted(state, parent, |status| {
                matches!(
                    status,
                    JobStatus::Runnable | JobStatus::Starting | JobStatus::Running
                )
            })
            .await?
        }
        (ArrayRole::Child { .. }, None) | (ArrayRole::Single | ArrayRole::Parent { .. }, _) => 0,
    };
    // From the counters the database keeps (a few rows), not by counting jobs.
    let queue_running = state
        .store
        .job_counts()
        .await?
        .into_iter()
        .filter(|count| {
            count.queue == job.queue.as_str()
                && (count.status == JobStatus::Starting.as_str()
                    || count.status == JobStatus::Running.as_str())
        })
        .map(|count| count.n.max(0) as u64)
        .sum();
    // Limits, consumable resources, the running jobs and the estimate concern a RUNNABLE job only.
    let (limits, consumables, running) = if runnable {
        (
            state.store.concurrency_limits().await?,
            state.store.consumable_stock().await?,
            state.store.active_jobs().await?,
        )
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let holds = crate::core::why::why(&crate::core::why::Snapshot {
        job,
        queue: queue.as_ref(),
        environments: &environments,
        used: &used,
        runnable_ahead,
        unfinished_dependencies: &unfinished_dependencies,
        unhealthy: &unhealthy,
        unfinished_children,
        array_in_flight,
        queue_running,
        shares: &state.dispatcher.share_standings(&job.queue),
        limits: &limits,
        consumables: &consumables,
        running: &running,
        now: now_millis(),
    });
    let estimated_start = match (&queue, runnable) {
        (Some(queue), true) => Some(start_estimate(
            state,
            job,
            queue,
            &environment_list,
            &running,
            runnable_ahead,
        )),
        (Some(_), false) | (None, _) => None,
    };
    Ok(Waiting {
        holds,
        estimated_start,
    })
}

/// When a RUNNABLE job may start (`core::estimate`), from its queue's ENABLED environments, the
/// attempts running on them, the jobs ahead of it and the typical runs this server has seen.
fn start_estimate(
    state: &AppState,
    job: &crate::core::model::Job,
    queue: &crate::core::model::JobQueue,
    environments: &[crate::core::model::ComputeEnvironment],
    running: &[crate::core::model::Job],
    ahead: u64,
) -> crate::core::estimate::StartEstimate {
    use crate::core::estimate::{
        estimate_start, EnvironmentOutlook, EstimateInput, RunningAttempt,
    };
    use crate::core::model::ResourceState;
    let typical = |job: &crate::core::model::Job| {
        state
            .dispatcher
            .typical_run_millis(job.spec.definition.as_str())
    };
    let outlooks = queue
        .compute_environments
        .iter()
        .filter_map(|name| {
            environments
                .iter()
                .find(|environment| &environment.name == name)
        })
        .filter(|environment| environment.state == ResourceState::Enabled)
        .map(|environment| EnvironmentOutlook {
            capacity: environment.capacity,
            running: running
                .iter()
                .filter_map(|other| {
                    let attempt = other.current_attempt.as_ref()?;
                    (attempt.compute_environment == environment.name).then(|| {
                        let started = attempt.started_at.unwrap_or(attempt.placed_at);
                        let timeout = other
                            .spec
                            .timeout_seconds
                            .map(|seconds| started + seconds as i64 * 1000);
                        RunningAttempt {
                            holds: other.spec.container.resources,
                            expected_end: typical(other).map(|millis| started + millis).or(timeout),
                        }
                    })
                })
                .collect(),
        })
        .collect();
    estimate_start(&EstimateInput {
        now: now_millis(),
        needs: job.spec.container.resources,
        ahead,
        typical_millis: typical(job),
        environments: outlooks,
    })
}

/// How many of an array's children are in a status `counted` accepts, from the array's counters.
async fn children_counted(
    state: &AppState,
    parent: &JobId,
    counted: fn(JobStatus) -> bool,
) -> Result<u64, ApiError> {
    Ok(state
        .store
        .array_status_summaries(std::slice::from_ref(parent))
        .await?
        .get(parent)
        .map(|counts| {
            counts
                .iter()
                .filter(|(status, _)| counted(**status))
                .map(|(_, count)| count)
                .sum()
        })
        .unwrap_or(0))
}

pub(super) async fn stop(
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

/// `POST /v1/jobs/{id}/suspend` and `/resume`: holds a waiting job (an array job with its waiting
/// children) in its place, or lets it be placed again.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/suspend", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), responses((status = 200, description = "Held", body = JobView), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn suspend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    change_job(state, caller, JobId(job_id), JobChange::Suspend).await
}

#[utoipa::path(post, path = "/v1/jobs/{job_id}/resume", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), responses((status = 200, description = "Released", body = JobView), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    change_job(state, caller, JobId(job_id), JobChange::Resume).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct JobPatch {
    scheduling_priority: i64,
}

/// `PATCH /v1/jobs/{id}` with `{"schedulingPriority": N}`: a waiting job's order within its
/// share, effective at the next placement pass.
#[utoipa::path(patch, path = "/v1/jobs/{job_id}", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), request_body = JobPatch, responses((status = 200, description = "Changed", body = JobView), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn patch_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    let patch: JobPatch = parse_body(&body)?;
    change_job(
        state,
        caller,
        JobId(job_id),
        JobChange::SchedulingPriority(patch.scheduling_priority),
    )
    .await
}

async fn change_job(
    state: AppState,
    caller: Caller,
    job_id: JobId,
    change: JobChange,
) -> Result<Json<JobView>, ApiError> {
    state
        .store
        .change_waiting_job(&job_id, change, Some(caller))
        .await
        .map_err(|error| match error {
            JobChangeError::NotFound(_) => ApiError::not_found(error.to_string()),
            JobChangeError::NotWaiting(_) | JobChangeError::Contended(_) => {
                ApiError::conflict(error.to_string())
            }
            JobChangeError::Store(error) => error.into(),
        })?;
    if change != JobChange::Suspend {
        state.dispatcher.notify_work();
    }
    state.rules.notify();
    let job = state
        .store
        .job(&job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    Ok(Json(job_view(&state.store, &job).await?))
}

/// `DELETE /v1/jobs/{id}`: a finished job with its attempts and output (an array job with its
/// children). 409 while it waits or runs, or while a waiting job depends on it.
#[utoipa::path(delete, path = "/v1/jobs/{job_id}", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), responses((status = 200, description = "Deleted with its attempts and output", body = answers::DeleteAnswer), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn delete_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
) -> Result<Json<answers::DeleteAnswer>, ApiError> {
    let deleted = state.store.delete_job(&JobId(job_id), Some(caller)).await?;
    state.rules.notify();
    Ok(Json(answers::DeleteAnswer {
        deleted: vec![deleted],
    }))
}

#[utoipa::path(post, path = "/v1/jobs/{job_id}/cancel", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), request_body(content = Option<StopRequest>), responses((status = 200, description = "Cancelled, or already finished", body = JobView), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    stop(state, job_id, body, StopMode::Cancel).await
}

#[utoipa::path(post, path = "/v1/jobs/{job_id}/terminate", tag = "jobs", params(("job_id" = String, Path, description = "The job's id")), request_body(content = Option<StopRequest>), responses((status = 200, description = "Stopping", body = JobView), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn terminate(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    stop(state, job_id, body, StopMode::Terminate).await
}
