//! The files of one attempt's directory, shared by the server side and the shim.
//!
//! ```text
//! <root>/<attempt_id>/spec.json    what to run, written by the server before the shim starts
//! <root>/<attempt_id>/lock         flock held by the shim for its whole life
//! <root>/<attempt_id>/child.pid    the work's pid (= its process group), written once it started
//! <root>/<attempt_id>/output.log   stdout and stderr, framed (see `Frame`)
//! <root>/<attempt_id>/exit.json    how the work ended, written atomically before the shim exits
//! <root>/<attempt_id>/work/        the default working directory
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{AttemptSpec, ExecutorError, OutputStream};

#[derive(Debug, Clone)]
pub struct AttemptDir {
    pub path: PathBuf,
}

/// How the shim saw the work end. Kept separate from `AttemptOutcome` because it is an on-disk format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Set when the work could not be started at all.
    pub start_error: Option<String>,
}

impl AttemptDir {
    pub fn new(root: &Path, attempt_id: &str) -> AttemptDir {
        AttemptDir {
            path: root.join(attempt_id),
        }
    }

    pub fn spec(&self) -> PathBuf {
        self.path.join("spec.json")
    }
    pub fn lock(&self) -> PathBuf {
        self.path.join("lock")
    }
    pub fn child_pid(&self) -> PathBuf {
        self.path.join("child.pid")
    }
    pub fn output(&self) -> PathBuf {
        self.path.join("output.log")
    }
    pub fn exit(&self) -> PathBuf {
        self.path.join("exit.json")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.path.join("shim.log")
    }
    /// Who the work runs as and where (`WorkUser`), when not the server's own user.
    pub fn run_as(&self) -> PathBuf {
        self.path.join("run-as.json")
    }

    pub fn read_run_as(&self) -> Result<Option<WorkUser>, ExecutorError> {
        if !self.run_as().exists() {
            return Ok(None);
        }
        read_json(&self.run_as()).map(Some)
    }

    pub fn read_spec(&self) -> Result<AttemptSpec, ExecutorError> {
        read_json(&self.spec())
    }

    /// `None` while the work has not recorded an exit (still running, or lost).
    pub fn read_exit(&self) -> Result<Option<ExitRecord>, ExecutorError> {
        match fs::metadata(self.exit()) {
            Ok(_) => read_json(&self.exit()).map(Some),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&self.exit(), error)),
        }
    }

    pub fn read_child_pid(&self) -> Result<Option<i32>, ExecutorError> {
        match fs::read_to_string(self.child_pid()) {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ExecutorError::CorruptRecord {
                    path: self.child_pid().display().to_string(),
                    reason: format!("not a pid: {text:?}"),
                }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&self.child_pid(), error)),
        }
    }
}

/// Writes `value` as JSON so that readers see either the old file or the whole new one. Not
/// flushed to the disk: for records that matter only while the machine runs (what to run, the
/// work's pid), which a server `kill -9` leaves intact in the page cache.
pub fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_json(path, value, false)
}

/// As `write_json_atomically`, and on the disk before it returns: for the exit record, the
/// outcome of work that has already run.
pub fn write_json_durably<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_json(path, value, true)
}

fn write_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(value).map_err(io::Error::other)?)?;
    if durable {
        file.sync_all()?;
    }
    fs::rename(&temporary, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ExecutorError> {
    let bytes = fs::read(path).map_err(|error| io_error(path, error))?;
    serde_json::from_slice(&bytes).map_err(|error| ExecutorError::CorruptRecord {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

pub fn io_error(path: &Path, source: io::Error) -> ExecutorError {
    ExecutorError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One record of `output.log`: a stream tag byte (1 stdout, 2 stderr), a big-endian u32 length, then
/// the bytes. Framing keeps the two streams apart in one file whose byte offset is the log cursor.
pub struct Frame;

impl Frame {
    pub const HEADER_LEN: usize = 5;
    /// Larger reads are split, so a reader never needs more than this in memory for one record.
    pub const MAX_DATA_LEN: usize = 64 * 1024;

    pub fn encode(stream: OutputStream, data: &[u8]) -> Vec<u8> {
        let mut record = Vec::with_capacity(Self::HEADER_LEN + data.len());
        record.push(match stream {
            OutputStream::Stdout => 1,
            OutputStream::Stderr => 2,
        });
        record.extend_from_slice(&(data.len() as u32).to_be_bytes());
        record.extend_from_slice(data);
        record
    }

    /// Decodes the record at the start of `buffer`: `Ok(None)` when the buffer holds only part of it.
    pub fn decode(buffer: &[u8]) -> Result<Option<(OutputStream, &[u8])>, String> {
        if buffer.len() < Self::HEADER_LEN {
            return Ok(None);
        }
        let stream = match buffer[0] {
            1 => OutputStream::Stdout,
            2 => OutputStream::Stderr,
            other => return Err(format!("unknown stream tag {other}")),
        };
        let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if length > Self::MAX_DATA_LEN {
            return Err(format!("record of {length} bytes exceeds the frame limit"));
        }
        Ok(buffer
            .get(Self::HEADER_LEN..Self::HEADER_LEN + length)
            .map(|data| (stream, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_report_partial_records() {
        let mut buffer = Frame::encode(OutputStream::Stdout, b"hello");
        buffer.extend(Frame::encode(OutputStream::Stderr, &[0xff, 0x00, 0xfe]));
        let (stream, data) = Frame::decode(&buffer).unwrap().unwrap();
        assert_eq!((stream, data), (OutputStream::Stdout, &b"hello"[..]));
        let rest = &buffer[Frame::HEADER_LEN + 5..];
        let (stream, data) = Frame::decode(rest).unwrap().unwrap();
        assert_eq!(
            (stream, data),
            (OutputStream::Stderr, &[0xff, 0x00, 0xfe][..])
        );
        assert_eq!(Frame::decode(&rest[..6]).unwrap(), None);
        assert_eq!(Frame::decode(&rest[..2]).unwrap(), None);
        assert!(Frame::decode(&[9, 0, 0, 0, 0]).is_err());
    }
}

/// The user an attempt's work runs as, and the working directory made for it: outside the data
/// directory, whose ancestors (`/root`, say) that user may not be able to enter, and which holds
/// what the user must not read (other attempts' specs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkUser {
    #[serde(flatten)]
    pub run_as: RunAs,
    pub work_dir: PathBuf,
}

/// A user and group the process backend runs work as: a server running as root runs attempts
/// as an unprivileged user, as Nomad's `raw_exec` advice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `NAME` (a user of this machine, with its primary group) or `UID[:GID]`.
    pub fn resolve(text: &str) -> Result<RunAs, String> {
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        let (uid, primary_gid) = match user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => {
                let found = nix::unistd::User::from_name(user)
                    .map_err(|error| format!("cannot look up user {user:?}: {error}"))?
                    .ok_or_else(|| format!("there is no user {user:?} on this machine"))?;
                (found.uid.as_raw(), Some(found.gid.as_raw()))
            }
        };
        let gid = match group {
            Some(group) => group
                .parse::<u32>()
                .map_err(|_| format!("{group:?} is not a numeric group id"))?,
            None => primary_gid.unwrap_or(uid),
        };
        Ok(RunAs { uid, gid })
    }
}
