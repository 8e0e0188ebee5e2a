//! Runs each attempt as a local process group under a supervising shim (`batchctl shim`).
//!
//! Invariants:
//! - The attempt's lock is held from before the shim is spawned until after its exit record is
//!   written, so "lock free" means "no shim alive" without any pid-reuse race.
//! - A kill signals the work's process group, never a pid whose shim is gone.
//! - The image is ignored: the command runs on the host, in `work/` of the attempt directory unless
//!   the spec names a working directory.

pub mod layout;
pub mod shim;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgid, Pid};

use crate::{
    AttemptHandle, AttemptOutcome, AttemptSpec, EnvironmentVariable, Executor, ExecutorError,
    ListedAttempt, LogChunk, LogCursor, ObservedState,
};
pub use layout::RunAs;
use layout::{io_error, write_json_atomically, AttemptDir, ExitRecord, Frame, WorkUser};

/// How often a follower of a running attempt's output looks for more.
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Variables a host process needs to find programs; passed through unless the job sets them.
const INHERITED_VARIABLES: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

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
}

impl ProcessExecutor {
    pub fn new(config: ProcessExecutorConfig) -> Result<ProcessExecutor, ExecutorError> {
        fs::create_dir_all(&config.root).map_err(|error| io_error(&config.root, error))?;
        Ok(ProcessExecutor { config })
    }

    fn dir(&self, handle: &AttemptHandle) -> AttemptDir {
        AttemptDir::new(&self.config.root, &handle.0)
    }

    fn spawn_shim(&self, dir: &AttemptDir) -> Result<(), ExecutorError> {
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
        let lock_fd = lock.as_raw_fd();
        let mut command = tokio::process::Command::new(&self.config.shim_program);
        command
            .args(&self.config.shim_arguments)
            .arg(&dir.path)
            .arg("--lock-fd")
            .arg(lock_fd.to_string())
            .stdin(Stdio::null())
            .stdout(shim_log)
            .stderr(shim_log_err);
        // SAFETY: between fork and exec only async-signal-safe calls are made (setsid, fcntl).
        unsafe {
            command.pre_exec(move || {
                // A session of its own: the shim survives the server and its terminal.
                nix::unistd::setsid().map_err(io::Error::from)?;
                fcntl(lock_fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(io::Error::from)?;
                Ok(())
            });
        }
        // The child handle is dropped: tokio reaps the shim when it exits, and `wait` learns of the
        // exit through the lock, which works the same for shims started before a restart.
        command
            .spawn()
            .map_err(|error| ExecutorError::Unavailable {
                reason: format!(
                    "cannot start the shim {}: {error}",
                    self.config.shim_program.display()
                ),
            })?;
        Ok(())
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    async fn start(&self, spec: &AttemptSpec) -> Result<AttemptHandle, ExecutorError> {
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
            this.spawn_shim(&dir)
        })
        .await
        .map_err(join_error)??;
        Ok(handle)
    }

    async fn wait(&self, handle: &AttemptHandle) -> Result<AttemptOutcome, ExecutorError> {
        let dir = self.dir(handle);
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

fn with_inherited_variables(mut spec: AttemptSpec) -> AttemptSpec {
    for name in INHERITED_VARIABLES {
        let set_by_job = spec.environment.iter().any(|v| v.name == name);
        if let (false, Ok(value)) = (set_by_job, std::env::var(name)) {
            spec.environment.insert(
                0,
                EnvironmentVariable {
                    name: name.to_string(),
                    value,
                },
            );
        }
    }
    spec
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

/// The outcome of an attempt whose shim is gone.
fn outcome_of_finished(dir: &AttemptDir) -> Result<AttemptOutcome, ExecutorError> {
    Ok(match dir.read_exit()? {
        Some(record) => outcome_of_record(record),
        None => AttemptOutcome::Lost {
            reason: "the attempt's supervising process ended without recording an exit status"
                .into(),
        },
    })
}

fn outcome_of_record(record: ExitRecord) -> AttemptOutcome {
    match (record.start_error, record.exit_code, record.signal) {
        (Some(reason), _, _) => AttemptOutcome::StartFailed {
            reason: format!("CannotStartContainerError: {reason}"),
        },
        (None, Some(exit_code), _) => AttemptOutcome::Exited {
            exit_code,
            signal: None,
        },
        // A process killed by signal N reports 128 + N, as shells and container runtimes do.
        (None, None, Some(signal)) => AttemptOutcome::Exited {
            exit_code: 128 + signal,
            signal: Some(signal),
        },
        (None, None, None) => AttemptOutcome::Lost {
            reason: "the exit record holds neither an exit code nor a signal".into(),
        },
    }
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

/// Reads `output.log` from an offset, following it while the shim lives.
struct OutputFollower {
    dir: AttemptDir,
    offset: u64,
    buffer: Vec<u8>,
    pending: std::collections::VecDeque<LogChunk>,
    finished: bool,
}

impl OutputFollower {
    async fn next(&mut self) -> Option<Result<LogChunk, ExecutorError>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(chunk));
            }
            if self.finished {
                return None;
            }
            // Decide whether the attempt is over *before* reading, so that a final read after the
            // shim is gone sees everything it wrote.
            let over = match shim_alive(&self.dir) {
                Ok(alive) => !alive,
                Err(ExecutorError::UnknownAttempt { .. }) => true,
                Err(error) => return Some(Err(error)),
            };
            match self.read_available() {
                Ok(0) if over => self.finished = true,
                Ok(0) => tokio::time::sleep(LOG_POLL_INTERVAL).await,
                Ok(_) => {}
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// Reads what is in the file past the offset and decodes every whole record into `pending`.
    fn read_available(&mut self) -> Result<usize, ExecutorError> {
        let path = self.dir.output();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(io_error(&path, error)),
        };
        let read_from = self.offset + self.buffer.len() as u64;
        file.seek(SeekFrom::Start(read_from))
            .map_err(|error| io_error(&path, error))?;
        let n = file
            .take(4 * Frame::MAX_DATA_LEN as u64)
            .read_to_end(&mut self.buffer)
            .map_err(|error| io_error(&path, error))?;
        let mut consumed = 0;
        while let Some((stream, data)) =
            Frame::decode(&self.buffer[consumed..]).map_err(|r| ExecutorError::CorruptRecord {
                path: path.display().to_string(),
                reason: r,
            })?
        {
            consumed += Frame::HEADER_LEN + data.len();
            self.pending.push_back(LogChunk {
                stream,
                data: Bytes::copy_from_slice(data),
                next: LogCursor(self.offset + consumed as u64),
            });
        }
        self.buffer.drain(..consumed);
        self.offset += consumed as u64;
        Ok(n)
    }
}
