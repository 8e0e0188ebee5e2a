//! Runs each attempt as a local process group under a supervising shim (`batchctl shim`).
//!
//! Invariants:
//! - The attempt's lock is held from before the shim is spawned until after its exit record is
//!   written, so "lock free" means "no shim alive" without any pid-reuse race.
//! - A kill signals the work's process group, never a pid whose shim is gone.
//! - The image is ignored: the command runs on the host, in `work/` of the attempt directory unless
//!   the spec names a working directory.
//! - The lock is the truth about whether a shim lives. A shim this executor started is also
//!   awaited as a child process, which tells `wait` and the log follower of its end at once
//!   instead of at their next look; shims adopted after a restart are known by the lock alone.

pub mod layout;
mod logs;
mod observe;
pub mod shim;
mod spec;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgid, Pid};
use tokio::sync::watch;

use crate::{
    AttemptHandle, AttemptOutcome, AttemptSpec, Executor, ExecutorError, ListedAttempt, LogChunk,
    LogCursor, ObservedState,
};
pub use layout::RunAs;
use layout::{io_error, write_json_atomically, AttemptDir, Frame, WorkUser};
use logs::OutputFollower;
use observe::{outcome_of_finished, outcome_of_record};
use spec::with_inherited_variables;

#[derive(Debug, Clone)]
pub struct ProcessExecutorConfig {
    /// Where attempt directories live; it must survive a server restart.
    pub root: PathBuf,
    /// The shim command: a program and the arguments before the attempt directory
    /// (for the server: its own executable and `shim`).
    pub shim_program: PathBuf,
    pub shim_arguments: Vec<OsString>,
    /// Who the work runs as; `None`: the server's own user.
    pub run_as: Option<RunAs>,
}

#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    config: ProcessExecutorConfig,
    /// The shims this executor started, by attempt id: true once the shim has exited.
    exits: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
}

impl ProcessExecutor {
    pub fn new(config: ProcessExecutorConfig) -> Result<ProcessExecutor, ExecutorError> {
        fs::create_dir_all(&config.root).map_err(|error| io_error(&config.root, error))?;
        Ok(ProcessExecutor {
            config,
            exits: Arc::default(),
        })
    }

