//! The options of `batchctl server` (and of `batchctl-server`, which runs it).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    #[arg(long, env = "BATCHCTL_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Where the embedded database, attempt records and logs live.
    #[arg(long, env = "BATCHCTL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use Postgres (postgres://…) instead of the embedded SQLite database.
    #[arg(long, env = "BATCHCTL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Seconds between asking an attempt to stop and killing it.
    #[arg(long, default_value_t = 10)]
    pub kill_grace_seconds: u64,
    /// API tokens, one `SCOPE TOKEN` per line (scopes: read, submit, admin). Required when
    /// listening on a non-loopback address. BATCHCTL_TOKENS may hold the same lines.
    #[arg(long, env = "BATCHCTL_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Hours events, rule deliveries and sent notifications are kept (dead letters stay).
    #[arg(long, default_value_t = 168)]
    pub event_retention_hours: u64,
    /// How long finished jobs (with their attempts and output) are kept after they stop, where
    /// their queue's `jobRetention` says nothing else: `90s`, `12h`, `30d`.
    #[arg(long, env = "BATCHCTL_JOB_RETENTION", default_value = "30d", value_parser = batchctl_scheduler::core::lifecycle::parse_duration)]
    pub job_retention: u64,
    /// The most output one attempt keeps in the database (its first and last halves, with a
    /// note of what was dropped between), where its definition sets no maxLogBytesPerAttempt.
    #[arg(long, env = "BATCHCTL_MAX_LOG_BYTES_PER_ATTEMPT", default_value = "100M", value_parser = batchctl_scheduler::core::output_limit::parse_size)]
    pub max_log_bytes_per_attempt: u64,
    /// Postgres only: seconds the leader lease lasts without renewal. Several servers may share
    /// one Postgres database; one leads (dispatches and fires schedules), the others serve the
    /// API and take over within this long after the leader dies.
    #[arg(long, env = "BATCHCTL_LEASE_TTL_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub lease_ttl_seconds: u64,
    /// This server's name in the leader lease; the host name, pid and a random suffix by
    /// default (in Kubernetes, the pod's host name is its name).
    #[arg(long, env = "BATCHCTL_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Manifests (YAML or JSON, as for `apply -f`) applied at every start before anything runs;
    /// may be given more than once. An invalid file stops the server.
    #[arg(long = "apply", value_name = "FILE")]
    pub apply: Vec<PathBuf>,
    /// Seconds between the leader's looks at the store for changes no wake-up announced.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_interval_seconds: u64,
    /// A network (CIDR, e.g. 10.20.0.0/16) notifications may reach although it is loopback,
    /// link-local or private, which they may not by default; may be given more than once.
    #[arg(long = "notification-allow-cidr", value_name = "CIDR")]
    pub notification_allow_cidr: Vec<ipnet::IpNet>,
    /// Allow `type: process` compute environments, which run each job's command as a host
    /// process. On by default only on a loopback address without tokens (a laptop).
    #[arg(long, env = "BATCHCTL_ENABLE_PROCESS_EXECUTOR")]
    pub enable_process_executor: bool,
    /// Who process jobs run as: a user NAME or UID[:GID]. Default: `nobody` when the server
    /// runs as root, else the server's own user.
    #[arg(long, env = "BATCHCTL_PROCESS_USER", value_name = "USER")]
    pub process_user: Option<String>,
    /// A file holding a 32-byte key in base64 (`head -c 32 /dev/urandom | base64`), which seals
    /// secrets at rest. Without one the server refuses to store secrets.
    #[arg(long, env = "BATCHCTL_SECRET_KEY_FILE", value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// A key being replaced: what it sealed is read, and re-sealed with --secret-key-file at
    /// start-up. May be given more than once.
    #[arg(
        long = "previous-secret-key-file",
        value_name = "FILE",
        requires = "secret_key_file"
    )]
    pub previous_secret_key_files: Vec<PathBuf>,
}
