//! Errors as RFC 9457 problem details (`application/problem+json`). The `detail` tells a person what
//! to do; internal errors are logged and reported without their internals.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::control::ControlError;
use crate::manifest::FieldError;
use crate::store::{ApplyError, DeleteError, StoreError};
use crate::submitter::SubmitError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    /// One entry per offending field, for input errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which trying again makes sense (`Retry-After`), for conditions that pass.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

/// Where the server keeps its data, for errors that must name it (a full disk). Set once by the
/// server at start; a process without one names no place.
static STORAGE_LOCATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names where this server keeps its data (the data directory, or "the Postgres database").
pub fn set_storage_location(location: String) {
    let _ = STORAGE_LOCATION.set(location);
}

/// How long a client should wait before retrying while the database is away or full.
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u32 = 2;
pub const STORAGE_FULL_RETRY_AFTER_SECONDS: u32 = 30;

/// An error's body: RFC 9457 problem details (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    problem_type: &'static str,
    status: u16,
    #[serde(flatten)]
    error: &'a ApiError,
}

impl ApiError {
    pub fn invalid(error: FieldError) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            title: "Invalid request".into(),
            detail: error.to_string(),
            errors: vec![error],
            retry_after: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            title: "Not found".into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            title: "Conflict".into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            title: "Unauthorized".into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            title: "Forbidden".into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Service unavailable".into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub(crate) fn internal(error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal error".into(),
            detail: "the server could not complete the request; see its log, then try again".into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// A store failure as the client should see it: a database that is away is 503 and a full
    /// disk 507, both with `Retry-After` (what was not written can be sent again); anything else
    /// is a bug, 500.
    pub fn from_store(error: &StoreError) -> ApiError {
        match error {
            StoreError::StorageFull(_) => {
                tracing::warn!(%error, "a write failed: no space left for the database");
                let place = STORAGE_LOCATION
                    .get()
                    .map_or("the database's disk".to_string(), Clone::clone);
                ApiError {
                    status: StatusCode::INSUFFICIENT_STORAGE,
                    title: "Insufficient storage".into(),
                    detail: format!(
                        "{place} is full: nothing of this request was written; free space there, then send it again"
                    ),
                    errors: Vec::new(),
                    retry_after: Some(STORAGE_FULL_RETRY_AFTER_SECONDS),
                }
            }
            StoreError::Unavailable(_) => {
                tracing::warn!(%error, "a request failed: the database is unavailable");
                ApiError {
                    retry_after: Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
                    ..ApiError::unavailable(
                        "the database is unavailable for now (restarting or unreachable); send the request again shortly",
                    )
                }
            }
            StoreError::Database(_)
            | StoreError::Migration(_)
            | StoreError::Corrupt { .. }
            | StoreError::Fenced { .. } => ApiError::internal(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            problem_type: "about:blank",
            status: self.status.as_u16(),
            error: &self,
        };
        let body = serde_json::to_vec(&body).expect("problems serialize");
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::from_store(&error)
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> ApiError {
        match error {
            ApplyError::Invalid { index, error } => {
                ApiError::invalid(error.within(&format!("documents[{index}]")))
            }
            ApplyError::Store(error) => error.into(),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> ApiError {
        match error {
            SubmitError::ShuttingDown => ApiError::unavailable(error.to_string()),
            SubmitError::Store(error) => ApiError::from_store(&error),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> ApiError {
        match error {
            ControlError::NotFound(_) => ApiError::not_found(error.to_string()),
            ControlError::AlreadyFinished { .. }
            | ControlError::AlreadyStarted { .. }
            | ControlError::Contended(_) => ApiError::conflict(error.to_string()),
            ControlError::Store(error) => error.into(),
        }
    }
}

impl From<DeleteError> for ApiError {
    fn from(error: DeleteError) -> ApiError {
        match error {
            DeleteError::NotFound(detail) => ApiError::not_found(detail),
            DeleteError::Refused(refusal) => ApiError::conflict(refusal.to_string()),
            DeleteError::Store(error) => error.into(),
        }
    }
}