    /// Tells of the end of a shim this executor started; `None` for one it did not start.
    fn exit_signal(&self, handle: &AttemptHandle) -> Option<watch::Receiver<bool>> {
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&handle.0)
            .cloned()
    }

    fn dir(&self, handle: &AttemptHandle) -> AttemptDir {
        AttemptDir::new(&self.config.root, &handle.0)
    }

    fn spawn_shim(&self, dir: &AttemptDir, attempt_id: &str) -> Result<(), ExecutorError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.lock())
            .map_err(|error| io_error(&dir.lock(), error))?;
        lock.lock().map_err(|error| io_error(&dir.lock(), error))?;
        let shim_log = File::create(dir.shim_log()).map_err(|e| io_error(&dir.shim_log(), e))?;
        let shim_log_err = shim_log
            .try_clone()
            .map_err(|e| io_error(&dir.shim_log(), e))?;
        let mut command = tokio::process::Command::new(&self.config.shim_program);
        // The locked descriptor goes to the shim as its standard input, and the shim leads a
        // process group of its own (out of reach of a terminal's signals to the server's group):
        // both without code between fork and exec, so the standard library starts the shim with
        // posix_spawn instead of copying the server's address space with fork.
        command
            .args(&self.config.shim_arguments)
            .arg(&dir.path)
            .arg("--lock-fd")
            .arg("0")
            .stdin(Stdio::from(lock))
            .stdout(shim_log)
            .stderr(shim_log_err)
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|error| ExecutorError::Unavailable {
                reason: format!(
                    "cannot start the shim {}: {error}",
                    self.config.shim_program.display()
                ),
            })?;
        // The shim's exit releases the lock (it holds the only descriptor of it), so its end as a
        // child is the end the lock would show, known without polling.
        let (exited, exit_signal) = watch::channel(false);
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt_id.to_string(), exit_signal);
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = exited.send(true);
        });
        Ok(())
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    async fn start(&self, spec: &AttemptSpec) -> Result<AttemptHandle, ExecutorError> {
        if spec.nodes.is_some() {
            return Err(ExecutorError::Refused {
                reason: format!(
                    "CannotStartContainerError: compute environment {} runs local processes, which run no multi-node jobs (they need a network of their own per job); submit the job to a queue of a docker or kubernetes environment",
                    spec.compute_environment
                ),
            });
        }
        if let Some(reason) = spec.linux.unsupported_on_processes().or_else(|| {
            spec.storage.refusal(
                batchctl_core::storage::StorageBackend::Process,
                &spec.compute_environment,
                &[],
            )
        }) {
            return Err(ExecutorError::Refused { reason });
        }
        let handle = AttemptHandle(spec.attempt_id.clone());
        let dir = self.dir(&handle);
        let this = self.clone();
        let spec = with_inherited_variables(spec.clone());
        tokio::task::spawn_blocking(move || {
            // A directory left by a start that never got its shim going is replaced.
            if dir.path.exists() {
                fs::remove_dir_all(&dir.path).map_err(|error| io_error(&dir.path, error))?;
            }
            fs::create_dir_all(&dir.path).map_err(|error| io_error(&dir.path, error))?;
            write_json_atomically(&dir.spec(), &spec).map_err(|e| io_error(&dir.spec(), e))?;
            if let Some(run_as) = this.config.run_as {
                // The attempt's files stay the server's alone; the work gets a directory of its
                // own, owned by its user.
                fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_error(&dir.path, e))?;
                let work_dir =
                    std::env::temp_dir().join(format!("batchctl-work-{}", spec.attempt_id));
                if work_dir.exists() {
                    fs::remove_dir_all(&work_dir).map_err(|e| io_error(&work_dir, e))?;
                }
                fs::create_dir(&work_dir).map_err(|e| io_error(&work_dir, e))?;
                fs::set_permissions(&work_dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_error(&work_dir, e))?;
                std::os::unix::fs::chown(&work_dir, Some(run_as.uid), Some(run_as.gid))
                    .map_err(|e| io_error(&work_dir, e))?;
                write_json_atomically(&dir.run_as(), &WorkUser { run_as, work_dir })
                    .map_err(|e| io_error(&dir.run_as(), e))?;
            }
            this.spawn_shim(&dir, &spec.attempt_id)
        })
        .await
        .map_err(join_error)??;
        Ok(handle)
    }

    async fn wait(&self, handle: &AttemptHandle) -> Result<AttemptOutcome, ExecutorError> {
        let dir = self.dir(handle);
        if let Some(mut exit) = self.exit_signal(handle) {
            // Holds no thread while the work runs. An error means the watching task is gone,
            // which happens only with the runtime; the lock below then decides.
            let _ = exit.wait_for(|exited| *exited).await;
        }
        tokio::task::spawn_blocking(move || {
            let lock = open_lock(&dir)?;
            // Blocks until the shim (and so the work) is gone.
            lock.lock().map_err(|error| io_error(&dir.lock(), error))?;
            drop(lock);
            outcome_of_finished(&dir)
        })
        .await
        .map_err(join_error)?
    }

    fn logs(
        &self,
        handle: &AttemptHandle,
        from: LogCursor,
    ) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
        let follower = OutputFollower {
            dir: self.dir(handle),
            exit: self.exit_signal(handle),
            offset: from.0,
            buffer: Vec::new(),
            pending: std::collections::VecDeque::new(),
            finished: false,
        };
        stream::unfold(follower, |mut follower| async move {
            follower.next().await.map(|item| (item, follower))
        })
        .boxed()
    }

    async fn kill(&self, handle: &AttemptHandle, grace: Duration) -> Result<(), ExecutorError> {
        let dir = self.dir(handle);
        // A kill can arrive just after start returned, before the shim has started the work and
        // written its pid: wait for the pid while the shim lives, or the work would be missed.
        let pid = loop {
            if let Some(pid) = dir.read_child_pid()? {
                break pid;
            }
            if !shim_alive(&dir)? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if !shim_alive(&dir)? {
            return Ok(());
        }
        signal_group(pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !shim_alive(&dir)? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if shim_alive(&dir)? {
            signal_group(pid, Signal::SIGKILL);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ListedAttempt>, ExecutorError> {
        let root = self.config.root.clone();
        tokio::task::spawn_blocking(move || list_attempts(&root))
            .await
            .map_err(join_error)?
    }

    async fn remove(&self, handle: &AttemptHandle) -> Result<(), ExecutorError> {
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&handle.0);
        let dir = self.dir(handle);
        tokio::task::spawn_blocking(move || {
            if let Ok(Some(user)) = dir.read_run_as() {
                match fs::remove_dir_all(&user.work_dir) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error(&user.work_dir, error)),
                }
            }
            match fs::remove_dir_all(&dir.path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(io_error(&dir.path, error)),
            }
        })
        .await
        .map_err(join_error)?
    }
}

