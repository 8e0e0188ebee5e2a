//! What a restarted (or newly leading) dispatcher does with each job the store says is STARTING or
//! RUNNING, given what its executor reports of the attempt. Pure.

use crate::contract::ObservedState;
use crate::model::JobStatus;

/// The plan for one active job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileAction {
    /// The executor holds the attempt (running, or finished while no one watched): supervise it
    /// again. `confirmed_running` when the store had already recorded it RUNNING.
    Adopt { confirmed_running: bool },
    /// The attempt never began: the job goes back to RUNNABLE, no attempt spent.
    Requeue { reason: &'static str },
    /// A RUNNING job whose work the executor no longer knows: retrying could run it twice, so the
    /// attempt fails with this reason, whatever the retry strategy.
    FailLost { reason: &'static str },
    /// Not an active job: nothing to do.
    Leave,
}

pub const REQUEUED_REASON: &str = "requeued: the scheduler restarted before the attempt started";
pub const LOST_REASON: &str =
    "Attempt lost: the executor has no record of the attempt after the scheduler restarted";

/// `observed` is what the executor listed for the job's current attempt (`None`: not listed).
pub fn reconcile_action(observed: Option<&ObservedState>, status: JobStatus) -> ReconcileAction {
    let held = matches!(
        observed,
        Some(ObservedState::Running | ObservedState::Finished(_))
    );
    match status {
        JobStatus::Starting | JobStatus::Running if held => ReconcileAction::Adopt {
            confirmed_running: status == JobStatus::Running,
        },
        JobStatus::Starting => ReconcileAction::Requeue {
            reason: REQUEUED_REASON,
        },
        JobStatus::Running => ReconcileAction::FailLost {
            reason: LOST_REASON,
        },
        JobStatus::Submitted
        | JobStatus::Pending
        | JobStatus::Runnable
        | JobStatus::Succeeded
        | JobStatus::Failed => ReconcileAction::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::AttemptOutcome;

    #[test]
    fn each_active_job_is_adopted_requeued_or_failed_by_what_the_executor_holds() {
        let finished = ObservedState::Finished(AttemptOutcome::Exited {
            exit_code: 0,
            signal: None,
        });
        use JobStatus::{Running, Starting, Succeeded};
        use ReconcileAction::*;
        let cases = [
            (
                Some(&ObservedState::Running),
                Starting,
                Adopt {
                    confirmed_running: false,
                },
            ),
            (
                Some(&ObservedState::Running),
                Running,
                Adopt {
                    confirmed_running: true,
                },
            ),
            (
                Some(&finished),
                Running,
                Adopt {
                    confirmed_running: true,
                },
            ),
            (
                Some(&finished),
                Starting,
                Adopt {
                    confirmed_running: false,
                },
            ),
            (
                Some(&ObservedState::NeverStarted),
                Starting,
                Requeue {
                    reason: REQUEUED_REASON,
                },
            ),
            (
                None,
                Starting,
                Requeue {
                    reason: REQUEUED_REASON,
                },
            ),
            (
                Some(&ObservedState::NeverStarted),
                Running,
                FailLost {
                    reason: LOST_REASON,
                },
            ),
            (
                None,
                Running,
                FailLost {
                    reason: LOST_REASON,
                },
            ),
            (Some(&ObservedState::Running), Succeeded, Leave),
        ];
        for (observed, status, expected) in cases {
            assert_eq!(
                reconcile_action(observed, status),
                expected,
                "{observed:?} {status:?}"
            );
        }
    }
}
