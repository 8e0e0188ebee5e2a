//! Audit events: every change of a resource or of a job's wait made through the API (apply,
//! update, delete, deregister, suspend, resume) becomes an event on the bus, with the scope of the
//! token that made it, so rules and notifications can act on it. Pure: the API says who, the
//! store writes the event in the change's own transaction.
//!
//! The source is reserved: events put through the API or a webhook cannot claim it.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::auth::Scope;
use crate::events::Event;

/// The source of audit events.
pub const AUDIT_SOURCE: &str = "batchctl.audit";
/// The detail-types: a resource applied, updated or deleted; a job suspended, resumed,
/// reprioritised or deleted.
pub const RESOURCE_CHANGE: &str = "Resource Change";
pub const JOB_CHANGE: &str = "Job Change";

/// Whether a source is batchctl's own (its job events, its audit events): no one else may use it.
pub fn is_reserved_source(source: &str) -> bool {
    source == crate::events::JOB_EVENT_SOURCE || source.starts_with("batchctl.")
}

/// Who made a change: a request with a token of this scope, a request to an open server (no
/// tokens), or the server itself (a schedule deleting itself after its last tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Token(Scope),
    Open,
    Server,
}

impl Caller {
    fn scope_name(self) -> &'static str {
        match self {
            Caller::Token(scope) => scope.as_str(),
            Caller::Open => "open",
            Caller::Server => "server",
        }
    }
}

/// One change, as its audit event's `detail` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `created`, `configured`, `deleted`, `deregistered`; for jobs `suspended`, `resumed`,
    /// `reprioritized`, `deleted`.
    pub action: String,
    /// `JobQueue`, `ComputeEnvironment`, …, or `Job`.
    pub kind: String,
    /// The resource's name, or the job's id.
    pub name: String,
    pub revision: Option<u32>,
    /// What else the change set (a job's new scheduling priority).
    pub extra: Map<String, Value>,
}

/// The audit event of `change`, made by `caller`.
pub fn audit_event(id: String, change: &Change, caller: Caller, now: DateTime<Utc>) -> Event {
    let mut detail = Map::new();
    detail.insert("action".into(), json!(change.action));
    detail.insert("kind".into(), json!(change.kind));
    detail.insert("name".into(), json!(change.name));
    if let Some(revision) = change.revision {
        detail.insert("revision".into(), json!(revision));
    }
    detail.insert("scope".into(), json!(caller.scope_name()));
    detail.extend(change.extra.clone());
    Event {
        id,
        source: AUDIT_SOURCE.into(),
        detail_type: if change.kind == "Job" {
            JOB_CHANGE
        } else {
            RESOURCE_CHANGE
        }
        .into(),
        time: now,
        detail,
        resources: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_event_names_the_change_and_the_scope_that_made_it() {
        let change = Change {
            action: "deleted".into(),
            kind: "JobQueue".into(),
            name: "q".into(),
            revision: None,
            extra: Map::new(),
        };
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = audit_event("e1".into(), &change, Caller::Token(Scope::Admin), now);
        let envelope = event.envelope();
        assert_eq!(envelope["source"], "batchctl.audit");
        assert_eq!(envelope["detail-type"], "Resource Change");
        assert_eq!(
            envelope["detail"],
            json!({"action": "deleted", "kind": "JobQueue", "name": "q", "scope": "admin"})
        );
        let job = Change {
            action: "suspended".into(),
            kind: "Job".into(),
            ..change
        };
        let event = audit_event("e2".into(), &job, Caller::Open, now);
        assert_eq!(event.detail_type, "Job Change");
        assert_eq!(event.detail["scope"], "open");
    }

    #[test]
    fn batchctl_sources_are_reserved() {
        assert!(is_reserved_source("batchctl"));
        assert!(is_reserved_source("batchctl.audit"));
        assert!(!is_reserved_source("batchctl-users"));
        assert!(!is_reserved_source("uploads"));
    }
}
