//! `batchctl-server`: the scheduler and its HTTP API, run by `batchctl server` (which hands over
//! to this program with `exec`) or directly, with the same options.
//!
//! The server is a program of its own so that the `batchctl` client stays small: every client
//! command is a process start, and loading the server's code (database, HTTP server, container
//! clients) with it made each start cost several times what the command itself did.

mod server;
mod server_args;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use server::{process_executor_setting, serve, ServeSettings};
use server_args::ServerArgs;

/// mimalloc rather than glibc's malloc: the dispatcher's threads allocate and free small values
/// by the million (rows read on one thread and dropped on another), which glibc serves slowly
/// (BENCHMARKS.md, "Allocator and SQLite's memory statistics").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "batchctl-server",
    version,
    about = "The batchctl scheduler and its HTTP API (`batchctl server`)"
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    /// The client's options, accepted where `batchctl server` passed them on, and unused.
    #[arg(long = "server", hide = true)]
    _client_server: Option<String>,
    #[arg(short = 'o', long = "output", hide = true)]
    _client_output: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(run(cli.server));
    // Dropping the runtime would wait for every blocking task, and a process attempt's `wait`
    // may block (on its shim's lock) until the attempt ends: a stopped server would linger,
    // holding its data directory, for as long as its longest job. Attempts outlive the server by
    // design and are adopted at its next start, so what still blocks is left behind.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let ServerArgs {
        listen,
        data_dir,
        database_url,
        kill_grace_seconds,
        tokens_file,
        event_retention_hours,
        job_retention,
        max_log_bytes_per_attempt,
        lease_ttl_seconds,
        replica_id,
        apply,
        poll_interval_seconds,
        notification_allow_cidr,
        enable_process_executor,
        process_user,
        secret_key_file,
        previous_secret_key_files,
    } = args;
    let keyring = match &secret_key_file {
        Some(path) => Some(std::sync::Arc::new(
            batchctl_scheduler::sealing::Keyring::load(path, &previous_secret_key_files)?,
        )),
        None => None,
    };
    let mut text = match &tokens_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the tokens file {}", path.display()))?,
        None => String::new(),
    };
    if let Ok(more) = std::env::var("BATCHCTL_TOKENS") {
        text.push('\n');
        text.push_str(&more);
    }
    let tokens = batchctl_scheduler::core::auth::Tokens::parse(&text)
        .map_err(|error| anyhow::anyhow!("API tokens: {error}"))?;
    let process_executor = process_executor_setting(
        enable_process_executor || (listen.ip().is_loopback() && tokens.is_empty()),
        process_user.as_deref(),
    )?;
    let settings = ServeSettings {
        kill_grace: Duration::from_secs(kill_grace_seconds),
        tokens,
        event_retention: Duration::from_secs(event_retention_hours * 3600),
        job_retention: batchctl_scheduler::core::lifecycle::Retention::uniform(job_retention),
        max_log_bytes_per_attempt,
        lease: batchctl_scheduler::leadership::LeaseSettings {
            holder: replica_id
                .unwrap_or_else(batchctl_scheduler::leadership::LeaseSettings::default_holder),
            ttl: Duration::from_secs(lease_ttl_seconds),
        },
        apply_files: apply,
        poll_interval: Duration::from_secs(poll_interval_seconds),
        notification_policy: batchctl_scheduler::core::endpoint_policy::EndpointPolicy::new(
            notification_allow_cidr,
        ),
        process_executor,
        keyring,
    };
    serve(listen, data_dir, database_url, settings).await
}
