//! `batchctl-core`, the functional core: the model, job states and transitions, retry judgement,
//! placement, fair share, schedules, event patterns, `why`, time limits, webhook signatures, and
//! the executor contract's data types. Pure functions of data and `now`.
//!
//! The compiler keeps it so: this crate's normal dependencies are data crates only (serde,
//! chrono, chrono-tz, thiserror, hashing, ipnet), so nothing here can reach sqlx, tokio, axum,
//! hyper, reqwest, bollard, kube or nix. The scheduler re-exports it as `batchctl_scheduler::core`.

pub mod array;
pub mod attempt;
pub mod audit;
pub mod auth;
pub mod concurrency;
pub mod consumable;
pub mod contract;
pub mod dependencies;
pub mod endpoint_policy;
pub mod estimate;
pub mod event_pattern;
pub mod events;
pub mod fair_share;
pub mod gpus;
pub mod lifecycle;
pub mod linux;
pub mod model;
pub mod multinode;
pub mod output_limit;
pub mod placement;
pub mod pod;
pub mod reconcile;
pub mod request_guard;
pub mod resource;
pub mod retry;
pub mod retry_policy;
pub mod schedule;
pub mod secret;
pub mod state_machine;
pub mod stop;
pub mod storage;
pub mod tags;
pub mod time_limits;
pub mod webhooks;
pub mod why;
