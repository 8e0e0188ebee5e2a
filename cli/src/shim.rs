//! `batchctl-shim DIR --lock-fd N`: the supervising process of one process-executor attempt (see
//! `batchctl_executor::process::shim`), started by the server for each attempt, not by people.
//!
//! It is a binary of its own, beside `batchctl`, because one starts for every attempt: loading
//! the whole `batchctl` (HTTP server, database and container clients) took more CPU than the
//! rest of a trivial attempt's start, nearly all of it in the dynamic loader's relocations.
//! `batchctl shim` does the same for installations that have only the main binary.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (dir, lock_fd) = match arguments.as_slice() {
        [dir, flag, fd] if flag == "--lock-fd" => match fd.parse::<i32>() {
            Ok(fd) => (PathBuf::from(dir), fd),
            Err(_) => return usage(&format!("--lock-fd {fd:?} is not a descriptor number")),
        },
        _ => return usage("expected an attempt directory and --lock-fd N"),
    };
    match batchctl_executor::process::shim::run(&dir, lock_fd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("batchctl-shim: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!(
        "batchctl-shim: {problem}\nusage: batchctl-shim DIR --lock-fd N (started by `batchctl server`)"
    );
    ExitCode::from(2)
}
