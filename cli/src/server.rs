//! `batchctl server`: its settings, logging, and the run until SIGTERM or Ctrl-C.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// The server's settings from its command line, beyond where it listens and stores.
pub(crate) struct ServeSettings {
    pub(crate) kill_grace: Duration,
    pub(crate) tokens: batchctl_scheduler::core::auth::Tokens,
    pub(crate) event_retention: Duration,
    pub(crate) job_retention: batchctl_scheduler::core::lifecycle::Retention,
    pub(crate) max_log_bytes_per_attempt: u64,
    pub(crate) lease: batchctl_scheduler::leadership::LeaseSettings,
    pub(crate) apply_files: Vec<PathBuf>,
    pub(crate) poll_interval: Duration,
    pub(crate) notification_policy: batchctl_scheduler::core::endpoint_policy::EndpointPolicy,
    pub(crate) process_executor: batchctl_scheduler::server::ProcessExecutorSetting,
    pub(crate) keyring: Option<std::sync::Arc<batchctl_scheduler::sealing::Keyring>>,
}

/// The process executor's setting from the command line: off unless `enabled`; its work runs as
/// `user`, or as `nobody` when the server runs as root.
pub(crate) fn process_executor_setting(
    enabled: bool,
    user: Option<&str>,
) -> anyhow::Result<batchctl_scheduler::server::ProcessExecutorSetting> {
    use batchctl_executor::process::RunAs;
    use batchctl_scheduler::server::ProcessExecutorSetting;
    if !enabled {
        return Ok(ProcessExecutorSetting::Disabled);
    }
    let run_as = match user {
        Some(user) => Some(
            RunAs::resolve(user).map_err(|error| anyhow::anyhow!("--process-user: {error}"))?,
        ),
        None if nix::unistd::geteuid().is_root() => Some(RunAs::resolve("nobody").map_err(|error| {
            anyhow::anyhow!("the server runs as root, so process jobs run as nobody, but: {error}; name another user with --process-user")
        })?),
        None => None,
    };
    Ok(ProcessExecutorSetting::Enabled { run_as })
}

pub(crate) async fn serve(
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    settings: ServeSettings,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATCHCTL_LOG")
                .unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log that cannot be written (its file on a full disk) loses lines; by default
        // tracing-subscriber would report that with `eprintln!`, which panics the task that
        // logged — a request, or the dispatcher.
        .log_internal_errors(false)
        .init();
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    let executable =
        std::env::current_exe().context("cannot find the batchctl executable for attempt shims")?;
    // The small `batchctl-shim` beside this executable when it is installed, else `batchctl shim`.
    let small_shim = executable.with_file_name("batchctl-shim");
    let (shim_program, shim_arguments) = if small_shim.is_file() {
        (small_shim, Vec::new())
    } else {
        (
            executable.with_file_name("batchctl"),
            vec![OsString::from("shim")],
        )
    };
    let config = batchctl_scheduler::server::ServerConfig {
        listen,
        data_dir,
        database_url,
        shim_program,
        shim_arguments,
        dispatcher: batchctl_scheduler::dispatcher::DispatcherConfig {
            kill_grace: settings.kill_grace,
            poll_interval: settings.poll_interval,
            max_log_bytes_per_attempt: settings.max_log_bytes_per_attempt,
            ..Default::default()
        },
        tokens: settings.tokens,
        event_retention: settings.event_retention,
        job_retention: settings.job_retention,
        lease: settings.lease,
        apply_files: settings.apply_files,
        notification_policy: settings.notification_policy,
        process_executor: settings.process_executor,
        keyring: settings.keyring,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!(
            "shutting down; running attempts keep running and are adopted at the next start"
        );
        signal_shutdown.cancel();
    });
    batchctl_scheduler::server::run(config, shutdown, |address| {
        println!("batchctl server listening on http://{address}");
    })
    .await?;
    Ok(())
}

pub(crate) fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("batchctl")
}
