//! Applied resources: apply, and the lists of environments, queues, definitions, schedules,
//! rules, webhook triggers and notifications (secrets hidden); dead letters and their redrive.

use super::*;

/// Applies every document in one transaction, or none of them.
#[utoipa::path(post, path = "/v1/apply", tag = "resources", request_body = ApplyRequest, responses((status = 200, description = "What each document did", body = answers::ApplyAnswer), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn apply(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ApplyRequest = parse_body(&body)?;
    if request.documents.is_empty() {
        return Err(ApiError::invalid(FieldError::new(
            "documents",
            "is empty; send at least one document",
        )));
    }
    apply_documents(&state, caller, &request.documents).await
}

/// `PATCH /v1/{collection}/{name}`: a JSON merge patch (RFC 7386) of the resource's spec, such as
/// `{"priority": 5, "state": "DISABLED"}` for a queue or `{"maxVcpus": 8}` for an environment,
/// then applied as `apply` would, with the same checks; effective at the dispatcher's next pass.
pub(super) async fn patch_resource(
    state: AppState,
    caller: Caller,
    kind: Kind,
    name: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    if kind == Kind::JobDefinition {
        return Err(ApiError::conflict(
            "job definitions are revisions, not changed in place: apply the changed definition to register a new revision",
        ));
    }
    let patch: serde_json::Value = parse_body(&body)?;
    if !patch.is_object() {
        return Err(ApiError::invalid(FieldError::new(
            "spec",
            "send a JSON object of the spec fields to change (a merge patch)",
        )));
    }
    let Some(mut spec) = state.store.spec_for_patch(kind, &name).await? else {
        return Err(ApiError::not_found(format!(
            "{} \"{name}\" does not exist; see `batchctl get {}`",
            kind.as_str(),
            kind.plural()
        )));
    };
    merge_patch(&mut spec, &patch);
    let document = manifest::Document {
        api_version: manifest::API_VERSION.into(),
        kind: kind.as_str().into(),
        metadata: manifest::Metadata { name },
        spec,
    };
    let document = serde_json::to_value(document).map_err(|error| {
        ApiError::invalid(FieldError::new(
            "body",
            format!("cannot be applied: {error}"),
        ))
    })?;
    apply_documents(&state, caller, &[document]).await
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) else {
        *target = patch.clone();
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(
                target.entry(key.clone()).or_insert(serde_json::Value::Null),
                value,
            );
        }
    }
}

/// Validates and stores documents, then tells the loops that read them.
async fn apply_documents(
    state: &AppState,
    caller: Caller,
    documents: &[serde_json::Value],
) -> Result<Response, ApiError> {
    let (valid, warnings) = aws_compat::documents_to_apply(documents).map_err(ApiError::invalid)?;
    if let Some(error) = crate::server::process_environment_refusal(&valid, state.process_executor)
    {
        return Err(ApiError::invalid(error));
    }
    let mounts_host_paths = valid.iter().any(|(resource, _)| {
        matches!(resource, crate::manifest::Resource::JobDefinition { spec, .. } if spec.container.storage.host_paths().next().is_some())
    });
    if mounts_host_paths {
        let stored = state.store.compute_environments().await?;
        if let Some(error) = crate::server::host_path_refusal(&valid, &stored) {
            return Err(ApiError::invalid(error));
        }
    }
    let applied = state
        .store
        .apply_by(&valid, now_millis(), Some(caller))
        .await?;
    state.dispatcher.notify_resources_changed();
    state.schedules.handle().notify_changed();
    state.store.refresh_job_event_interest().await?;
    state.rules.notify();
    Ok(Json(answers::ApplyAnswer { applied, warnings }).into_response())
}

/// `DELETE /v1/{collection}/{name}`: deletes a resource, or deregisters a job definition (all
/// its ACTIVE revisions, or the one named `NAME:REVISION`). 409 when AWS Batch's rules say it may
/// not go yet, saying what blocks it.
pub(super) async fn delete_resource(
    state: AppState,
    caller: Caller,
    kind: Kind,
    name: String,
) -> Result<Json<answers::DeleteAnswer>, ApiError> {
    let (name, revision) = match kind {
        Kind::JobDefinition => {
            let reference = crate::core::model::DefinitionRef::parse(&name)
                .map_err(|m| ApiError::invalid(FieldError::new("name", m)))?;
            (reference.name.to_string(), reference.revision)
        }
        _ => (name, None),
    };
    let deleted = state
        .store
        .delete_resource(kind, &name, revision, Some(caller))
        .await?;
    // Its audit event is on the bus.
    state.rules.notify();
    match kind {
        Kind::ComputeEnvironment
        | Kind::JobQueue
        | Kind::JobDefinition
        | Kind::ConcurrencyLimit
        | Kind::ConsumableResource => {
            state.dispatcher.notify_resources_changed();
        }
        Kind::Schedule => state.schedules.handle().notify_changed(),
        Kind::EventRule => {
            state.store.refresh_job_event_interest().await?;
            state.rules.notify();
        }
        Kind::WebhookTrigger | Kind::Notification | Kind::Secret => {}
    }
    Ok(Json(answers::DeleteAnswer { deleted }))
}

