//! Cancel and terminate, decided: what a stop request does to a job in a given status. The states
//! a job can be cancelled from come from the state machine, not from a list of their own. Pure.

use crate::model::JobStatus;
use crate::state_machine::{transition, JobEvent};

/// Cancel stops a job that has not started; terminate also stops the work of one that has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Cancel,
    Terminate,
}

/// What to do for a stop request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAction {
    /// Move the job `from` → `to` (cancelled) now.
    Cancel { from: JobStatus, to: JobStatus },
    /// Ask the dispatcher to stop the work; the job ends when its attempt does.
    RequestStop,
    /// Nothing to stop: the job has ended.
    AlreadyFinished,
    /// A cancel of a job whose work has started: only terminate stops it.
    AlreadyStarted,
}

pub fn stop_action(status: JobStatus, mode: StopMode) -> StopAction {
    if let Ok(to) = transition(status, JobEvent::Cancelled) {
        return StopAction::Cancel { from: status, to };
    }
    match (status, mode) {
        (JobStatus::Succeeded | JobStatus::Failed, _) => StopAction::AlreadyFinished,
        (JobStatus::Starting | JobStatus::Running, StopMode::Terminate) => StopAction::RequestStop,
        (JobStatus::Starting | JobStatus::Running, StopMode::Cancel) => StopAction::AlreadyStarted,
        // The state machine cancels these; were that to change, a stop would find nothing to do.
        (JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable, _) => {
            StopAction::AlreadyStarted
        }
    }
}

/// Every (from, to) a cancel moves a job through: the statuses the state machine cancels from.
pub fn cancellable_moves() -> Vec<(JobStatus, JobStatus)> {
    JobStatus::ALL
        .into_iter()
        .filter_map(|from| {
            transition(from, JobEvent::Cancelled)
                .ok()
                .map(|to| (from, to))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn a_stop_cancels_what_has_not_started_and_terminates_what_has() {
        let cases = [
            (
                Submitted,
                StopMode::Cancel,
                StopAction::Cancel {
                    from: Submitted,
                    to: Failed,
                },
            ),
            (
                Pending,
                StopMode::Terminate,
                StopAction::Cancel {
                    from: Pending,
                    to: Failed,
                },
            ),
            (
                Runnable,
                StopMode::Cancel,
                StopAction::Cancel {
                    from: Runnable,
                    to: Failed,
                },
            ),
            (Starting, StopMode::Cancel, StopAction::AlreadyStarted),
            (Running, StopMode::Cancel, StopAction::AlreadyStarted),
            (Starting, StopMode::Terminate, StopAction::RequestStop),
            (Running, StopMode::Terminate, StopAction::RequestStop),
            (Succeeded, StopMode::Terminate, StopAction::AlreadyFinished),
            (Failed, StopMode::Cancel, StopAction::AlreadyFinished),
        ];
        for (status, mode, expected) in cases {
            assert_eq!(stop_action(status, mode), expected, "{status:?} {mode:?}");
        }
        assert_eq!(
            cancellable_moves(),
            [(Submitted, Failed), (Pending, Failed), (Runnable, Failed)]
        );
    }
}
