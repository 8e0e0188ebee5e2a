//! Judging an ended attempt: succeeded, retry, or failed for good, with the reason a person reads.
//! As AWS Batch: an attempt stopped by terminate or by its timeout is not retried; any other failure
//! is retried while attempts remain, unless the first `evaluateOnExit` rule that matches says EXIT.

use std::time::Duration;

use crate::contract::AttemptOutcome;

use super::model::{Backoff, ExitRule, ResourceAdjustments, RetryAction, RetryPolicy};
use super::state_machine::Verdict;

/// Why the scheduler stopped an attempt, when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    Timeout {
        seconds: u64,
    },
    Terminated {
        reason: String,
    },
    /// Its queue's `stopPolicy` is `HoldAndDrain` (Kueue's): the attempt is stopped and the job
    /// goes back to RUNNABLE in its place, whatever its retry strategy, to run once the hold is
    /// lifted.
    Drained {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// For the attempt's record and the job's `statusReason`.
    pub reason: String,
    pub exit_code: Option<i32>,
    /// A retry that does not spend one of the policy's `attempts` (`RETRY_WITHOUT_COUNT`).
    pub disruption: bool,
    /// On a retry, how the next attempt's requirements grow (the deciding rule's
    /// `resourceAdjustments`).
    pub adjustments: Option<ResourceAdjustments>,
}

/// Where a job stands in its retries: the attempt that ended, and how many earlier ones were
/// disruptions retried without counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptCount {
    pub number: u32,
    pub disruptions: u32,
}

pub fn judge_attempt(
    outcome: &AttemptOutcome,
    stop_cause: Option<&StopCause>,
    count: AttemptCount,
    policy: &RetryPolicy,
) -> Judgement {
    let attempt_number = count.number;
    let exit_code = match outcome {
        AttemptOutcome::Exited { exit_code, .. } => Some(*exit_code),
        AttemptOutcome::OutOfMemory { exit_code } | AttemptOutcome::Stopped { exit_code, .. } => {
            *exit_code
        }
        AttemptOutcome::StartFailed { .. } | AttemptOutcome::Lost { .. } => None,
    };
    let final_failure = |reason: String| Judgement {
        verdict: Verdict::Failed,
        reason,
        exit_code,
        disruption: false,
        adjustments: None,
    };
    match stop_cause {
        Some(StopCause::Terminated { reason }) => return final_failure(reason.clone()),
        Some(StopCause::Drained { reason }) => {
            return Judgement {
                verdict: Verdict::Retry,
                reason: reason.clone(),
                exit_code,
                disruption: false,
                adjustments: None,
            }
        }
        Some(StopCause::Timeout { seconds }) => {
            return final_failure(format!(
                "Job attempt duration exceeded timeout of {seconds} seconds"
            ))
        }
        None => {}
    }
    // The container-level reason (what AWS Batch calls `reason`), when there is one.
    let (failure_reason, container_reason) = match outcome {
        AttemptOutcome::Exited {
            exit_code: 0,
            signal: None,
        } => {
            return Judgement {
                verdict: Verdict::Succeeded,
                reason: "Essential container in task exited".into(),
                exit_code,
                disruption: false,
                adjustments: None,
            }
        }
        AttemptOutcome::Exited {
            exit_code,
            signal: None,
        } => (
            format!("Essential container in task exited with code {exit_code}"),
            String::new(),
        ),
        AttemptOutcome::Exited {
            signal: Some(signal),
            ..
        } => (
            format!("Essential container in task was killed by signal {signal}"),
            String::new(),
        ),
        AttemptOutcome::OutOfMemory { .. } => {
            let reason = "OutOfMemoryError: Container killed due to memory usage".to_string();
            (reason.clone(), reason)
        }
        AttemptOutcome::StartFailed { reason } | AttemptOutcome::Stopped { reason, .. } => {
            (reason.clone(), reason.clone())
        }
        AttemptOutcome::Lost { reason } => {
            let reason = format!("Attempt lost: {reason}");
            (reason.clone(), reason)
        }
    };
    let rule = policy
        .evaluate_on_exit
        .iter()
        .find(|rule| rule_matches(rule, exit_code, &container_reason, &failure_reason));
    let action = rule.map_or(RetryAction::Retry, |rule| rule.action);
    let adjustments = rule.and_then(|rule| rule.resource_adjustments);
    // Attempts spent so far, this one included: disruptions retried without counting are not.
    let spent = attempt_number.saturating_sub(count.disruptions);
    let counted = |reason: String| {
        let retry = spent < policy.attempts;
        Judgement {
            verdict: if retry {
                Verdict::Retry
            } else {
                Verdict::Failed
            },
            reason,
            exit_code,
            disruption: false,
            adjustments: adjustments.filter(|_| retry),
        }
    };
    match action {
        RetryAction::RetryWithoutCount if count.disruptions < policy.max_disruptions => Judgement {
            verdict: Verdict::Retry,
            reason: format!(
                "{failure_reason} (retried without counting: disruption {} of {})",
                count.disruptions + 1,
                policy.max_disruptions
            ),
            exit_code,
            disruption: true,
            adjustments,
        },
        // Past `maxDisruptions`, a disruption counts like any failure.
        RetryAction::Retry | RetryAction::RetryWithoutCount => counted(failure_reason),
        RetryAction::Exit => final_failure(failure_reason),
    }
}