pub(super) async fn resources(
    store: &Store,
    kind: Kind,
) -> Result<Json<Page<ResourceView>>, ApiError> {
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

#[utoipa::path(get, path = "/v1/computeenvironments", tag = "resources", responses((status = 200, description = "Compute environments as applied", body = Page<ResourceView>)))]
pub(super) async fn list_compute_environments(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    resources(&state.store, Kind::ComputeEnvironment).await
}

#[utoipa::path(get, path = "/v1/jobqueues", tag = "resources", responses((status = 200, description = "Job queues as applied", body = Page<ResourceView>)))]
pub(super) async fn list_job_queues(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    resources(&state.store, Kind::JobQueue).await
}

/// Consumable resources as applied, each with how much is in use or used up now.
#[utoipa::path(get, path = "/v1/consumableresources", tag = "resources", responses((status = 200, description = "Consumable resources as applied, with their use", body = Page<answers::ResourceWithStatus<answers::ConsumableStatus>>)))]
pub(super) async fn list_consumable_resources(
    State(state): State<AppState>,
) -> Result<Json<Page<answers::ResourceWithStatus<answers::ConsumableStatus>>>, ApiError> {
    let stock = state.store.consumable_stock().await?;
    let running = state.store.active_jobs().await?;
    // What placement would see now: the book it places against.
    let book = crate::core::consumable::ConsumableBook::new(
        &stock,
        running
            .iter()
            .map(|job| job.spec.consumable_resources.as_slice()),
    );
    let mut items = Vec::new();
    for (name, spec) in state.store.resource_specs(Kind::ConsumableResource).await? {
        let Some(stock) = stock.iter().find(|stock| stock.resource.name == name) else {
            continue;
        };
        let available = book.left(&name).unwrap_or(0);
        let status = answers::ConsumableStatus {
            in_use_quantity: stock.resource.total_quantity.saturating_sub(available),
            available_quantity: available,
        };
        let view = ResourceView::new(Kind::ConsumableResource.as_str(), name, None, spec);
        items.push(with_status(view, status));
    }
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Secrets by name, with when each was stored and changed; never a value (the spec shows
/// `value: "(hidden)"`).
#[utoipa::path(get, path = "/v1/secrets", tag = "resources", responses((status = 200, description = "Secrets, values hidden", body = Page<answers::ResourceWithStatus<answers::SecretStatus>>)))]
pub(super) async fn list_secrets(
    State(state): State<AppState>,
) -> Result<Json<Page<answers::ResourceWithStatus<answers::SecretStatus>>>, ApiError> {
    let items = state
        .store
        .secrets()
        .await?
        .into_iter()
        .map(|secret| {
            let spec = secret_views::spec_value(secret_views::SecretSpecView::default());
            let view = ResourceView::new(Kind::Secret.as_str(), secret.name, None, spec);
            let status = answers::SecretStatus {
                created_at: secret.created_at,
                updated_at: secret.updated_at,
            };
            with_status(view, status)
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[utoipa::path(get, path = "/v1/concurrencylimits", tag = "resources", responses((status = 200, description = "Concurrency limits as applied", body = Page<ResourceView>)))]
pub(super) async fn list_concurrency_limits(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    resources(&state.store, Kind::ConcurrencyLimit).await
}

/// Notifications as applied, without their secrets.
#[utoipa::path(get, path = "/v1/notifications", tag = "events", responses((status = 200, description = "Notifications, secrets hidden", body = Page<ResourceView>)))]
pub(super) async fn list_notifications(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    let items = state
        .store
        .notifications()
        .await?
        .iter()
        .map(|(notification, _)| {
            ResourceView::new(
                Kind::Notification.as_str(),
                notification.name.clone(),
                None,
                secret_views::spec_value(secret_views::NotificationSpecView::from(notification)),
            )
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// The dead-letter list: notifications whose retries are spent.
#[utoipa::path(get, path = "/v1/dlq", tag = "events", responses((status = 200, description = "Notifications whose retries are spent", body = Page<answers::DeadLetterView>)))]
pub(super) async fn list_dead_letters(
    State(state): State<AppState>,
) -> Result<Json<Page<answers::DeadLetterView>>, ApiError> {
    let items = state
        .store
        .dead_notifications(MAX_PAGE_SIZE)
        .await?
        .into_iter()
        .map(|delivery| answers::DeadLetterView {
            event: serde_json::from_str(&delivery.body).unwrap_or(serde_json::Value::Null),
            event_id: delivery.event_id,
            notification: delivery.notification,
            attempts: delivery.attempts,
            last_error: delivery.last_error,
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Sends dead letters again (those of one notification, or all); their retries start over.
#[utoipa::path(post, path = "/v1/dlq/redrive", tag = "events", request_body(content = RedriveRequest, description = "One notification's dead letters, or all when empty"), responses((status = 200, description = "How many were queued again", body = answers::RedriveAnswer), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn redrive_dead_letters(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<answers::RedriveAnswer>, ApiError> {
    let request: RedriveRequest = if body.is_empty() {
        RedriveRequest::default()
    } else {
        parse_body(&body)?
    };
    let redriven = state
        .store
        .redrive_notifications(request.notification.as_deref(), now_millis())
        .await?;
    Ok(Json(answers::RedriveAnswer { redriven }))
}

/// Webhook triggers as applied, without their secrets.
#[utoipa::path(get, path = "/v1/webhooktriggers", tag = "events", responses((status = 200, description = "Webhook triggers, secrets hidden", body = Page<answers::ResourceWithStatus<answers::WebhookTriggerStatus>>)))]
pub(super) async fn list_webhook_triggers(
    State(state): State<AppState>,
) -> Result<Json<Page<answers::ResourceWithStatus<answers::WebhookTriggerStatus>>>, ApiError> {
    let items = state
        .store
        .webhook_triggers()
        .await?
        .iter()
        .map(|trigger| {
            let spec = secret_views::WebhookTriggerSpecView::from(trigger);
            let url = format!("/v1/hooks/{}", trigger.name);
            with_status(
                ResourceView::new(
                    Kind::WebhookTrigger.as_str(),
                    trigger.name.clone(),
                    None,
                    secret_views::spec_value(spec),
                ),
                answers::WebhookTriggerStatus { url },
            )
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Event rules as applied, each with its latest deliveries.
#[utoipa::path(get, path = "/v1/eventrules", tag = "events", responses((status = 200, description = "Event rules with their latest deliveries", body = Page<answers::ResourceWithStatus<answers::RuleStatus>>)))]
pub(super) async fn list_event_rules(
    State(state): State<AppState>,
) -> Result<Json<Page<answers::ResourceWithStatus<answers::RuleStatus>>>, ApiError> {
    let mut items = Vec::new();
    for (name, spec) in state.store.resource_specs(Kind::EventRule).await? {
        let recent_deliveries = state
            .store
            .rule_deliveries(&name, 10)
            .await?
            .into_iter()
            .map(
                |(event_id, outcome, job_id, reason)| answers::DeliveryView {
                    event_id,
                    outcome,
                    job_id,
                    reason,
                },
            )
            .collect();
        items.push(with_status(
            ResourceView::new(Kind::EventRule.as_str(), name, None, spec),
            answers::RuleStatus { recent_deliveries },
        ));
    }
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Schedules as applied, with when each fires next and what its last tick did.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", responses((status = 200, description = "Schedules with their next fire time and last tick", body = Page<answers::ResourceWithStatus<answers::ScheduleStatus>>)))]
pub(super) async fn list_schedules(
    State(state): State<AppState>,
) -> Result<Json<Page<answers::ResourceWithStatus<answers::ScheduleStatus>>>, ApiError> {
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
        let last_firing = match last {
            Some(firing) => {
                let job_status = match &firing.job_id {
                    Some(job_id) => state.store.job(job_id).await?.map(|job| job.status),
                    None => None,
                };
                Some(answers::LastFiring {
                    scheduled_time: chrono::DateTime::from_timestamp_millis(firing.scheduled_time)
                        .map(|t| t.with_timezone(&schedule.time_zone).to_rfc3339()),
                    outcome: firing.outcome.as_str().to_string(),
                    job_id: firing.job_id.map(|id| id.0),
                    job_status,
                    reason: firing.reason,
                })
            }
            None => None,
        };
        items.push(with_status(
            ResourceView::new(
                Kind::Schedule.as_str(),
                schedule.name.to_string(),
                None,
                stored.spec.clone(),
            ),
            answers::ScheduleStatus {
                next_fire_time: next.map(|t| t.with_timezone(&schedule.time_zone).to_rfc3339()),
                last_firing,
            },
        ));
    }
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Fires a schedule now, as a tick at this instant (subject to its overlap policy).
#[utoipa::path(post, path = "/v1/schedules/{name}/trigger", tag = "schedules", params(("name" = String, Path, description = "The schedule")), responses((status = 201, description = "The job it submitted", body = JobView), (status = 409, description = "Not now: `detail` says what blocks it", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn trigger_schedule(
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

#[utoipa::path(get, path = "/v1/jobdefinitions", tag = "resources", params(("name" = Option<String>, Query, description = "Only this definition's revisions")), responses((status = 200, description = "Job definition revisions, ACTIVE or INACTIVE", body = Page<ResourceView>), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn list_job_definitions(
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
            ResourceView {
                status: Some(if stored.active { "ACTIVE" } else { "INACTIVE" }.into()),
                ..ResourceView::new(
                    Kind::JobDefinition.as_str(),
                    definition.name.to_string(),
                    Some(definition.revision),
                    stored.spec,
                )
            }
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// A listed resource with the status its kind shows beside the spec.
fn with_status<S>(view: ResourceView, status: S) -> answers::ResourceWithStatus<S> {
    answers::ResourceWithStatus {
        api_version: view.api_version,
        kind: view.kind,
        metadata: view.metadata,
        spec: view.spec,
        status,
    }
}
