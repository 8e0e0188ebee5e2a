//! How an array job ends once none of its children is unfinished. Pure.

use crate::state_machine::ArrayOutcome;

/// An array parent's end: its outcome for the state machine and its `statusReason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayEnd {
    pub outcome: ArrayOutcome,
    pub reason: String,
}

/// `n_failed` of `size` children failed; `stop_reason` is a cancel or terminate of the parent,
/// whose reason the parent keeps, as in AWS Batch.
pub fn decide_array_end(size: u32, n_failed: u32, stop_reason: Option<&str>) -> ArrayEnd {
    let outcome = match n_failed {
        0 => ArrayOutcome::AllSucceeded,
        _ => ArrayOutcome::SomeFailed,
    };
    let reason = match (stop_reason, outcome) {
        (Some(reason), ArrayOutcome::SomeFailed) => reason.to_string(),
        (_, ArrayOutcome::AllSucceeded) => format!("All {size} array children succeeded"),
        (None, ArrayOutcome::SomeFailed) => {
            format!("{n_failed} of {size} array children failed")
        }
    };
    ArrayEnd { outcome, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_ends_by_its_childrens_outcomes() {
        let cases = [
            (
                5,
                0,
                None,
                ArrayOutcome::AllSucceeded,
                "All 5 array children succeeded",
            ),
            (
                5,
                2,
                None,
                ArrayOutcome::SomeFailed,
                "2 of 5 array children failed",
            ),
            (
                5,
                5,
                Some("Cancelled by user"),
                ArrayOutcome::SomeFailed,
                "Cancelled by user",
            ),
            // A stop that came after every child had succeeded changes nothing.
            (
                5,
                0,
                Some("Cancelled by user"),
                ArrayOutcome::AllSucceeded,
                "All 5 array children succeeded",
            ),
        ];
        for (size, n_failed, stop_reason, outcome, reason) in cases {
            let end = decide_array_end(size, n_failed, stop_reason);
            assert_eq!((end.outcome, end.reason.as_str()), (outcome, reason));
        }
    }
}
