//! Events as EventBridge shapes them (`id`, `source`, `detail-type`, `time`, `detail`), and the
//! input transformer that carries values from an event into the job a rule submits. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// The most entries one `POST /v1/events` may carry (EventBridge's PutEvents takes 10).
pub const MAX_ENTRIES: usize = 100;
/// The most bytes one entry may have, as EventBridge.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub detail_type: String,
    pub time: DateTime<Utc>,
    pub detail: Map<String, Value>,
    /// `resources`, as given (EventBridge's list of ARNs); empty when absent.
    pub resources: Vec<Value>,
}

impl Event {
    /// The envelope rules match against and targets read from.
    pub fn envelope(&self) -> Value {
        json!({
            "version": "0",
            "id": self.id,
            "source": self.source,
            "detail-type": self.detail_type,
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "resources": self.resources,
            "detail": self.detail,
        })
    }
}

/// Events made from webhook deliveries have ids `hook-<trigger>-<delivery id>`; events put
/// through the API may not take such an id, so no caller can make a genuine delivery look like
/// a repeat (and be dropped).
pub const WEBHOOK_EVENT_ID_PREFIX: &str = "hook-";

/// Checks one entry of a put: `source`, `detail-type` and a `detail` object are required; `id`
/// (else `new_id`) and `time` (RFC 3339, else `now`) are optional. The error says what to fix.
pub fn event_from_entry(entry: &Value, new_id: &str, now: DateTime<Utc>) -> Result<Event, String> {
    let Some(object) = entry.as_object() else {
        return Err("an entry is a JSON object with source, detail-type and detail".into());
    };
    let size = entry.to_string().len();
    if size > MAX_ENTRY_BYTES {
        return Err(format!(
            "is {size} bytes; an entry may have {MAX_ENTRY_BYTES} at most"
        ));
    }
    for key in object.keys() {
        if ![
            "id",
            "source",
            "detail-type",
            "time",
            "detail",
            "resources",
            "version",
            "account",
            "region",
        ]
        .contains(&key.as_str())
        {
            return Err(format!(
                "unknown field {key:?}; an entry has id, source, detail-type, time, resources and detail"
            ));
        }
    }
    let text = |field: &str| -> Result<Option<String>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if !text.trim().is_empty() => Ok(Some(text.clone())),
            Some(_) => Err(format!("{field} must be a non-empty string")),
        }
    };
    let source = text("source")?.ok_or("source is required: say where the event comes from")?;
    if crate::audit::is_reserved_source(&source) {
        return Err(format!(
            "source {source:?} is reserved for batchctl's own events (its job and audit events); use another"
        ));
    }
    let detail_type =
        text("detail-type")?.ok_or("detail-type is required: say what kind of event it is")?;
    let id = text("id")?.unwrap_or_else(|| new_id.to_string());
    if id.starts_with(WEBHOOK_EVENT_ID_PREFIX) {
        return Err(format!(
            "id {id:?} starts with {WEBHOOK_EVENT_ID_PREFIX:?}, which is reserved for webhook deliveries; choose another id"
        ));
    }
    let time = match text("time")? {
        Some(time) => DateTime::parse_from_rfc3339(&time)
            .map_err(|error| format!("time {time:?} is not RFC 3339: {error}"))?
            .with_timezone(&Utc),
        None => now,
    };
    let detail = match object.get("detail") {
        Some(Value::Object(detail)) => detail.clone(),
        None => return Err("detail is required: a JSON object (it may be empty)".into()),
        Some(_) => return Err("detail must be a JSON object".into()),
    };
    let resources = match object.get("resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err("resources must be a list".into()),
    };
    Ok(Event {
        id,
        source,
        detail_type,
        time,
        detail,
        resources,
    })
}

