//! Applied resources: apply, and the lists of environments, queues, definitions, schedules,
//! rules, webhook triggers and notifications (secrets hidden); dead letters and their redrive.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyRequest {
    documents: Vec<serde_json::Value>,
}

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
    let Some((_, mut spec)) = state
        .store
        .resource_specs(kind)
        .await?
        .into_iter()
        .find(|(stored, _)| *stored == name)
    else {
        return Err(ApiError::not_found(format!(
            "{} \"{name}\" does not exist; see `batchctl get {}`",
            kind.as_str(),
            kind.plural()
        )));
    };
    merge_patch(&mut spec, &patch);
    let document = serde_json::json!({
        "apiVersion": manifest::API_VERSION,
        "kind": kind.as_str(),
        "metadata": {"name": name},
        "spec": spec,
    });
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
    let applied = state
        .store
        .apply_by(&valid, now_millis(), Some(caller))
        .await?;
    state.dispatcher.notify_resources_changed();
    state.schedules.handle().notify_changed();
    state.store.refresh_job_event_interest().await?;
    state.rules.notify();
    Ok(Json(serde_json::json!({ "applied": applied, "warnings": warnings })).into_response())
}

/// `DELETE /v1/{collection}/{name}`: deletes a resource, or deregisters a job definition (all
/// its ACTIVE revisions, or the one named `NAME:REVISION`). 409 when AWS Batch's rules say it may
/// not go yet, saying what blocks it.
pub(super) async fn delete_resource(
    state: AppState,
    caller: Caller,
    kind: Kind,
    name: String,
) -> Result<Json<serde_json::Value>, ApiError> {
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
        Kind::ComputeEnvironment | Kind::JobQueue | Kind::JobDefinition => {
            state.dispatcher.notify_resources_changed();
        }
        Kind::Schedule => state.schedules.handle().notify_changed(),
        Kind::EventRule => {
            state.store.refresh_job_event_interest().await?;
            state.rules.notify();
        }
        Kind::WebhookTrigger | Kind::Notification => {}
    }
    Ok(Json(serde_json::json!({ "deleted": deleted })))
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

pub(super) async fn list_compute_environments(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    resources(&state.store, Kind::ComputeEnvironment).await
}

pub(super) async fn list_job_queues(
    State(state): State<AppState>,
) -> Result<Json<Page<ResourceView>>, ApiError> {
    resources(&state.store, Kind::JobQueue).await
}

/// Notifications as applied, without their secrets.
pub(super) async fn list_notifications(
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
pub(super) async fn list_dead_letters(
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
pub(super) struct RedriveRequest {
    notification: Option<String>,
}

/// Sends dead letters again (those of one notification, or all); their retries start over.
pub(super) async fn redrive_dead_letters(
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
pub(super) async fn list_webhook_triggers(
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
pub(super) async fn list_event_rules(
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
pub(super) async fn list_schedules(
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