/// Whether every condition a rule sets holds. An attempt without an exit code matches no
/// `onExitCode`.
fn rule_matches(
    rule: &ExitRule,
    exit_code: Option<i32>,
    reason: &str,
    status_reason: &str,
) -> bool {
    let exit_code_matches = match (&rule.on_exit_code, exit_code) {
        (None, _) => true,
        (Some(pattern), Some(code)) => glob_matches(pattern, &code.to_string()),
        (Some(_), None) => false,
    };
    exit_code_matches
        && rule
            .on_reason
            .as_deref()
            .is_none_or(|p| glob_matches(p, reason))
        && rule
            .on_status_reason
            .as_deref()
            .is_none_or(|p| glob_matches(p, status_reason))
}

/// AWS Batch's patterns: the whole string, or with a trailing `*`, any string that starts so.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => pattern == text,
    }
}

/// The wait before retrying after attempt `attempt_number` failed. `jitter` is a number in [0, 1)
/// the caller draws; with jitter on, up to half the delay is taken off by it.
/// What happens when an attempt ends: the judgement, and for a retry with a backoff, the time
/// (epoch milliseconds) before which the job may not start again.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    pub judgement: Judgement,
    pub runnable_after: Option<i64>,
}

/// Decides an ended attempt: `judge_attempt`, then the backoff of a retry counted from
/// `ended_at`. `random` in [0, 1) is the jitter draw, passed in so the decision is a pure
/// function of its arguments.
pub fn decide_attempt_end(
    outcome: &AttemptOutcome,
    stop_cause: Option<&StopCause>,
    count: AttemptCount,
    policy: &RetryPolicy,
    ended_at: i64,
    random: f64,
) -> AttemptEnd {
    let attempt_number = count.number;
    let judgement = judge_attempt(outcome, stop_cause, count, policy);
    let drained = matches!(stop_cause, Some(StopCause::Drained { .. }));
    let runnable_after = match (judgement.verdict, &policy.backoff) {
        (Verdict::Retry, Some(backoff)) if !drained => {
            let delay = retry_delay(backoff, attempt_number, random);
            Some(ended_at + delay.as_millis() as i64)
        }
        (Verdict::Retry | Verdict::Succeeded | Verdict::Failed, _) => None,
    };
    AttemptEnd {
        judgement,
        runnable_after,
    }
}

pub fn retry_delay(backoff: &Backoff, attempt_number: u32, jitter: f64) -> Duration {
    let mut delay = backoff.initial_delay_seconds as f64;
    for _ in 1..attempt_number {
        delay = delay * backoff.factor_percent as f64 / 100.0;
        if delay >= backoff.max_delay_seconds as f64 {
            break;
        }
    }
    let capped = delay.min(backoff.max_delay_seconds as f64);
    let jittered = match backoff.jitter {
        true => capped * (1.0 - jitter.clamp(0.0, 1.0) / 2.0),
        false => capped,
    };
    Duration::from_secs_f64(jittered.max(0.0))
}

/// How an attempt ended, in a few words a metric may carry as a label (`batchctl_attempts_ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndClass {
    Succeeded,
    Failed,
    OutOfMemory,
    StartFailed,
    /// The backend stopped it (a Kubernetes deadline, an eviction).
    Stopped,
    Lost,
    Timeout,
    Terminated,
    Drained,
}

