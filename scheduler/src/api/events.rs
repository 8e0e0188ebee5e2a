//! The event bus: put, list and stream events; signed webhook deliveries.

use super::*;

/// PutEvents: `{"entries": [event, …]}` → per entry its `eventId` or an `errorCode` and
/// `errorMessage`. Accepted entries are committed before the answer; an id already on the bus
/// is accepted again without being stored twice.
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = PutEventsRequest, responses((status = 200, description = "Per entry its id or why it was refused", body = answers::PutEventsAnswer), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_events(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use crate::core::events::{event_from_entry, MAX_ENTRIES};
    let request: PutEventsRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::invalid(FieldError::new(
            "body",
            format!("is not a PutEvents request: {error}"),
        ))
    })?;
    let Some(entries) = request.entries else {
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
    let entries: Vec<answers::PutEventsEntry> = checked
        .iter()
        .map(|checked| match checked {
            Ok(event) => answers::PutEventsEntry::Accepted {
                event_id: event.id.clone(),
            },
            Err(message) => answers::PutEventsEntry::Refused {
                error_code: "InvalidEvent".into(),
                error_message: message.clone(),
            },
        })
        .collect();
    let failed_entry_count = checked.iter().filter(|c| c.is_err()).count() as u64;
    Ok(Json(answers::PutEventsAnswer {
        failed_entry_count,
        entries,
    })
    .into_response())
}

/// Server-sent events: each event on the bus from now on (or after `after`, or after the
/// `Last-Event-ID` a reconnecting client sends), as `id: seq` and `data: envelope`, filtered by an
/// optional EventBridge `pattern` (JSON). Ends at server shutdown.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(("pattern" = Option<String>, Query, description = "An EventBridge pattern, as JSON"), ("after" = Option<i64>, Query, description = "Start after this sequence number (or Last-Event-ID)")), responses((status = 200, description = "Server-sent events: `id: seq`, `data: envelope`", body = String, content_type = "text/event-stream"), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Too many open streams for this caller or server", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn stream_events(
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
#[utoipa::path(get, path = "/v1/events", tag = "events", params(("after" = Option<i64>, Query, description = "Events after this sequence number")), responses((status = 200, description = "Events, oldest first", body = answers::EventPage), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn list_events(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<answers::EventPage>, ApiError> {
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
    Ok(Json(answers::EventPage {
        items: events
            .into_iter()
            .map(|event| answers::BusEventView {
                seq: event.seq,
                event: event.envelope,
            })
            .collect(),
        next_cursor: next.map(|seq| seq.to_string()),
    }))
}

/// A third party's delivery to a webhook trigger: its signature is checked (401, nothing stored,
/// when it does not hold), and its JSON body becomes an event's detail. A delivery id seen before
/// is answered 200 and not stored again.
#[utoipa::path(post, path = "/v1/hooks/{name}", tag = "events", params(("name" = String, Path, description = "The webhook trigger")), request_body(content = Object, description = "What the third party sends, signed"), responses((status = 202, description = "Taken", body = answers::HookAnswer), (status = 200, description = "Seen before", body = answers::HookAnswer), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 401, description = "The signature does not hold", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn receive_hook(
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
        let secrets: Vec<String> = trigger
            .secrets
            .iter()
            .map(|secret| secret.expose().to_string())
            .collect();
        let (profile, body) = (trigger.profile, body.clone());
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
        Json(answers::HookAnswer {
            event_id: event.id,
            duplicate,
        }),
    )
        .into_response())
}
