//! The functional core: job states and transitions, retry judgement, placement and attempt specs.
//! Pure functions of data and `now`; nothing here imports sqlx, axum or does I/O.

pub mod attempt;
pub mod auth;
pub mod endpoint_policy;
pub mod event_pattern;
pub mod events;
pub mod fair_share;
pub mod model;
pub mod placement;
pub mod request_guard;
pub mod retry;
pub mod schedule;
pub mod state_machine;
pub mod time_limits;
pub mod webhooks;
pub mod why;