impl EndClass {
    /// What stopped the attempt, if batchctl did; otherwise what the work did.
    pub fn of(outcome: &AttemptOutcome, stop_cause: Option<&StopCause>) -> EndClass {
        match stop_cause {
            Some(StopCause::Timeout { .. }) => return EndClass::Timeout,
            Some(StopCause::Terminated { .. }) => return EndClass::Terminated,
            Some(StopCause::Drained { .. }) => return EndClass::Drained,
            None => {}
        }
        match outcome {
            AttemptOutcome::Exited {
                exit_code: 0,
                signal: None,
            } => EndClass::Succeeded,
            AttemptOutcome::Exited { .. } => EndClass::Failed,
            AttemptOutcome::OutOfMemory { .. } => EndClass::OutOfMemory,
            AttemptOutcome::StartFailed { .. } => EndClass::StartFailed,
            AttemptOutcome::Stopped { .. } => EndClass::Stopped,
            AttemptOutcome::Lost { .. } => EndClass::Lost,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EndClass::Succeeded => "succeeded",
            EndClass::Failed => "failed",
            EndClass::OutOfMemory => "out_of_memory",
            EndClass::StartFailed => "start_failed",
            EndClass::Stopped => "stopped",
            EndClass::Lost => "lost",
            EndClass::Timeout => "timeout",
            EndClass::Terminated => "terminated",
            EndClass::Drained => "drained",
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_end_is_classed_by_what_stopped_it_then_by_what_the_work_did() {
        let exited = |exit_code, signal| AttemptOutcome::Exited { exit_code, signal };
        let timeout = StopCause::Timeout { seconds: 5 };
        let terminated = StopCause::Terminated { reason: "r".into() };
        let cases = [
            (exited(0, None), None, EndClass::Succeeded),
            (exited(1, None), None, EndClass::Failed),
            (exited(0, Some(9)), None, EndClass::Failed),
            (exited(137, Some(9)), Some(&timeout), EndClass::Timeout),
            (exited(0, None), Some(&terminated), EndClass::Terminated),
            (
                AttemptOutcome::OutOfMemory { exit_code: None },
                None,
                EndClass::OutOfMemory,
            ),
            (
                AttemptOutcome::StartFailed { reason: "x".into() },
                None,
                EndClass::StartFailed,
            ),
            (
                AttemptOutcome::Lost { reason: "x".into() },
                None,
                EndClass::Lost,
            ),
        ];
        for (outcome, cause, class) in cases {
            assert_eq!(
                EndClass::of(&outcome, cause),
                class,
                "{outcome:?} {cause:?}"
            );
        }
    }
    use super::*;
    use crate::model::DEFAULT_MAX_DISRUPTIONS;

    /// Attempt `number`, with no disruption before it.
    fn count(number: u32) -> AttemptCount {
        AttemptCount {
            number,
            disruptions: 0,
        }
    }

    #[test]
    fn a_drained_attempt_is_requeued_at_once_whatever_its_retry_strategy() {
        let drained = StopCause::Drained {
            reason: "Drained: queue q".into(),
        };
        let policy = RetryPolicy {
            backoff: Some(Backoff {
                initial_delay_seconds: 60,
                factor_percent: 200,
                max_delay_seconds: 600,
                jitter: false,
            }),
            ..RetryPolicy::attempts(1)
        };
        let outcome = AttemptOutcome::Stopped {
            reason: "killed".into(),
            exit_code: Some(137),
        };
        let end = decide_attempt_end(&outcome, Some(&drained), count(1), &policy, 1_000, 0.5);
        assert_eq!(
            end.judgement.verdict,
            Verdict::Retry,
            "even the last attempt"
        );
        assert_eq!(end.judgement.reason, "Drained: queue q");
        assert_eq!(
            end.runnable_after, None,
            "no backoff: it waits for the hold instead"
        );
    }

    fn exited(exit_code: i32) -> AttemptOutcome {
        AttemptOutcome::Exited {
            exit_code,
            signal: None,
        }
    }

    #[test]
    fn judgements() {
        let terminated = StopCause::Terminated {
            reason: "no longer needed".into(),
        };
        let timeout = StopCause::Timeout { seconds: 5 };
        let killed = AttemptOutcome::Exited {
            exit_code: 143,
            signal: Some(15),
        };
        let lost = AttemptOutcome::Lost {
            reason: "gone".into(),
        };
        let start_failed = AttemptOutcome::StartFailed {
            reason: "CannotStartContainerError: no such file".into(),
        };
        /// Outcome, stop cause, attempt number, attempt limit, expected verdict and reason.
        type Case<'a> = (
            AttemptOutcome,
            Option<&'a StopCause>,
            u32,
            u32,
            Verdict,
            &'a str,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (exited(0), None, 1, 1, Verdict::Succeeded, "Essential container in task exited"),
            (exited(0), None, 1, 3, Verdict::Succeeded, "Essential container in task exited"),
            (exited(3), None, 1, 1, Verdict::Failed, "Essential container in task exited with code 3"),
            (exited(3), None, 1, 2, Verdict::Retry, "Essential container in task exited with code 3"),
            (exited(3), None, 2, 2, Verdict::Failed, "Essential container in task exited with code 3"),
            (killed.clone(), None, 1, 2, Verdict::Retry, "Essential container in task was killed by signal 15"),
            (killed.clone(), Some(&terminated), 1, 5, Verdict::Failed, "no longer needed"),
            (exited(0), Some(&terminated), 1, 5, Verdict::Failed, "no longer needed"),
            (killed, Some(&timeout), 1, 5, Verdict::Failed, "Job attempt duration exceeded timeout of 5 seconds"),
            (AttemptOutcome::OutOfMemory { exit_code: Some(137) }, None, 1, 1, Verdict::Failed, "OutOfMemoryError: Container killed due to memory usage"),
            (start_failed, None, 1, 2, Verdict::Retry, "CannotStartContainerError: no such file"),
            (lost, None, 3, 3, Verdict::Failed, "Attempt lost: gone"),
        ];
        for (outcome, stop, number, max, verdict, reason) in cases {
            let judgement =
                judge_attempt(&outcome, stop, count(number), &RetryPolicy::attempts(max));
            assert_eq!(
                (judgement.verdict, judgement.reason.as_str()),
                (verdict, reason),
                "{outcome:?} stop={stop:?} attempt {number}/{max}"
            );
        }
    }

    #[test]
    fn exit_codes_are_kept_for_the_attempt_record() {
        let once = RetryPolicy::attempts(1);
        assert_eq!(
            judge_attempt(&exited(3), None, count(1), &once).exit_code,
            Some(3)
        );
        let lost = AttemptOutcome::Lost { reason: "x".into() };
        assert_eq!(judge_attempt(&lost, None, count(1), &once).exit_code, None);
    }

    fn rule(
        exit_code: Option<&str>,
        reason: Option<&str>,
        status: Option<&str>,
        action: RetryAction,
    ) -> ExitRule {
        ExitRule {
            on_exit_code: exit_code.map(str::to_string),
            on_reason: reason.map(str::to_string),
            on_status_reason: status.map(str::to_string),
            action,
            resource_adjustments: None,
        }
    }

    #[test]
    fn evaluate_on_exit_first_match_wins_and_no_match_retries() {
        use RetryAction::{Exit, Retry};
        let oom = AttemptOutcome::OutOfMemory {
            exit_code: Some(137),
        };
        let start_failed = AttemptOutcome::StartFailed {
            reason: "CannotPullContainerError: nope".into(),
        };
        #[rustfmt::skip]
        let cases: Vec<(Vec<ExitRule>, AttemptOutcome, Verdict)> = vec![
            (vec![rule(Some("3"), None, None, Exit)], exited(3), Verdict::Failed),
            (vec![rule(Some("3"), None, None, Exit)], exited(4), Verdict::Retry),
            (vec![rule(Some("1*"), None, None, Exit)], exited(137), Verdict::Failed),
            (vec![rule(Some("1*"), None, None, Exit)], exited(2), Verdict::Retry),
            (vec![rule(Some("*"), None, None, Exit)], exited(9), Verdict::Failed),
            (vec![rule(Some("3"), None, None, Retry), rule(Some("*"), None, None, Exit)], exited(3), Verdict::Retry),
            (vec![rule(Some("3"), None, None, Retry), rule(Some("*"), None, None, Exit)], exited(5), Verdict::Failed),
            (vec![rule(None, Some("OutOfMemoryError*"), None, Exit)], oom.clone(), Verdict::Failed),
            (vec![rule(None, Some("OutOfMemoryError*"), None, Exit)], exited(1), Verdict::Retry),
            (vec![rule(None, None, Some("Essential container*"), Exit)], exited(1), Verdict::Failed),
            (vec![rule(None, Some("CannotPull*"), None, Retry), rule(None, None, None, Exit)], start_failed.clone(), Verdict::Retry),
            (vec![rule(Some("0"), None, None, Exit)], start_failed, Verdict::Retry),
            (vec![rule(Some("137"), Some("OutOfMemory*"), None, Exit)], oom, Verdict::Failed),
            (vec![rule(Some("137"), Some("OutOfMemory*"), None, Exit)], exited(137), Verdict::Retry),
        ];
        for (rules, outcome, verdict) in cases {
            let policy = RetryPolicy {
                attempts: 3,
                evaluate_on_exit: rules.clone(),
                backoff: None,
                max_disruptions: DEFAULT_MAX_DISRUPTIONS,
            };
            assert_eq!(
                judge_attempt(&outcome, None, count(1), &policy).verdict,
                verdict,
                "{rules:?} {outcome:?}"
            );
        }
        // RETRY never goes past the attempt limit.
        let policy = RetryPolicy {
            attempts: 2,
            evaluate_on_exit: vec![rule(Some("*"), None, None, Retry)],
            backoff: None,
            max_disruptions: DEFAULT_MAX_DISRUPTIONS,
        };
        assert_eq!(
            judge_attempt(&exited(1), None, count(2), &policy).verdict,
            Verdict::Failed
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let backoff = Backoff {
            initial_delay_seconds: 2,
            factor_percent: 300,
            max_delay_seconds: 30,
            jitter: false,
        };
        let delays: Vec<u64> = (1..=5)
            .map(|n| retry_delay(&backoff, n, 0.9).as_secs())
            .collect();
        assert_eq!(delays, [2, 6, 18, 30, 30]);
        let jittered = Backoff {
            jitter: true,
            ..backoff
        };
        assert_eq!(retry_delay(&jittered, 1, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(&jittered, 1, 0.5), Duration::from_millis(1500));
        assert!(retry_delay(&jittered, 3, 0.999) >= Duration::from_secs(9));
    }

    #[test]
    fn an_ended_attempt_is_judged_and_a_retry_waits_out_its_backoff() {
        let backoff = Backoff {
            initial_delay_seconds: 2,
            factor_percent: 300,
            max_delay_seconds: 30,
            jitter: true,
        };
        let with_backoff = RetryPolicy {
            attempts: 3,
            evaluate_on_exit: vec![],
            backoff: Some(backoff),
            max_disruptions: DEFAULT_MAX_DISRUPTIONS,
        };
        let without_backoff = RetryPolicy {
            backoff: None,
            ..with_backoff.clone()
        };
        let timeout = StopCause::Timeout { seconds: 5 };
        /// Outcome, stop cause, attempt, policy, random draw → verdict, runnable after.
        type Case<'a> = (
            AttemptOutcome,
            Option<&'a StopCause>,
            u32,
            &'a RetryPolicy,
            f64,
            Verdict,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                exited(0),
                None,
                1,
                &with_backoff,
                0.0,
                Verdict::Succeeded,
                None,
            ),
            (
                exited(1),
                None,
                1,
                &with_backoff,
                0.0,
                Verdict::Retry,
                Some(1_000 + 2_000),
            ),
            // The draw is the caller's: half of it comes off the delay.
            (
                exited(1),
                None,
                1,
                &with_backoff,
                0.5,
                Verdict::Retry,
                Some(1_000 + 1_500),
            ),
            (
                exited(1),
                None,
                2,
                &with_backoff,
                0.0,
                Verdict::Retry,
                Some(1_000 + 6_000),
            ),
            (
                exited(1),
                None,
                3,
                &with_backoff,
                0.0,
                Verdict::Failed,
                None,
            ),
            (
                exited(1),
                None,
                1,
                &without_backoff,
                0.0,
                Verdict::Retry,
                None,
            ),
            (
                exited(1),
                Some(&timeout),
                1,
                &with_backoff,
                0.0,
                Verdict::Failed,
                None,
            ),
        ];
        for (outcome, stop_cause, attempt, policy, random, verdict, runnable_after) in cases {
            let end =
                decide_attempt_end(&outcome, stop_cause, count(attempt), policy, 1_000, random);
            assert_eq!(
                (end.judgement.verdict, end.runnable_after),
                (verdict, runnable_after),
                "{outcome:?} attempt {attempt} draw {random}"
            );
        }
    }

    /// The deciding rule's adjustments come with a retry, and only with a retry; the next
    /// attempt's requirements grow by the factor, rounded up, within the maximum, never shrinking.
    #[test]
    fn an_out_of_memory_retry_carries_the_rules_resource_adjustments() {
        use crate::model::Resources;
        let adjustments = ResourceAdjustments {
            memory_factor_percent: 200,
            max_memory_mib: Some(300),
            vcpu_factor_percent: 150,
            max_vcpu_millis: None,
        };
        let policy = RetryPolicy {
            attempts: 3,
            evaluate_on_exit: vec![ExitRule {
                on_reason: Some("OutOfMemoryError*".into()),
                resource_adjustments: Some(adjustments),
                ..rule(None, None, None, RetryAction::Retry)
            }],
            backoff: None,
            max_disruptions: 3,
        };
        let oom = AttemptOutcome::OutOfMemory {
            exit_code: Some(137),
        };
        let first = judge_attempt(&oom, None, count(1), &policy);
        assert_eq!(
            (first.verdict, first.adjustments),
            (Verdict::Retry, Some(adjustments))
        );
        let last = judge_attempt(&oom, None, count(3), &policy);
        assert_eq!((last.verdict, last.adjustments), (Verdict::Failed, None));
        let other = judge_attempt(&exited(1), None, count(1), &policy);
        assert_eq!((other.verdict, other.adjustments), (Verdict::Retry, None));

        let ran_with = |vcpu_millis, memory_mib| Resources {
            vcpu_millis,
            memory_mib,
            gpus: 1,
        };
        assert_eq!(adjustments.apply(ran_with(1000, 100)), ran_with(1500, 200));
        assert_eq!(adjustments.apply(ran_with(333, 200)), ran_with(500, 300));
        assert_eq!(
            adjustments.apply(ran_with(1000, 400)),
            ran_with(1500, 400),
            "a maximum below the current size leaves it"
        );
        let json = serde_json::to_value(adjustments).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"memoryFactor": 2.0, "maxMemoryMiB": 300, "vcpuFactor": 1.5})
        );
        let back: ResourceAdjustments = serde_json::from_value(json).unwrap();
        assert_eq!(back, adjustments);
        let refused =
            serde_json::from_value::<ResourceAdjustments>(serde_json::json!({"memoryFactor": 0.5}));
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("0.5 is not a factor from 1 to 100"));
    }

    #[test]
    fn disruptions_retry_without_spending_attempts_up_to_their_bound() {
        let evicted = AttemptOutcome::Stopped {
            reason: "Evicted: The node was low on resource: memory.".into(),
            exit_code: None,
        };
        let policy = RetryPolicy {
            attempts: 1,
            evaluate_on_exit: vec![ExitRule {
                on_exit_code: None,
                on_reason: Some("Evicted*".into()),
                on_status_reason: None,
                action: RetryAction::RetryWithoutCount,
                resource_adjustments: None,
            }],
            backoff: None,
            max_disruptions: 2,
        };
        let judge = |number, disruptions, outcome: &AttemptOutcome| {
            judge_attempt(
                outcome,
                None,
                AttemptCount {
                    number,
                    disruptions,
                },
                &policy,
            )
        };
        // attempts: 1 — yet two evictions are retried, each saying so.
        let first = judge(1, 0, &evicted);
        assert_eq!((first.verdict, first.disruption), (Verdict::Retry, true));
        assert_eq!(
            first.reason,
            "Evicted: The node was low on resource: memory. (retried without counting: disruption 1 of 2)"
        );
        let second = judge(2, 1, &evicted);
        assert_eq!((second.verdict, second.disruption), (Verdict::Retry, true));
        // The third counts: it is the first counted attempt, and attempts is 1.
        let third = judge(3, 2, &evicted);
        assert_eq!((third.verdict, third.disruption), (Verdict::Failed, false));
        // The job's own failure after a disruption spends its attempt as usual.
        let exited = AttemptOutcome::Exited {
            exit_code: 1,
            signal: None,
        };
        assert_eq!(judge(2, 1, &exited).verdict, Verdict::Failed);
        let two = RetryPolicy {
            attempts: 2,
            ..policy.clone()
        };
        let after_disruption = judge_attempt(
            &exited,
            None,
            AttemptCount {
                number: 2,
                disruptions: 1,
            },
            &two,
        );
        assert_eq!(after_disruption.verdict, Verdict::Retry);
    }
}
