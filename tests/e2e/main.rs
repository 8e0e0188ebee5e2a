//! End-to-end tests: the real `batchctl` binary, a real server process, real jobs on the process
//! executor, SQLite and Postgres.

mod arrays;
mod auth;
mod chart;
mod console;
mod core_slice;
mod day2;
mod docker_executor;
mod events;
mod faults;
mod high_availability;
mod kubernetes;
mod lifecycle;
mod metrics;
mod multinode;
mod openapi;
mod process_executor;
mod schedules;
mod scheduling;
mod secrets;
mod security;
mod support;
