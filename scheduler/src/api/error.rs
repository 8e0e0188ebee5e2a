//! Errors as RFC 9457 problem details (`application/problem+json`). The `detail` tells a person what
//! to do; internal errors are logged and reported without their internals.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::control::ControlError;
use crate::manifest::FieldError;
use crate::store::{ApplyError, StoreError};
use crate::submitter::SubmitError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    /// One entry per offending field, for input errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Serialize)]
struct Problem<'a> {
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
        }
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            title: "Not found".into(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            title: "Conflict".into(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            title: "Unauthorized".into(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            title: "Forbidden".into(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Service unavailable".into(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    fn internal(error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal error".into(),
            detail: "the server could not complete the request; see its log, then try again".into(),
            errors: Vec::new(),
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
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        if error.is_retryable() {
            ApiError::unavailable(format!("the database is unavailable ({error}); try again"))
        } else {
            ApiError::internal(&error)
        }
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
            SubmitError::Store(error) => match std::sync::Arc::try_unwrap(error) {
                Ok(error) => error.into(),
                Err(shared) => ApiError::internal(&shared),
            },
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
