//! The console's pages of schedules, event rules, notifications and events. They render what the
//! API's own list handlers answer (the same views, secrets already hidden), so the console never
//! shows more than `GET /v1/…` would.

use maud::{html, Markup};
use serde_json::Value;

use super::pages::{json_block, time, Abilities};
use crate::api::answers::{DeadLetterView, ResourceWithStatus, RuleStatus, ScheduleStatus};
use crate::api::views::ResourceView;

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn job_link(job_id: Option<&str>) -> Markup {
    match job_id {
        Some(id) => html! { a href={ "/console/jobs/" (id) } { (id) } },
        None => html! { "—" },
    }
}

pub fn schedules(items: &[ResourceWithStatus<ScheduleStatus>]) -> Markup {
    html! {
        h1 { "Schedules" }
        section id="schedules" data-live aria-label="Schedules" {
            @if items.is_empty() { p { "No schedules." } } @else {
                div class="scroll" { table {
                    thead { tr {
                        th scope="col" { "Schedule" } th scope="col" { "Expression" } th scope="col" { "State" }
                        th scope="col" { "Next fire time" } th scope="col" { "Last tick" } th scope="col" { "Outcome" }
                        th scope="col" { "Job" } th scope="col" { "Job status" }
                    } }
                    tbody { @for item in items {
                        @let spec = &item.spec;
                        @let last = item.status.last_firing.as_ref();
                        @let zone = if spec["timeZone"].is_string() { &spec["timeZone"] } else { &spec["scheduleExpressionTimezone"] };
                        tr data-schedule=(item.metadata.name) {
                            th scope="row" { (item.metadata.name) }
                            td { code { (text(&spec["scheduleExpression"])) } @if zone.is_string() { " (" (text(zone)) ")" } }
                            td { @if spec["state"].is_string() { (text(&spec["state"])) } @else { "ENABLED" } }
                            td { (item.status.next_fire_time.as_deref().unwrap_or("—")) }
                            td { (last.and_then(|l| l.scheduled_time.as_deref()).unwrap_or("—")) }
                            td {
                                (last.map_or("—", |l| l.outcome.as_str()))
                                @if let Some(reason) = last.and_then(|l| l.reason.as_deref()) { ": " span class="reason" { (reason) } }
                            }
                            td { (job_link(last.and_then(|l| l.job_id.as_deref()))) }
                            td { (last.and_then(|l| l.job_status).map_or("", |s| s.as_str())) }
                        }
                    } }
                } }
            }
        }
    }
}

pub fn rules(items: &[ResourceWithStatus<RuleStatus>]) -> Markup {
    html! {
        h1 { "Event rules" }
        section id="rules" data-live aria-label="Event rules" {
            @if items.is_empty() { p { "No event rules." } }
            @for item in items {
                @let name = &item.metadata.name;
                article aria-labelledby={ "rule-" (name) } {
                    h2 id={ "rule-" (name) } { (name) }
                    details { summary { "Pattern and target" } (json_block(&item.spec)) }
                    @if item.status.recent_deliveries.is_empty() { p { "No deliveries yet." } } @else {
                        div class="scroll" { table {
                            caption { "Recent deliveries" }
                            thead { tr { th scope="col" { "Event" } th scope="col" { "Outcome" } th scope="col" { "Job" } th scope="col" { "Reason" } } }
                            tbody { @for delivery in &item.status.recent_deliveries {
                                tr {
                                    td { code { (delivery.event_id) } }
                                    td { (delivery.outcome) }
                                    td { (job_link(delivery.job_id.as_deref())) }
                                    td class="reason" { (delivery.reason.as_deref().unwrap_or("")) }
                                }
                            } }
                        } }
                    }
                }
            }
        }
    }
}

pub fn notifications(
    items: &[ResourceView],
    dead_letters: &[DeadLetterView],
    abilities: Abilities,
) -> Markup {
    html! {
        h1 { "Notifications" }
        section id="notifications" data-live aria-label="Notifications" {
            @if items.is_empty() { p { "No notifications." } } @else {
                div class="scroll" { table {
                    thead { tr { th scope="col" { "Notification" } th scope="col" { "Endpoint" } th scope="col" { "Pattern" } } }
                    tbody { @for item in items {
                        tr {
                            th scope="row" { (item.metadata.name) }
                            td { code { (text(&item.spec["endpoint"])) } }
                            td { code { (text(&item.spec["eventPattern"])) } }
                        }
                    } }
                } }
            }
        }
        section id="dead-letters" data-live aria-labelledby="dlq-title" {
            h2 id="dlq-title" { "Dead letters" }
            @if dead_letters.is_empty() { p { "No dead letters: every notification was delivered or is still being retried." } } @else {
                @if abilities.admin {
                    div class="buttons" {
                        button type="button" data-action="/v1/dlq/redrive" data-body="{}"
                            data-confirm="Send every dead letter again?" { "Redrive all" }
                    }
                }
                div class="scroll" { table {
                    thead { tr {
                        th scope="col" { "Event" } th scope="col" { "Notification" } th scope="col" { "Attempts" }
                        th scope="col" { "Last error" } @if abilities.admin { th scope="col" { "Redrive" } }
                    } }
                    tbody { @for letter in dead_letters {
                        tr {
                            td { code { (letter.event_id) } }
                            td { (letter.notification) }
                            td { (letter.attempts) }
                            td class="reason" { (letter.last_error.as_deref().unwrap_or("")) }
                            @if abilities.admin {
                                td { button type="button" data-action="/v1/dlq/redrive"
                                    data-body=(redrive_body(&letter.notification))
                                    data-confirm={ "Send the dead letters of " (letter.notification) " again?" } { "Redrive " (letter.notification) } }
                            }
                        }
                    } }
                } }
            }
        }
    }
}

/// Recent events, newest first; the script prepends what the live stream brings.
pub fn events(recent: &[(i64, Value)]) -> Markup {
    html! {
        h1 { "Events" }
        p class="hint" { "Job state changes, schedule ticks, audit records and events put through the API, newest first; new ones appear as they happen." }
        ol id="event-log" reversed data-stream="/v1/events/stream" aria-live="polite" {
            @for (seq, envelope) in recent { (event_item(*seq, envelope)) }
        }
    }
}

fn event_item(seq: i64, envelope: &Value) -> Markup {
    let detail = &envelope["detail"];
    html! {
        li data-seq=(seq) {
            (time(chrono::DateTime::parse_from_rfc3339(envelope["time"].as_str().unwrap_or_default()).ok().map(|t| t.timestamp_millis())))
            " " strong { (text(&envelope["detail-type"])) } " from " code { (text(&envelope["source"])) }
            @if let Some(job_id) = detail["jobId"].as_str() { " " (job_link(Some(job_id))) }
            @if detail["status"].is_string() { " → " (text(&detail["status"])) }
        }
    }
}

/// The body of a redrive button: the API's own request type.
fn redrive_body(notification: &str) -> String {
    serde_json::to_string(&crate::api::requests::RedriveRequest {
        notification: Some(notification.to_string()),
    })
    .expect("a request of strings serialises")
}
