//! batchctl's scheduler: the model and state machine (`core`), the wire forms (`manifest`), durable
//! storage (`store`), the dispatcher that runs attempts on executors (`dispatcher`) and the HTTP API
//! (`api`). See ARCHITECTURE.md at the repository root for the map.

pub mod api;
pub mod aws_compat;
pub mod aws_eks;
pub mod control;
pub use batchctl_core as core;
pub mod dispatcher;
pub mod leadership;
pub mod manifest;
pub mod metrics;
pub mod notifier;
pub mod outage;
pub mod peers;
pub mod retention;
pub mod rules;
pub mod schedules;
pub mod sealing;
pub mod server;
pub mod store;
pub mod submission;
pub mod submitter;
pub mod upgrade;