fn open_lock(dir: &AttemptDir) -> Result<File, ExecutorError> {
    File::open(dir.lock()).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => ExecutorError::UnknownAttempt {
            handle: dir.path.display().to_string(),
        },
        _ => io_error(&dir.lock(), error),
    })
}

fn shim_alive(dir: &AttemptDir) -> Result<bool, ExecutorError> {
    let lock = open_lock(dir)?;
    match lock.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(error)) => Err(io_error(&dir.lock(), error)),
    }
}

fn signal_group(pid: i32, signal: Signal) {
    // killpg(1) is kill(-1): every process on the machine. A recorded pid of 0 or 1 can only be a
    // corrupt record, and is never signalled.
    if pid <= 1 {
        tracing::error!(
            pid,
            "refusing to signal the process group of a corrupt pid record"
        );
        return;
    }
    // The group may already be gone; that is the outcome a kill wants.
    let _ = killpg(Pid::from_raw(pid), signal);
}

fn list_attempts(root: &std::path::Path) -> Result<Vec<ListedAttempt>, ExecutorError> {
    let mut listed = Vec::new();
    for entry in fs::read_dir(root).map_err(|error| io_error(root, error))? {
        let entry = entry.map_err(|error| io_error(root, error))?;
        let dir = AttemptDir { path: entry.path() };
        let handle = AttemptHandle(entry.file_name().to_string_lossy().into_owned());
        let Ok(spec) = dir.read_spec() else {
            // A start that died before writing its spec left nothing that can run.
            let _ = fs::remove_dir_all(&dir.path);
            continue;
        };
        let state = if !dir.lock().exists() {
            ObservedState::NeverStarted
        } else if shim_alive(&dir)? {
            ObservedState::Running
        } else {
            match (dir.read_exit()?, dir.read_child_pid()?) {
                (Some(record), _) => ObservedState::Finished(outcome_of_record(record)),
                (None, None) => ObservedState::NeverStarted,
                (None, Some(pid)) => {
                    // The shim died on its own; its work may still run without anyone to record it.
                    if getpgid(Some(Pid::from_raw(pid))) == Ok(Pid::from_raw(pid)) {
                        signal_group(pid, Signal::SIGKILL);
                    }
                    ObservedState::Finished(outcome_of_finished(&dir)?)
                }
            }
        };
        listed.push(ListedAttempt {
            handle,
            job_id: spec.job_id,
            attempt_number: spec.attempt_number,
            state,
        });
    }
    Ok(listed)
}

fn join_error(error: tokio::task::JoinError) -> ExecutorError {
    ExecutorError::Unavailable {
        reason: format!("executor task failed: {error}"),
    }
}