/// Reads a JSON path of the form `$.a.b[0].c` from a value.
pub fn read_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix('$')?;
    let mut current = value;
    let mut chars = rest;
    while !chars.is_empty() {
        if let Some(after) = chars.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            current = current.get(&after[..end])?;
            chars = &after[end..];
        } else if let Some(after) = chars.strip_prefix('[') {
            let end = after.find(']')?;
            let index: usize = after[..end].parse().ok()?;
            current = current.get(index)?;
            chars = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(current)
}

/// Checks an `inputPathsMap`: names are plain words, paths start with `$`.
pub fn check_input_paths(paths: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    for (name, path) in paths {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !plain {
            return Err((
                name.clone(),
                "is not a plain name (letters, digits, _ - .)".into(),
            ));
        }
        if !(path == "$" || path.starts_with("$.") || path.starts_with("$[")) {
            return Err((
                name.clone(),
                format!("{path:?} is not a JSON path like $.detail.key"),
            ));
        }
    }
    Ok(())
}

/// The values an event gives an `inputPathsMap`: strings as they are, anything else as JSON
/// text; a path the event does not have gives an empty string, as EventBridge does.
pub fn input_values(
    paths: &BTreeMap<String, String>,
    envelope: &Value,
) -> BTreeMap<String, String> {
    paths
        .iter()
        .map(|(name, path)| {
            let value = match read_path(envelope, path) {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (name.clone(), value)
        })
        .collect()
}

/// Replaces each `<name>` of `values` in `text`.
pub fn fill_placeholders(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut filled = text.to_string();
    for (name, value) in values {
        filled = filled.replace(&format!("<{name}>"), value);
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn entries_are_checked_and_completed() {
        let event = event_from_entry(
            &json!({"source": "shop", "detail-type": "Order Placed", "detail": {"order": 7}}),
            "generated",
            now(),
        )
        .unwrap();
        assert_eq!(event.id, "generated");
        assert_eq!(event.time, now());
        assert_eq!(
            event.envelope(),
            json!({"version": "0", "id": "generated", "source": "shop", "detail-type": "Order Placed",
                   "time": "2026-11-21T10:00:00Z", "resources": [], "detail": {"order": 7}})
        );
        let cases = [
            (
                json!({"detail-type": "x", "detail": {}}),
                "source is required",
            ),
            (
                json!({"source": "s", "detail": {}}),
                "detail-type is required",
            ),
            (
                json!({"source": "s", "detail-type": "t"}),
                "detail is required",
            ),
            (
                json!({"source": "s", "detail-type": "t", "detail": "{}"}),
                "detail must be a JSON object",
            ),
            (
                json!({"source": "s", "detail-type": "t", "detail": {}, "time": "yesterday"}),
                "time \"yesterday\" is not RFC 3339",
            ),
            (
                json!({"source": "s", "detail-type": "t", "detail": {}, "colour": "red"}),
                "unknown field \"colour\"",
            ),
            (json!("event"), "an entry is a JSON object"),
            (
                json!({"source": "batchctl", "detail-type": "t", "detail": {}}),
                "is reserved for batchctl's own events",
            ),
        ];
        for (entry, expected) in cases {
            let error = event_from_entry(&entry, "id", now()).unwrap_err();
            assert!(error.contains(expected), "{entry}: {error}");
        }
        let big = json!({"source": "s", "detail-type": "t", "detail": {"blob": "x".repeat(MAX_ENTRY_BYTES)}});
        assert!(event_from_entry(&big, "id", now())
            .unwrap_err()
            .contains("bytes"));
    }

    #[test]
    fn input_paths_read_the_event() {
        let envelope = json!({"source": "s3", "detail": {"bucket": {"name": "in"}, "keys": ["a.csv", "b.csv"], "size": 42, "none": null}});
        let paths: BTreeMap<String, String> = [
            ("bucket", "$.detail.bucket.name"),
            ("first", "$.detail.keys[0]"),
            ("size", "$.detail.size"),
            ("keys", "$.detail.keys"),
            ("missing", "$.detail.nope"),
            ("none", "$.detail.none"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let values = input_values(&paths, &envelope);
        assert_eq!(values["bucket"], "in");
        assert_eq!(values["first"], "a.csv");
        assert_eq!(values["size"], "42");
        assert_eq!(values["keys"], r#"["a.csv","b.csv"]"#);
        assert_eq!(values["missing"], "");
        assert_eq!(values["none"], "");
        assert_eq!(
            fill_placeholders("s3://<bucket>/<first> (<size> bytes) <other>", &values),
            "s3://in/a.csv (42 bytes) <other>"
        );
        let bad: BTreeMap<String, String> = [("x".to_string(), "detail.x".to_string())].into();
        assert!(check_input_paths(&bad).is_err());
    }
}

/// A validated `kind: EventRule`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRule {
    pub name: String,
    pub pattern: crate::event_pattern::EventPattern,
    pub enabled: bool,
    /// `inputTransformer.inputPathsMap`: `<name>` in the target takes the value at the path.
    pub input_paths: BTreeMap<String, String>,
    /// `maxChainDepth`: how many rule deliveries in a row may lead to a job (`chain_step`).
    pub max_chain_depth: u32,
}

/// A rule's `maxChainDepth` when it names none: AWS stops a recursive Lambda loop after 16 calls.
pub const DEFAULT_MAX_CHAIN_DEPTH: u32 = 16;
/// The most a rule may allow.
pub const MAX_CHAIN_DEPTH: u32 = 1000;

/// The detail field of a Job State Change event that says how many rule deliveries led to the
/// job (absent when none did).
pub const CHAIN_DEPTH_FIELD: &str = "batchctlChainDepth";
/// The detail-type of the event a rule puts on the bus when it cuts a loop.
pub const RULE_LOOP_DETECTED: &str = "Rule Loop Detected";

/// What a rule may do with an event, given the chain of deliveries that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStep {
    /// Submit the job, `depth` deliveries deep.
    Submit { depth: u32 },
    /// Refuse: the chain is deeper than the rule allows. `announce` is false when the event is
    /// itself a loop announcement, so cutting a loop never starts another.
    Cut { depth: u32, announce: bool },
}

/// The step a rule's delivery of `envelope` would be: one deeper than the job whose state
/// change the event is (0 for events from anywhere else), cut past `max_chain_depth`. Pure.
pub fn chain_step(envelope: &serde_json::Value, max_chain_depth: u32) -> ChainStep {
    let ours = envelope["source"] == JOB_EVENT_SOURCE;
    let depth_before = if ours {
        envelope["detail"][CHAIN_DEPTH_FIELD]
            .as_u64()
            .map_or(0, |depth| depth.min(u64::from(u32::MAX)) as u32)
    } else {
        0
    };
    let depth = depth_before.saturating_add(1);
    if depth <= max_chain_depth {
        ChainStep::Submit { depth }
    } else {
        ChainStep::Cut {
            depth,
            announce: !(ours && envelope["detail-type"] == RULE_LOOP_DETECTED),
        }
    }
}

/// The event that says a rule cut a loop; it carries the depth, so a rule matching it is cut too.
pub fn rule_loop_detected(
    rule: &str,
    event_id: &str,
    depth: u32,
    max_chain_depth: u32,
    id: &str,
    time: DateTime<Utc>,
) -> Event {
    let mut detail = Map::new();
    detail.insert("rule".into(), json!(rule));
    detail.insert("eventId".into(), json!(event_id));
    detail.insert(CHAIN_DEPTH_FIELD.into(), json!(depth));
    detail.insert("maxChainDepth".into(), json!(max_chain_depth));
    Event {
        id: id.to_string(),
        source: JOB_EVENT_SOURCE.into(),
        detail_type: RULE_LOOP_DETECTED.into(),
        time,
        detail,
        resources: Vec::new(),
    }
}

/// The source and detail-type of the events batchctl emits for its own jobs.
pub const JOB_EVENT_SOURCE: &str = "batchctl";
pub const JOB_STATE_CHANGE: &str = "Job State Change";

/// What changed, for a Job State Change event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobChange {
    pub job_id: String,
    pub job_name: String,
    pub job_queue: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// How many rule deliveries led to the job (0: none).
    pub chain_depth: u32,
}

/// The Job State Change event of one transition, as AWS Batch sends to EventBridge.
pub fn job_state_change(change: &JobChange, id: &str, time: DateTime<Utc>) -> Event {
    let mut detail = Map::new();
    detail.insert("jobId".into(), json!(change.job_id));
    detail.insert("jobName".into(), json!(change.job_name));
    detail.insert("jobQueue".into(), json!(change.job_queue));
    detail.insert("status".into(), json!(change.status));
    if let Some(reason) = &change.status_reason {
        detail.insert("statusReason".into(), json!(reason));
    }
    if let Some(code) = change.exit_code {
        detail.insert("exitCode".into(), json!(code));
    }
    if change.chain_depth > 0 {
        detail.insert(CHAIN_DEPTH_FIELD.into(), json!(change.chain_depth));
    }
    Event {
        id: id.to_string(),
        source: JOB_EVENT_SOURCE.into(),
        detail_type: JOB_STATE_CHANGE.into(),
        time,
        detail,
        resources: Vec::new(),
    }
}

/// How long a failed notification waits before its next try: 1 s, doubling, at most 5 minutes.
pub fn notification_backoff(failed_attempts: u32) -> std::time::Duration {
    let seconds = 1u64 << failed_attempts.saturating_sub(1).min(16);
    std::time::Duration::from_secs(seconds.min(300))
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn a_chain_of_rule_deliveries_is_cut_past_its_depth_and_cutting_starts_none() {
        let job_event = |depth: Option<u32>| {
            let mut detail = json!({"jobId": "j", "status": "SUCCEEDED"});
            if let Some(depth) = depth {
                detail[CHAIN_DEPTH_FIELD] = json!(depth);
            }
            json!({"source": "batchctl", "detail-type": "Job State Change", "detail": detail})
        };
        assert_eq!(
            chain_step(&job_event(None), 3),
            ChainStep::Submit { depth: 1 }
        );
        assert_eq!(
            chain_step(&job_event(Some(2)), 3),
            ChainStep::Submit { depth: 3 }
        );
        assert_eq!(
            chain_step(&job_event(Some(3)), 3),
            ChainStep::Cut {
                depth: 4,
                announce: true
            }
        );
        // Someone else's event starts a chain, whatever its detail says.
        let foreign = json!({"source": "shop", "detail-type": "Signup",
            "detail": {CHAIN_DEPTH_FIELD: 99}});
        assert_eq!(chain_step(&foreign, 3), ChainStep::Submit { depth: 1 });
        // The announcement carries the depth: a rule matching it is cut, silently.
        let announced = rule_loop_detected("r", "e", 4, 3, "id", Utc::now());
        let envelope = announced.envelope();
        assert_eq!(
            chain_step(&envelope, 3),
            ChainStep::Cut {
                depth: 5,
                announce: false
            }
        );
        // A job's event says its depth only when it has one.
        let change = JobChange {
            job_id: "j".into(),
            job_name: "n".into(),
            job_queue: "q".into(),
            status: "SUCCEEDED".into(),
            status_reason: None,
            exit_code: None,
            chain_depth: 0,
        };
        let plain = job_state_change(&change, "1", Utc::now());
        assert!(plain.detail.get(CHAIN_DEPTH_FIELD).is_none());
        let deep = job_state_change(
            &JobChange {
                chain_depth: 2,
                ..change
            },
            "2",
            Utc::now(),
        );
        assert_eq!(deep.detail[CHAIN_DEPTH_FIELD], 2);
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn notification_backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 4, 9, 10, 40]
            .into_iter()
            .map(|n| notification_backoff(n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 256, 300, 300]);
    }
}
