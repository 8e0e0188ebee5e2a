//! A container's output as log chunks, resumable from a byte offset into the engine's log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use futures::stream::{BoxStream, StreamExt};

use super::classify;
use crate::{ExecutorError, LogChunk, LogCursor, OutputStream};

/// The container's output after byte `from` of its log, counting bytes into `offset`.
pub(super) fn log_chunks(
    docker: &Docker,
    name: &str,
    follow: bool,
    from: LogCursor,
    offset: Arc<AtomicU64>,
) -> BoxStream<'static, Result<LogChunk, ExecutorError>> {
    let options = LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        tail: "all".into(),
        ..LogsOptions::default()
    };
    docker
        .logs(name, Some(options))
        .filter_map(move |item| {
            let chunk = match item {
                Err(error) => Some(Err(classify(error))),
                Ok(output) => {
                    let (stream, message) = match output {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            (OutputStream::Stdout, message)
                        }
                        LogOutput::StdErr { message } => (OutputStream::Stderr, message),
                        LogOutput::StdIn { .. } => return futures::future::ready(None),
                    };
                    let start = offset.fetch_add(message.len() as u64, Ordering::AcqRel);
                    let end = start + message.len() as u64;
                    // Skip what was collected before; a chunk may straddle the cursor.
                    (end > from.0).then(|| {
                        let skip = from.0.saturating_sub(start) as usize;
                        Ok(LogChunk {
                            stream,
                            data: message.slice(skip..),
                            next: LogCursor(end),
                        })
                    })
                }
            };
            futures::future::ready(chunk)
        })
        .boxed()
}
