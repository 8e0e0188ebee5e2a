//! How an array job ends once none of its children is unfinished. Pure.

use crate::model::ArraySuccessPolicy;
use crate::state_machine::ArrayOutcome;

/// An array parent's end: its outcome for the state machine and its `statusReason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayEnd {
    pub outcome: ArrayOutcome,
    pub reason: String,
}

/// What the store counted of an ended array's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildrenEnded {
    pub size: u32,
    pub failed: u32,
    /// Of those, how many are in the policy's `succeededIndexes` (equal to `failed` for the other
    /// policies, which the store need not count).
    pub failed_in_required_indexes: u32,
}

/// How an array ends: `stop_reason` is a cancel or terminate of the parent, whose reason the
/// parent keeps, as in AWS Batch; a stopped array with a failed child fails whatever its policy.
/// Otherwise the policy decides, and a success with failed children says what it tolerated.
pub fn decide_array_end(
    children: ChildrenEnded,
    policy: &ArraySuccessPolicy,
    stop_reason: Option<&str>,
) -> ArrayEnd {
    let ChildrenEnded {
        size,
        failed,
        failed_in_required_indexes,
    } = children;
    let failed_end = |reason: String| ArrayEnd {
        outcome: ArrayOutcome::SomeFailed,
        reason,
    };
    if failed == 0 {
        return ArrayEnd {
            outcome: ArrayOutcome::AllSucceeded,
            reason: format!("All {size} array children succeeded"),
        };
    }
    if let Some(reason) = stop_reason {
        return failed_end(reason.to_string());
    }
    let tolerated = match policy {
        ArraySuccessPolicy::AllChildren => None,
        ArraySuccessPolicy::MaxFailedChildren(max) => {
            (failed <= *max).then(|| format!("successPolicy.maxFailedChildren is {max}"))
        }
        ArraySuccessPolicy::SucceededIndexes(ranges) => {
            (failed_in_required_indexes == 0).then(|| {
                format!(
                    "none of successPolicy.succeededIndexes {} failed",
                    index_ranges_text(ranges)
                )
            })
        }
    };
    match tolerated {
        Some(why) => ArrayEnd {
            outcome: ArrayOutcome::AllSucceeded,
            reason: format!("{failed} of {size} array children failed; succeeded as {why}"),
        },
        None => failed_end(format!("{failed} of {size} array children failed")),
    }
}

/// Parses `succeededIndexes` as Kubernetes writes it: `0-9,12,20-29`, ascending, each index below
/// `size`. At most `MAX_INDEX_RANGES` ranges, so the check stays one small statement.
pub fn parse_index_ranges(text: &str, size: u32) -> Result<Vec<(u32, u32)>, String> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let number = |value: &str| {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("{part:?} is not an index or a range like 0-9"))
        };
        let (first, last) = (number(first)?, number(last)?);
        if first > last {
            return Err(format!(
                "{part:?} runs backwards; write the lower index first"
            ));
        }
        if last >= size {
            return Err(format!(
                "{part:?} reaches index {last}; the array's children are 0 to {}",
                size.saturating_sub(1)
            ));
        }
        if let Some(&(_, previous)) = ranges.last() {
            if first <= previous {
                return Err(format!(
                    "{part:?} overlaps or precedes the range before it; list ranges in ascending order"
                ));
            }
        }
        ranges.push((first, last));
    }
    if ranges.len() > MAX_INDEX_RANGES {
        return Err(format!(
            "has {} ranges; at most {MAX_INDEX_RANGES} are allowed",
            ranges.len()
        ));
    }
    Ok(ranges)
}

/// The most ranges a `succeededIndexes` may list.
pub const MAX_INDEX_RANGES: usize = 100;

/// Ranges written back as `parse_index_ranges` reads them.
pub fn index_ranges_text(ranges: &[(u32, u32)]) -> String {
    ranges
        .iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(size: u32, failed: u32, failed_in_required_indexes: u32) -> ChildrenEnded {
        ChildrenEnded {
            size,
            failed,
            failed_in_required_indexes,
        }
    }

    #[test]
    fn an_array_ends_by_its_childrens_outcomes_and_its_policy() {
        use ArrayOutcome::{AllSucceeded, SomeFailed};
        use ArraySuccessPolicy::{AllChildren, MaxFailedChildren, SucceededIndexes};
        let cases = [
            (ended(5, 0, 0), AllChildren, None, AllSucceeded, "All 5 array children succeeded"),
            (ended(5, 2, 2), AllChildren, None, SomeFailed, "2 of 5 array children failed"),
            (
                ended(5, 5, 5),
                AllChildren,
                Some("Cancelled by user"),
                SomeFailed,
                "Cancelled by user",
            ),
            // A stop that came after every child had succeeded changes nothing.
            (
                ended(5, 0, 0),
                AllChildren,
                Some("Cancelled by user"),
                AllSucceeded,
                "All 5 array children succeeded",
            ),
            (
                ended(10, 2, 2),
                MaxFailedChildren(2),
                None,
                AllSucceeded,
                "2 of 10 array children failed; succeeded as successPolicy.maxFailedChildren is 2",
            ),
            (
                ended(10, 3, 3),
                MaxFailedChildren(2),
                None,
                SomeFailed,
                "3 of 10 array children failed",
            ),
            (
                ended(10, 4, 0),
                SucceededIndexes(vec![(0, 4), (9, 9)]),
                None,
                AllSucceeded,
                "4 of 10 array children failed; succeeded as none of successPolicy.succeededIndexes 0-4,9 failed",
            ),
            (
                ended(10, 1, 1),
                SucceededIndexes(vec![(0, 4)]),
                None,
                SomeFailed,
                "1 of 10 array children failed",
            ),
            // A cancelled array fails whatever it would have tolerated.
            (
                ended(10, 1, 0),
                MaxFailedChildren(5),
                Some("Cancelled by user"),
                SomeFailed,
                "Cancelled by user",
            ),
        ];
        for (children, policy, stop_reason, outcome, reason) in cases {
            let end = decide_array_end(children, &policy, stop_reason);
            assert_eq!(
                (end.outcome, end.reason.as_str()),
                (outcome, reason),
                "{children:?} {policy:?}"
            );
        }
    }

    #[test]
    fn index_ranges_are_read_checked_and_written_back() {
        assert_eq!(
            parse_index_ranges("0-9, 12,20-29", 30),
            Ok(vec![(0, 9), (12, 12), (20, 29)])
        );
        assert_eq!(index_ranges_text(&[(0, 9), (12, 12)]), "0-9,12");
        for (text, size, says) in [
            ("0-10", 10, "children are 0 to 9"),
            ("5-2", 10, "backwards"),
            ("0-4,3-6", 10, "overlaps"),
            ("x", 10, "not an index"),
            ("", 10, "not an index"),
        ] {
            let error = parse_index_ranges(text, size).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        let many: Vec<String> = (0..101).map(|i| (i * 2).to_string()).collect();
        assert!(parse_index_ranges(&many.join(","), 1000)
            .unwrap_err()
            .contains("at most 100"));
    }
}
