//! The supervising process of one attempt (`batchctl shim DIR --lock-fd N`), in the spirit of a
//! container runtime's shim: it outlives the server, so work keeps running and its exit status is
//! recorded across a server restart or crash.
//!
//! It inherits the attempt's lock from the server already held, so the lock is held continuously
//! from before the shim exists until after `exit.json` is written. Whoever can take the lock knows
//! that no shim is alive for this attempt.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::prctl;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
use nix::unistd::Pid;

use super::layout::{write_json_atomically, write_json_durably, AttemptDir, ExitRecord, Frame};
use crate::OutputStream;

/// The job's ulimits as `setrlimit` takes them (names were checked when the definition was
/// applied; an unknown one is skipped rather than failing the attempt at this late point).
fn rlimits(
    ulimits: &[batchctl_core::linux::Ulimit],
) -> Vec<(nix::sys::resource::Resource, u64, u64)> {
    use nix::sys::resource::Resource;
    ulimits
        .iter()
        .filter_map(|ulimit| {
            let resource = match ulimit.name.as_str() {
                "core" => Resource::RLIMIT_CORE,
                "cpu" => Resource::RLIMIT_CPU,
                "data" => Resource::RLIMIT_DATA,
                "fsize" => Resource::RLIMIT_FSIZE,
                "locks" => Resource::RLIMIT_LOCKS,
                "memlock" => Resource::RLIMIT_MEMLOCK,
                "msgqueue" => Resource::RLIMIT_MSGQUEUE,
                "nice" => Resource::RLIMIT_NICE,
                "nofile" => Resource::RLIMIT_NOFILE,
                "nproc" => Resource::RLIMIT_NPROC,
                "rss" => Resource::RLIMIT_RSS,
                "rtprio" => Resource::RLIMIT_RTPRIO,
                "rttime" => Resource::RLIMIT_RTTIME,
                "sigpending" => Resource::RLIMIT_SIGPENDING,
                "stack" => Resource::RLIMIT_STACK,
                _ => return None,
            };
            Some((resource, ulimit.soft_limit as u64, ulimit.hard_limit as u64))
        })
        .collect()
}

/// Runs the attempt in `dir` to completion. `lock_fd` is the inherited descriptor of `dir/lock`,
/// locked by the server; it stays open (and so locked) until this function returns.
pub fn run(dir: &Path, lock_fd: RawFd) -> io::Result<()> {
    // SAFETY: the server passes a descriptor it opened for us and that nothing else in this process
    // owns; taking ownership keeps the lock alive exactly as long as this File.
    let lock = unsafe { File::from_raw_fd(lock_fd) };
    // The work must not inherit the lock: if it outlived the shim it would look alive forever.
    fcntl(lock_fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;

    // Orphans of the work are re-parented to the shim instead of to PID 1, so the shim can stop and
    // reap everything the attempt started, as a container runtime does when a container's main
    // process exits.
    prctl::set_child_subreaper(true).map_err(io::Error::from)?;

    let attempt = AttemptDir {
        path: dir.to_path_buf(),
    };
    let spec = attempt
        .read_spec()
        .map_err(|error| io::Error::other(error.to_string()))?;
    let run_as = attempt
        .read_run_as()
        .map_err(|error| io::Error::other(error.to_string()))?;
    let working_dir = match (&spec.working_dir, &run_as) {
        (Some(dir), _) => dir.into(),
        (None, Some(user)) => user.work_dir.clone(),
        (None, None) => {
            fs::create_dir_all(attempt.work())?;
            attempt.work()
        }
    };
    let Some((program, arguments)) = spec.command.split_first() else {
        return record_exit(&attempt, start_failure("the command is empty".into()), lock);
    };

    let mut command = Command::new(program);
    if let Some(user) = &run_as {
        // std drops supplementary groups too when a root parent sets the uid.
        command.uid(user.run_as.uid).gid(user.run_as.gid);
    }
    command
        .args(arguments)
        .env_clear()
        .envs(spec.environment.iter().map(|v| (&v.name, &v.value)))
        .envs(spec.secrets.iter().map(|v| (&v.name, v.value.expose())))
        .current_dir(&working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches everything the work started.
        .process_group(0);
    let limits = rlimits(&spec.linux.ulimits);
    // SAFETY: between fork and exec only `setrlimit`, a system call, runs: nothing allocates or
    // takes a lock.
    unsafe {
        command.pre_exec(move || {
            for (resource, soft, hard) in &limits {
                nix::sys::resource::setrlimit(*resource, *soft, *hard).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let reason = format!("cannot run {program:?}: {error}");
            return record_exit(&attempt, start_failure(reason), lock);
        }
    };
    write_json_atomically(&attempt.child_pid(), &child.id())?;

    let output = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(attempt.output())?,
    ));
    let pumps = [
        child
            .stdout
            .take()
            .map(|pipe| pump(pipe, OutputStream::Stdout, Arc::clone(&output))),
        child
            .stderr
            .take()
            .map(|pipe| pump(pipe, OutputStream::Stderr, Arc::clone(&output))),
    ];
    let status = wait_for_attempt(&mut child)?;
    for pump in pumps.into_iter().flatten() {
        // A pump fails only if the output file cannot be written; the exit status still matters more.
        if let Ok(Err(error)) = pump.join() {
            eprintln!("batchctl shim: output lost: {error}");
        }
    }
    let record = ExitRecord {
        exit_code: status.code(),
        signal: status.signal(),
        start_error: None,
    };
    record_exit(&attempt, record, lock)
}

/// Waits for the main process and then ends everything else the attempt started: an attempt is
/// over when its main process exits, and nothing of it may keep running (or hold its output pipes
/// open) after its exit is recorded.
fn wait_for_attempt(child: &mut std::process::Child) -> io::Result<std::process::ExitStatus> {
    let pid = Pid::from_raw(child.id() as i32);
    // Observe the exit without reaping: the unreaped main process keeps its pid, and so its process
    // group id, from being reused, so the group kill below reaches only this attempt's processes.
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    // The group may be empty already; that is the outcome wanted.
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child.wait()?;
    stop_and_reap_orphans();
    Ok(status)
}

/// Kills and reaps every remaining child of the shim: processes of the attempt that left its process
/// group and were re-parented here when their parents died. An unreaped child keeps its pid, so the
/// kill cannot reach an unrelated process.
fn stop_and_reap_orphans() {
    loop {
        for orphan in children_of_this_process() {
            let _ = kill(orphan, Signal::SIGKILL);
        }
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) | Err(Errno::EINTR) => continue,
            // ECHILD: nothing is left to reap.
            Err(_) => return,
        }
    }
}

fn children_of_this_process() -> Vec<Pid> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn start_failure(reason: String) -> ExitRecord {
    ExitRecord {
        exit_code: None,
        signal: None,
        start_error: Some(reason),
    }
}

fn record_exit(attempt: &AttemptDir, record: ExitRecord, lock: File) -> io::Result<()> {
    write_json_durably(&attempt.exit(), &record)?;
    drop(lock);
    Ok(())
}

fn pump(
    mut pipe: impl Read + Send + 'static,
    stream: OutputStream,
    output: Arc<Mutex<File>>,
) -> thread::JoinHandle<io::Result<()>> {
    thread::spawn(move || {
        let mut buffer = vec![0u8; Frame::MAX_DATA_LEN];
        loop {
            let n = match pipe.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let record = Frame::encode(stream, &buffer[..n]);
            // One write call per record under the lock keeps records whole and in order.
            let mut file = output
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            file.write_all(&record)?;
        }
    })
}
