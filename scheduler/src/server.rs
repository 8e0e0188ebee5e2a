//! `batchctl server`: wires the store, the executors, the dispatcher, the submitter and the API
//! together, and runs them until SIGTERM or Ctrl-C.

use std::ffi::OsString;
use std::fs::{self, File, TryLockError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "docker")]
use batchctl_executor::docker::{DockerExecutor, DockerExecutorConfig};
#[cfg(feature = "kubernetes")]
use batchctl_executor::kubernetes::spec::JobSettings;
#[cfg(feature = "kubernetes")]
use batchctl_executor::kubernetes::{KubernetesExecutor, KubernetesExecutorConfig};
use batchctl_executor::process::{ProcessExecutor, ProcessExecutorConfig, RunAs};
use batchctl_executor::Executor;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiContext, AppState};
use crate::core::model::{
    Backend, DockerSettings, EnvironmentName, EnvironmentType, KubernetesSettings,
};
use crate::dispatcher::{DispatchError, Dispatcher, DispatcherConfig, DispatcherHandle, Executors};
use crate::leadership::{
    campaign, hold, is_fenced, release, Ended, LeaseSettings, Role, RoleState,
};
use crate::manifest;
use crate::notifier::Notifier;
use crate::rules::{prune_bus_periodically, RuleHandle, RuleRunner};
use crate::schedules::{ScheduleHandle, ScheduleRunner, SystemClock};
use crate::store::{now_millis, Dialect, Fence, Store, StoreLocation};
use crate::submitter::Submitter;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…`; the embedded SQLite file under `data_dir` when absent.
    pub database_url: Option<String>,
    /// How to start an attempt's shim (the server's own binary and `shim`).
    pub shim_program: PathBuf,
    pub shim_arguments: Vec<OsString>,
    pub dispatcher: DispatcherConfig,
    /// API tokens; required when `listen` is not a loopback address.
    pub tokens: crate::core::auth::Tokens,
    /// How long events (and what was done with them) are kept on the bus.
    pub event_retention: Duration,
    /// How long finished jobs are kept where their queue says nothing else.
    pub job_retention: crate::core::lifecycle::Retention,
    /// The leader lease, when several servers share a Postgres database.
    pub lease: LeaseSettings,
    /// Manifest files applied at every start, before anything runs (as `batchctl apply -f`): how
    /// a Helm release declares its compute environment and queue.
    pub apply_files: Vec<PathBuf>,
    /// Which addresses notifications may reach (internal ones only where listed).
    pub notification_policy: crate::core::endpoint_policy::EndpointPolicy,
    /// Whether jobs may run as local processes, and as whom.
    pub process_executor: ProcessExecutorSetting,
    /// Seals secrets at rest; without it, secrets cannot be stored.
    pub keyring: Option<Arc<crate::sealing::Keyring>>,
}

/// The process executor runs any command a submit token sends as a host process, as Nomad's
/// `raw_exec` driver does: on by default only for the laptop case (loopback, no tokens), where
/// whoever can reach the API already runs commands as this user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExecutorSetting {
    /// `type: process` environments are refused and none is created; existing ones get no
    /// executor, so their jobs wait.
    Disabled,
    /// Enabled; work runs as this user (`None`: the server's own).
    Enabled { run_as: Option<RunAs> },
}

impl ProcessExecutorSetting {
    pub fn is_enabled(self) -> bool {
        matches!(self, ProcessExecutorSetting::Enabled { .. })
    }
}

/// Why documents naming a process environment are refused on a server without the process
/// executor, naming the first one; `None` if there is none or the executor is enabled.
pub fn process_environment_refusal(
    documents: &[crate::store::ValidDocument],
    setting: ProcessExecutorSetting,
) -> Option<crate::manifest::FieldError> {
    if setting.is_enabled() {
        return None;
    }
    documents.iter().enumerate().find_map(|(index, (resource, _))| match resource {
        manifest::Resource::ComputeEnvironment(environment)
            if environment.backend == Backend::Process =>
        {
            Some(crate::manifest::FieldError::new(
                format!("documents[{index}].spec.type"),
                "process is disabled on this server: it runs each job's command as a host process; start the server with --enable-process-executor to allow it (see docs/security.md)",
            ))
        }
        _ => None,
    })
}

/// Why documents are refused for a definition that mounts a host path no compute environment
/// allows (`allowedHostPaths` of the stored ones and of those in the same documents), naming the
/// first such path; `None` when every path is allowed somewhere. Each environment checks again
/// at start, for its own list.
pub fn host_path_refusal(
    documents: &[crate::store::ValidDocument],
    stored: &[crate::core::model::ComputeEnvironment],
) -> Option<crate::manifest::FieldError> {
    let applied = documents.iter().filter_map(|(resource, _)| match resource {
        manifest::Resource::ComputeEnvironment(environment) => Some(environment),
        _ => None,
    });
    let allowed: Vec<String> = stored
        .iter()
        .filter(|environment| {
            !documents.iter().any(|(resource, _)| {
                matches!(resource, manifest::Resource::ComputeEnvironment(applied) if applied.name == environment.name)
            })
        })
        .chain(applied)
        .flat_map(|environment| match &environment.backend {
            Backend::Docker(settings) => settings.allowed_host_paths.clone(),
            Backend::Kubernetes(settings) => settings.allowed_host_paths.clone(),
            Backend::Process => Vec::new(),
        })
        .collect();
    documents.iter().enumerate().find_map(|(index, (resource, _))| {
        let manifest::Resource::JobDefinition { spec, .. } = resource else {
            return None;
        };
        spec.container.storage.volumes.iter().enumerate().find_map(|(volume_index, volume)| {
            let crate::core::storage::VolumeSource::Host { path } = &volume.source else {
                return None;
            };
            (!crate::core::storage::host_path_allowed(path, &allowed)).then(|| {
                crate::manifest::FieldError::new(
                    format!("documents[{index}].spec.containerProperties.volumes[{volume_index}].host.sourcePath"),
                    format!("{path} is not under any compute environment's allowedHostPaths; list it (or a directory above it) on the environments that should mount it"),
                )
            })
        })
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another batchctl server is using the data directory {0}; stop it or pass another --data-dir")]
    DataDirInUse(String),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot upgrade the store: {0}")]
    Upgrade(#[from] crate::upgrade::UpgradeError),
    #[error("cannot apply {path}: {reason}")]
    ApplyFile { path: String, reason: String },
    #[error("cannot create the default resources: {0}")]
    Defaults(#[from] crate::store::ApplyError),
    #[error("cannot set up the process executor: {0}")]
    Executor(#[from] batchctl_executor::ExecutorError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {0} (not a loopback address) needs API tokens: pass --tokens-file or set BATCHCTL_TOKENS")]
    OpenApiOnNetwork(SocketAddr),
    #[error("this server stopped leading: {0}")]
    LostLeadership(String),
    #[error("the dispatcher panicked: {0}")]
    DispatcherPanicked(String),
    #[error("the dispatcher stopped: {0}")]
    Dispatcher(#[from] crate::dispatcher::DispatchError),
}

/// Runs the server until `shutdown` fires; `ready` is told the bound address once it serves.
pub async fn run(
    config: ServerConfig,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    // An open API is for a laptop: anywhere else, every request must carry a token.
    if !config.listen.ip().is_loopback() && config.tokens.is_empty() {
        return Err(ServerError::OpenApiOnNetwork(config.listen));
    }
    let data_dir_error = |source| ServerError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
    // One server per data directory: its SQLite file and attempt directories have one owner.
    let lock = File::create(config.data_dir.join("server.lock")).map_err(data_dir_error)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(ServerError::DataDirInUse(
                config.data_dir.display().to_string(),
            ))
        }
        Err(TryLockError::Error(error)) => return Err(data_dir_error(error)),
    }

    let location = match &config.database_url {
        Some(url) => StoreLocation::Postgres { url: url.clone() },
        None => StoreLocation::Sqlite {
            path: config.data_dir.join("batchctl.db"),
        },
    };
    api::error::set_storage_location(match &location {
        StoreLocation::Sqlite { .. } => format!("the data directory {}", config.data_dir.display()),
        StoreLocation::Postgres { .. } => "the Postgres database's disk".into(),
    });
    let store = Store::open(&location).await?;
    let store = match &config.keyring {
        Some(keyring) => store.with_keyring(Arc::clone(keyring)),
        None => store,
    };
    crate::upgrade::stored_models(&store).await?;
    crate::upgrade::sealed_secrets(&store, config.keyring.as_deref()).await?;
    let installation = store.installation_id().await?;
    apply_files(&store, &config.apply_files, config.process_executor).await?;
    create_defaults_on_first_start(&store, &installation, config.process_executor).await?;

    let mut executors = Executors::default();
    if let ProcessExecutorSetting::Enabled { run_as } = config.process_executor {
        let process = ProcessExecutor::new(ProcessExecutorConfig {
            root: config.data_dir.join("attempts"),
            shim_program: config.shim_program.clone(),
            shim_arguments: config.shim_arguments.clone(),
            run_as,
        })?;
        executors = executors.with(EnvironmentType::Process, Arc::new(process));
    }
    let executors = executors.with_factory(Arc::new({
        let installation = installation.clone();
        move |name: &EnvironmentName, backend: &Backend| -> Option<Arc<dyn Executor>> {
            match backend {
                Backend::Process => None,
                Backend::Docker(settings) => docker_executor(name, settings, &installation),
                Backend::Kubernetes(settings) => kubernetes_executor(name, settings, &installation),
            }
        }
    }));
    // Handles the API wakes the leader's loops through; the loops themselves start on leading.
    let handle = DispatcherHandle::default();
    let submitter = Submitter::start(store.clone(), handle.clone(), shutdown.clone());
    let schedules = Arc::new(ScheduleRunner::new(
        store.clone(),
        handle.clone(),
        Arc::new(SystemClock),
    ));
    let rules_handle = RuleHandle::default();
    let role = Role::default();
    // Servers sharing Postgres wake the leader's dispatcher through LISTEN/NOTIFY.
    let peer_tasks = match &config.database_url {
        Some(url) => {
            // Bounded: wake-ups are coalesced per burst, so a few in the channel are all it needs.
            let (sender, receiver) = tokio::sync::mpsc::channel(64);
            handle.connect_peers(sender);
            vec![
                tokio::spawn(crate::peers::send(
                    store.clone(),
                    receiver,
                    role.clone(),
                    shutdown.clone(),
                )),
                tokio::spawn(crate::peers::listen(
                    url.clone(),
                    handle.clone(),
                    shutdown.clone(),
                )),
            ]
        }
        None => Vec::new(),
    };
    let leading = tokio::spawn(lead(
        Leading {
            store: store.clone(),
            lease: config.lease.clone(),
            executors,
            dispatcher: config.dispatcher.clone(),
            dispatcher_handle: handle.clone(),
            schedule_handle: schedules.handle(),
            rules_handle: rules_handle.clone(),
            event_retention: config.event_retention,
            job_retention: config.job_retention,
            notification_policy: config.notification_policy.clone(),
            role: role.clone(),
        },
        shutdown.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            address: config.listen,
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: config.listen,
            source,
        })?;
    let state = AppState::new(ApiContext {
        store: store.clone(),
        submitter,
        dispatcher: handle,
        schedules,
        rules: rules_handle,
        shutdown: shutdown.clone(),
        installation: installation.clone(),
        tokens: Arc::new(config.tokens.clone()),
        role,
        listening: address,
        process_executor: config.process_executor,
        streams: Default::default(),
        console_charts: Default::default(),
        sqlite_data_dir: match &location {
            StoreLocation::Sqlite { .. } => Some(config.data_dir.clone()),
            StoreLocation::Postgres { .. } => None,
        },
    });
    let app = api::router(state).layer(tower_http::trace::TraceLayer::new_for_http());
    tracing::info!(%address, data_dir = %config.data_dir.display(), database = ?location_kind(&location), "batchctl server ready");
    ready(address);
    let serve_shutdown = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
        .await;
    shutdown.cancel();
    let led = leading.await;
    for task in peer_tasks {
        let _ = task.await;
    }
    store.close().await;
    drop(lock);
    served.map_err(|source| ServerError::Listen { address, source })?;
    match led {
        Ok(result) => result?,
        Err(join_error) => tracing::error!(%join_error, "the leading task panicked"),
    }
    Ok(())
}

/// What the leader runs, handed over before it is known whether this server will lead.
struct Leading {
    store: Store,
    lease: LeaseSettings,
    executors: Executors,
    dispatcher: DispatcherConfig,
    dispatcher_handle: DispatcherHandle,
    schedule_handle: ScheduleHandle,
    rules_handle: RuleHandle,
    event_retention: Duration,
    job_retention: crate::core::lifecycle::Retention,
    notification_policy: crate::core::endpoint_policy::EndpointPolicy,
    role: Role,
}

/// Leads until `shutdown`: at once on SQLite, after taking the lease on Postgres. Running the
/// dispatcher, schedules, rules, notifications and pruning on the leader only keeps capacity
/// accounting and outgoing notifications in one place. Losing the lease shuts the server down.
async fn lead(leading: Leading, shutdown: CancellationToken) -> Result<(), ServerError> {
    let Leading {
        store,
        lease,
        executors,
        dispatcher,
        dispatcher_handle,
        schedule_handle,
        rules_handle,
        event_retention,
        job_retention,
        notification_policy,
        role,
    } = leading;
    let term = match store.dialect() {
        Dialect::Sqlite => None,
        Dialect::Postgres => match campaign(&store, &lease, &shutdown).await {
            Some(term) => Some((term, tokio::time::Instant::now())),
            None => return Ok(()),
        },
    };
    let store = match term {
        Some((term, _)) => {
            tracing::info!(holder = %lease.holder, term, "leading: took the leader lease");
            store.fenced(Fence {
                holder: lease.holder.clone(),
                term,
            })
        }
        None => store,
    };
    role.set(RoleState::Leader {
        term: term.map(|(term, _)| term),
    });
    // The leader's loops stop with the server or when the lease is lost.
    let stop = shutdown.child_token();
    let mut dispatcher_task = tokio::spawn(
        Dispatcher::new(store.clone(), executors, dispatcher)
            .with_handle(dispatcher_handle.clone())
            .run(stop.clone()),
    );
    let schedules = ScheduleRunner::new(
        store.clone(),
        dispatcher_handle.clone(),
        Arc::new(SystemClock),
    )
    .with_handle(schedule_handle);
    let schedules_task = tokio::spawn(Arc::new(schedules).run(stop.clone()));
    let metrics = Arc::clone(dispatcher_handle.metrics());
    let rules = RuleRunner::new(store.clone(), dispatcher_handle).with_handle(rules_handle);
    let rules_task = tokio::spawn(rules.run(stop.clone()));
    let notifier_task = tokio::spawn(
        Notifier::new(store.clone(), notification_policy)
            .with_metrics(metrics)
            .run(stop.clone()),
    );
    let prune_task = tokio::spawn(prune_bus_periodically(
        store.clone(),
        event_retention,
        stop.clone(),
    ));
    let job_prune_task = tokio::spawn(crate::retention::prune_jobs_periodically(
        store.clone(),
        job_retention,
        stop.clone(),
    ));

    // Leading ends with the server, when the lease is lost, or when the dispatcher fails.
    let (ended, dispatched) = match term {
        Some((term, taken_at)) => tokio::select! {
            ended = hold(&store, &lease, term, taken_at, &shutdown) => {
                stop.cancel();
                (Some(ended), (&mut dispatcher_task).await)
            }
            dispatched = &mut dispatcher_task => (None, dispatched),
        },
        None => (None, dispatcher_task.await),
    };
    stop.cancel();
    for (name, task) in [
        ("event pruning", prune_task),
        ("job pruning", job_prune_task),
        ("notifier", notifier_task),
        ("rule runner", rules_task),
        ("schedule runner", schedules_task),
    ] {
        if let Err(join_error) = task.await {
            tracing::error!(%join_error, "{name} task panicked");
        }
    }
    // The lease is lost when renewing finds another term, or when a write of this term is fenced.
    let lost = match (ended, &dispatched) {
        (Some(Ended::Lost(reason)), _) => Some(reason),
        (_, Ok(Err(DispatchError::Store(error)))) if is_fenced(error) => Some(error.to_string()),
        _ => None,
    };
    if let Some(reason) = lost {
        tracing::error!(%reason, "lost the leader lease; shutting down so this server restarts as a follower");
        role.set(RoleState::Follower);
        shutdown.cancel();
        return Err(ServerError::LostLeadership(reason));
    }
    let dispatched = match dispatched {
        Ok(result) => result.map_err(ServerError::from),
        Err(join_error) => Err(ServerError::DispatcherPanicked(join_error.to_string())),
    };
    match &dispatched {
        Ok(()) => {
            if let Some((term, _)) = term {
                release(&store, &lease, term).await;
            }
        }
        // The dispatcher ends by itself only on a failure; the server cannot go on without it.
        Err(_) => shutdown.cancel(),
    }
    dispatched
}

/// Applies each file's documents in one transaction per file; an invalid file stops the server
/// with the field at fault, having written nothing of that file.
async fn apply_files(
    store: &Store,
    files: &[PathBuf],
    process_executor: ProcessExecutorSetting,
) -> Result<(), ServerError> {
    for path in files {
        let failed = |reason: String| ServerError::ApplyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
        let documents =
            manifest::documents_from_text(&text).map_err(|error| failed(error.to_string()))?;
        let (valid, warnings) = crate::aws_compat::documents_to_apply(&documents)
            .map_err(|error| failed(error.to_string()))?;
        if let Some(error) = process_environment_refusal(&valid, process_executor) {
            return Err(failed(error.to_string()));
        }
        let stored = store.compute_environments().await?;
        if let Some(error) = host_path_refusal(&valid, &stored) {
            return Err(failed(error.to_string()));
        }
        for warning in warnings {
            tracing::warn!(file = %path.display(), "{warning}");
        }
        let applied = store
            .apply(&valid, now_millis())
            .await
            .map_err(|error| failed(error.to_string()))?;
        tracing::info!(file = %path.display(), documents = applied.len(), "applied");
    }
    Ok(())
}

fn location_kind(location: &StoreLocation) -> &'static str {
    match location {
        StoreLocation::Sqlite { .. } => "sqlite",
        StoreLocation::Postgres { .. } => "postgres",
    }
}

/// A newcomer can submit at once: on a store with no compute environment and no queue, create a
/// `local` process environment the size of this machine and a `default` queue on it.
async fn create_defaults_on_first_start(
    store: &Store,
    installation: &str,
    process_executor: ProcessExecutorSetting,
) -> Result<(), ServerError> {
    if !store.compute_environments().await?.is_empty() || !store.job_queues().await?.is_empty() {
        return Ok(());
    }
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_mib = total_memory_mib().unwrap_or(4096);
    // Where a Docker engine answers, jobs run in containers; elsewhere as local processes.
    let backend = if docker_answers(installation).await {
        "docker"
    } else {
        "process"
    };
    if backend == "process" && !process_executor.is_enabled() {
        tracing::warn!("first start: no Docker engine answers and the process executor is disabled, so no compute environment was created; apply one (see docs/security.md)");
        return Ok(());
    }
    let text = format!(
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {{name: local}}\n\
         spec: {{type: {backend}, state: ENABLED, maxVcpus: {vcpus}, maxMemoryMiB: {memory_mib}}}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {{name: default}}\n\
         spec: {{priority: 1, state: ENABLED, computeEnvironmentOrder: [{{order: 1, computeEnvironment: local}}]}}\n"
    );
    let documents = manifest::documents_from_text(&text).expect("the defaults are valid YAML");
    let valid: Vec<_> = documents
        .iter()
        .map(|d| {
            (
                manifest::parse_document(d).expect("the defaults are valid"),
                d["spec"].clone(),
            )
        })
        .collect();
    store.apply(&valid, now_millis()).await?;
    tracing::info!(
        vcpus,
        memory_mib,
        backend,
        "first start: created compute environment `local` and queue `default`"
    );
    Ok(())
}

fn total_memory_mib() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Whether a Docker engine answers on the default socket (`DOCKER_HOST` or the local one).
#[cfg(feature = "docker")]
async fn docker_answers(installation: &str) -> bool {
    let local = EnvironmentName::try_from("local".to_string()).expect("a valid name");
    let engine = DockerExecutor::new(docker_config(
        &local,
        &DockerSettings::default(),
        installation,
    ));
    match tokio::time::timeout(Duration::from_secs(2), engine.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::info!(%error, "no Docker engine answers; the default environment runs local processes");
            false
        }
        Err(_) => false,
    }
}

/// Built without the docker backend: no engine is asked.
#[cfg(not(feature = "docker"))]
async fn docker_answers(_installation: &str) -> bool {
    false
}

#[cfg(feature = "docker")]
fn docker_executor(
    name: &EnvironmentName,
    settings: &DockerSettings,
    installation: &str,
) -> Option<Arc<dyn Executor>> {
    Some(Arc::new(DockerExecutor::new(docker_config(
        name,
        settings,
        installation,
    ))))
}

/// Built without the docker backend: its environments get no executor, so their jobs wait (the
/// dispatcher says why).
#[cfg(not(feature = "docker"))]
fn docker_executor(
    name: &EnvironmentName,
    _settings: &DockerSettings,
    _installation: &str,
) -> Option<Arc<dyn Executor>> {
    tracing::warn!(environment = %name, "this batchctl was built without the docker backend");
    None
}

#[cfg(feature = "kubernetes")]
fn kubernetes_executor(
    name: &EnvironmentName,
    settings: &KubernetesSettings,
    installation: &str,
) -> Option<Arc<dyn Executor>> {
    Some(Arc::new(KubernetesExecutor::new(kubernetes_config(
        name,
        settings,
        installation,
    ))))
}

/// Built without the kubernetes backend: as for docker.
#[cfg(not(feature = "kubernetes"))]
fn kubernetes_executor(
    name: &EnvironmentName,
    _settings: &KubernetesSettings,
    _installation: &str,
) -> Option<Arc<dyn Executor>> {
    tracing::warn!(environment = %name, "this batchctl was built without the kubernetes backend");
    None
}

#[cfg(feature = "docker")]
fn docker_config(
    environment: &EnvironmentName,
    settings: &DockerSettings,
    installation: &str,
) -> DockerExecutorConfig {
    DockerExecutorConfig {
        host: settings.host.clone(),
        owner: installation.to_string(),
        compute_environment: environment.to_string(),
        allow_privileged: settings.allow_privileged,
        keep_failed_containers: settings.keep_failed_containers,
        allowed_host_paths: settings.allowed_host_paths.clone(),
    }
}

#[cfg(feature = "kubernetes")]
fn kubernetes_config(
    environment: &EnvironmentName,
    settings: &KubernetesSettings,
    installation: &str,
) -> KubernetesExecutorConfig {
    KubernetesExecutorConfig {
        namespace: settings.namespace.clone(),
        kubeconfig: settings.kubeconfig.as_ref().map(PathBuf::from),
        context: settings.context.clone(),
        compute_environment: environment.to_string(),
        job: JobSettings {
            owner: installation.to_string(),
            service_account_name: settings.service_account_name.clone(),
            allow_privileged: settings.allow_privileged,
            // batchctl removes a Job once its outcome and logs are stored; this is the cluster's
            // own cleanup for Jobs of a server that is gone.
            ttl_seconds_after_finished: 86_400,
            pod_defaults: (*settings.pod_defaults).clone(),
        },
        image_pull_timeout: KUBERNETES_PULL_TIMEOUT,
        allowed_host_paths: settings.allowed_host_paths.clone(),
    }
}

/// How long a kubernetes attempt's image may fail to pull before the attempt fails.
#[cfg(feature = "kubernetes")]
const KUBERNETES_PULL_TIMEOUT: Duration = Duration::from_secs(300);
