//! What an attempt's records say about it: its outcome once the shim is gone.

use super::layout::{AttemptDir, ExitRecord};
use crate::{AttemptOutcome, ExecutorError};

/// The outcome of an attempt whose shim is gone.
pub(super) fn outcome_of_finished(dir: &AttemptDir) -> Result<AttemptOutcome, ExecutorError> {
    Ok(match dir.read_exit()? {
        Some(record) => outcome_of_record(record),
        None => AttemptOutcome::Lost {
            reason: "the attempt's supervising process ended without recording an exit status"
                .into(),
        },
    })
}

pub(super) fn outcome_of_record(record: ExitRecord) -> AttemptOutcome {
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
