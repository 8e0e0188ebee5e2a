//! The one state machine: every job transition in batchctl is decided here, and nowhere else.
//! The store applies the result with compare-and-set on the status it was computed from.

use super::model::{JobSpec, JobStatus};

/// Something that happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// The scheduler took the submitted job in.
    Admitted,
    /// Everything the job waits for has succeeded (with no dependencies, at once).
    DependenciesSatisfied,
    /// A job it depends on failed, so it never can run.
    DependencyFailed,
    /// The dispatcher reserved capacity for an attempt in a compute environment.
    Placed,
    /// The attempt could not be handed to the executor (unreachable, or it never began); the job
    /// goes back to the queue without spending an attempt.
    StartDeferred,
    /// The executor confirmed the attempt's work is running.
    Started,
    /// The attempt's work ended, and the retry policy judged it.
    AttemptEnded(Verdict),
    /// Someone cancelled the job before it was placed.
    Cancelled,
    /// Every child of this array job has finished. An array parent never runs itself: it waits
    /// PENDING while its children run, as in AWS Batch.
    ArrayChildrenEnded(ArrayOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayOutcome {
    AllSucceeded,
    SomeFailed,
}

/// The retry policy's judgement of an ended attempt (see `crate::retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Retry,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job that is {from} cannot take the event {event:?}")]
pub struct TransitionError {
    pub from: JobStatus,
    pub event: JobEvent,
}

/// The next status of a job in `from` when `event` happens.
pub fn transition(from: JobStatus, event: JobEvent) -> Result<JobStatus, TransitionError> {
    use JobEvent as E;
    use JobStatus as S;
    let refused = Err(TransitionError { from, event });
    match from {
        S::Submitted => match event {
            E::Admitted => Ok(S::Pending),
            E::Cancelled => Ok(S::Failed),
            E::DependenciesSatisfied
            | E::ArrayChildrenEnded(_)
            | E::DependencyFailed
            | E::Placed
            | E::StartDeferred
            | E::Started
            | E::AttemptEnded(_) => refused,
        },
        S::Pending => match event {
            E::DependenciesSatisfied => Ok(S::Runnable),
            E::DependencyFailed | E::Cancelled => Ok(S::Failed),
            E::ArrayChildrenEnded(ArrayOutcome::AllSucceeded) => Ok(S::Succeeded),
            E::ArrayChildrenEnded(ArrayOutcome::SomeFailed) => Ok(S::Failed),
            E::Admitted | E::Placed | E::StartDeferred | E::Started | E::AttemptEnded(_) => refused,
        },
        S::Runnable => match event {
            E::Placed => Ok(S::Starting),
            E::Cancelled => Ok(S::Failed),
            E::ArrayChildrenEnded(_)
            | E::Admitted
            | E::DependenciesSatisfied
            | E::DependencyFailed
            | E::StartDeferred
            | E::Started
            | E::AttemptEnded(_) => refused,
        },
        S::Starting => match event {
            E::Started => Ok(S::Running),
            E::StartDeferred => Ok(S::Runnable),
            E::AttemptEnded(verdict) => Ok(after_attempt(verdict)),
            E::Admitted
            | E::DependenciesSatisfied
            | E::DependencyFailed
            | E::Placed
            | E::ArrayChildrenEnded(_)
            | E::Cancelled => refused,
        },
        S::Running => match event {
            E::AttemptEnded(verdict) => Ok(after_attempt(verdict)),
            E::Admitted
            | E::DependenciesSatisfied
            | E::DependencyFailed
            | E::Placed
            | E::StartDeferred
            | E::Started
            | E::ArrayChildrenEnded(_)
            | E::Cancelled => refused,
        },
        S::Succeeded | S::Failed => match event {
            E::Admitted
            | E::DependenciesSatisfied
            | E::DependencyFailed
            | E::Placed
            | E::StartDeferred
            | E::Started
            | E::AttemptEnded(_)
            | E::ArrayChildrenEnded(_)
            | E::Cancelled => refused,
        },
    }
}

/// The status a new job is stored in. A job with nothing to wait for (no dependencies, not an
/// array, whose parent waits for its children) is admitted as it is stored: it is SUBMITTED,
/// admitted and has its (no) dependencies satisfied in the submit's own write, which is committed
/// before the submit is acknowledged, as the dispatcher's admission would have been. So the
/// dispatcher never rewrites its row only to admit it. Any other job is stored SUBMITTED, and
/// the dispatcher admits it (`dispatcher::admission`), where what it waits for is known.
pub fn status_at_submit(spec: &JobSpec) -> JobStatus {
    let waits = !spec.depends_on.is_empty()
        || spec.array_size.is_some()
        || spec.array_max_concurrency.is_some();
    match waits {
        true => JobStatus::Submitted,
        // Should the table above ever refuse these, the job is stored SUBMITTED and admitted
        // by the dispatcher as before: never a status the state machine did not give.
        false => transition(JobStatus::Submitted, JobEvent::Admitted)
            .and_then(|pending| transition(pending, JobEvent::DependenciesSatisfied))
            .unwrap_or(JobStatus::Submitted),
    }
}

fn after_attempt(verdict: Verdict) -> JobStatus {
    match verdict {
        Verdict::Succeeded => JobStatus::Succeeded,
        Verdict::Retry => JobStatus::Runnable,
        Verdict::Failed => JobStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobEvent as E;
    use JobStatus as S;

    const ALL_EVENTS: [JobEvent; 12] = [
        E::Admitted,
        E::DependenciesSatisfied,
        E::DependencyFailed,
        E::Placed,
        E::StartDeferred,
        E::Started,
        E::AttemptEnded(Verdict::Succeeded),
        E::AttemptEnded(Verdict::Retry),
        E::AttemptEnded(Verdict::Failed),
        E::Cancelled,
        E::ArrayChildrenEnded(ArrayOutcome::AllSucceeded),
        E::ArrayChildrenEnded(ArrayOutcome::SomeFailed),
    ];

    /// Every allowed transition; anything not listed must be refused.
    const ALLOWED: [(JobStatus, JobEvent, JobStatus); 17] = [
        (S::Submitted, E::Admitted, S::Pending),
        (S::Submitted, E::Cancelled, S::Failed),
        (S::Pending, E::DependenciesSatisfied, S::Runnable),
        (S::Pending, E::Cancelled, S::Failed),
        (S::Pending, E::DependencyFailed, S::Failed),
        (
            S::Pending,
            E::ArrayChildrenEnded(ArrayOutcome::AllSucceeded),
            S::Succeeded,
        ),
        (
            S::Pending,
            E::ArrayChildrenEnded(ArrayOutcome::SomeFailed),
            S::Failed,
        ),
        (S::Runnable, E::Placed, S::Starting),
        (S::Runnable, E::Cancelled, S::Failed),
        (S::Starting, E::Started, S::Running),
        (S::Starting, E::StartDeferred, S::Runnable),
        (
            S::Starting,
            E::AttemptEnded(Verdict::Succeeded),
            S::Succeeded,
        ),
        (S::Starting, E::AttemptEnded(Verdict::Retry), S::Runnable),
        (S::Starting, E::AttemptEnded(Verdict::Failed), S::Failed),
        (
            S::Running,
            E::AttemptEnded(Verdict::Succeeded),
            S::Succeeded,
        ),
        (S::Running, E::AttemptEnded(Verdict::Retry), S::Runnable),
        (S::Running, E::AttemptEnded(Verdict::Failed), S::Failed),
    ];

    /// A job with nothing to wait for is stored admitted; anything that waits is admitted by
    /// the dispatcher, which knows what it waits for.
    #[test]
    fn only_jobs_with_nothing_to_wait_for_are_stored_runnable() {
        use crate::model::{Dependency, DependencyKind, JobId, Resources};
        let plain = crate::why::tests::job(S::Submitted, Resources::default()).spec;
        let dependency = Dependency {
            job_id: Some(JobId("other".into())),
            kind: DependencyKind::Whole,
            condition: Default::default(),
        };
        let cases = [
            ("plain", plain.clone(), S::Runnable),
            (
                "with a dependency",
                JobSpec {
                    depends_on: vec![dependency],
                    ..plain.clone()
                },
                S::Submitted,
            ),
            (
                "an array",
                JobSpec {
                    array_size: Some(10),
                    ..plain.clone()
                },
                S::Submitted,
            ),
            (
                "a capped array",
                JobSpec {
                    array_size: Some(10),
                    array_max_concurrency: Some(2),
                    ..plain
                },
                S::Submitted,
            ),
        ];
        for (name, spec, expected) in cases {
            assert_eq!(status_at_submit(&spec), expected, "{name}");
        }
    }

    #[test]
    fn every_state_and_event_pair_is_allowed_exactly_as_listed() {
        for from in JobStatus::ALL {
            for event in ALL_EVENTS {
                let expected = ALLOWED
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match expected {
                    Some(to) => assert_eq!(transition(from, event), Ok(to), "{from} + {event:?}"),
                    None => assert_eq!(
                        transition(from, event),
                        Err(TransitionError { from, event }),
                        "{from} + {event:?} must be refused"
                    ),
                }
            }
        }
    }

    #[test]
    fn terminal_states_take_no_event() {
        for event in ALL_EVENTS {
            assert!(transition(S::Succeeded, event).is_err());
            assert!(transition(S::Failed, event).is_err());
        }
    }

    #[test]
    fn refusals_say_what_was_refused() {
        let error = transition(S::Running, E::Cancelled).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a job that is RUNNING cannot take the event Cancelled"
        );
    }
}
