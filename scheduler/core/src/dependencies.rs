//! When a job waiting on others may run, and when it never can: each dependency's condition
//! (`afterok`, `afterany`, `afternotok`) against the end of the job it names. The store carries
//! this table out in bulk statements built from it (`store/jobs/moves.rs`); nothing else decides.

use crate::model::{DependencyCondition, JobId, JobStatus};

impl DependencyCondition {
    pub const ALL: [DependencyCondition; 3] = [
        DependencyCondition::AfterOk,
        DependencyCondition::AfterAny,
        DependencyCondition::AfterNotOk,
    ];

    /// Its name in `dependsOn[].condition` and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::AfterOk => "afterok",
            DependencyCondition::AfterAny => "afterany",
            DependencyCondition::AfterNotOk => "afternotok",
        }
    }

    pub fn parse(text: &str) -> Option<DependencyCondition> {
        DependencyCondition::ALL
            .into_iter()
            .find(|condition| condition.as_str() == text)
    }

    /// The ends of the job depended on that meet the condition.
    pub fn met_by(self) -> &'static [JobStatus] {
        match self {
            DependencyCondition::AfterOk => &[JobStatus::Succeeded],
            DependencyCondition::AfterAny => &[JobStatus::Succeeded, JobStatus::Failed],
            DependencyCondition::AfterNotOk => &[JobStatus::Failed],
        }
    }

    /// The ends after which the condition can never be met: the dependent fails.
    pub fn broken_by(self) -> &'static [JobStatus] {
        match self {
            DependencyCondition::AfterOk => &[JobStatus::Failed],
            DependencyCondition::AfterAny => &[],
            DependencyCondition::AfterNotOk => &[JobStatus::Succeeded],
        }
    }

    /// What a dependent whose dependency ended in `broken_by` says after the dependency's id
    /// (`unmet_reason`); the store's bulk statement writes `REASON_PREFIX || id || this`.
    pub fn broken_suffix(self) -> &'static str {
        match self {
            DependencyCondition::AfterOk | DependencyCondition::AfterAny => " failed",
            DependencyCondition::AfterNotOk => {
                " succeeded; the dependency's condition afternotok needed it to fail"
            }
        }
    }
}

/// How every reason for a dependency that can no longer be met begins.
pub const REASON_PREFIX: &str = "Dependency ";

/// What a dependent says when `dependency` ended as `ended` and its condition can no longer be
/// met; `None` when that end does not break it.
pub fn unmet_reason(
    dependency: &JobId,
    condition: DependencyCondition,
    ended: JobStatus,
) -> Option<String> {
    condition
        .broken_by()
        .contains(&ended)
        .then(|| format!("{REASON_PREFIX}{dependency}{}", condition.broken_suffix()))
}

/// Where a dependent stands given its dependencies' conditions and the current status of each
/// job they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Every condition is met: it may run.
    Ready,
    /// Some job has not ended in a way that decides its condition yet.
    Waiting,
    /// The first dependency (in the order given) that can no longer be met, and the reason.
    Failed(String),
}

/// The decision for one dependent; the bulk statements compute the same thing for many at once
/// (tested against this in `scheduler/tests/dispatcher_policies.rs`).
pub fn resolve(dependencies: &[(JobId, DependencyCondition, JobStatus)]) -> Resolution {
    if let Some(reason) = dependencies
        .iter()
        .find_map(|(job_id, condition, status)| unmet_reason(job_id, *condition, *status))
    {
        return Resolution::Failed(reason);
    }
    if dependencies
        .iter()
        .all(|(_, condition, status)| condition.met_by().contains(status))
    {
        Resolution::Ready
    } else {
        Resolution::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DependencyCondition::{AfterAny, AfterNotOk, AfterOk};
    use JobStatus::{Failed, Running, Succeeded};

    fn id(text: &str) -> JobId {
        JobId(text.into())
    }

    #[test]
    fn each_condition_against_each_end() {
        let cases = [
            (AfterOk, Running, Resolution::Waiting),
            (AfterOk, Succeeded, Resolution::Ready),
            (
                AfterOk,
                Failed,
                Resolution::Failed("Dependency a failed".into()),
            ),
            (AfterAny, Running, Resolution::Waiting),
            (AfterAny, Succeeded, Resolution::Ready),
            (AfterAny, Failed, Resolution::Ready),
            (AfterNotOk, Running, Resolution::Waiting),
            (
                AfterNotOk,
                Succeeded,
                Resolution::Failed(
                    "Dependency a succeeded; the dependency's condition afternotok needed it to fail"
                        .into(),
                ),
            ),
            (AfterNotOk, Failed, Resolution::Ready),
        ];
        for (condition, status, expected) in cases {
            assert_eq!(
                resolve(&[(id("a"), condition, status)]),
                expected,
                "{condition:?} after {status:?}"
            );
        }
    }

    #[test]
    fn every_condition_must_be_met_and_the_first_broken_one_is_named() {
        assert_eq!(
            resolve(&[(id("a"), AfterOk, Succeeded), (id("b"), AfterAny, Running)]),
            Resolution::Waiting
        );
        assert_eq!(
            resolve(&[(id("a"), AfterOk, Succeeded), (id("b"), AfterNotOk, Failed)]),
            Resolution::Ready
        );
        assert_eq!(
            resolve(&[
                (id("a"), AfterAny, Running),
                (id("b"), AfterNotOk, Succeeded),
                (id("c"), AfterOk, Failed)
            ]),
            Resolution::Failed(
                "Dependency b succeeded; the dependency's condition afternotok needed it to fail"
                    .into()
            )
        );
        assert_eq!(resolve(&[]), Resolution::Ready);
    }

    #[test]
    fn met_and_broken_never_overlap_and_names_round_trip() {
        for condition in DependencyCondition::ALL {
            assert!(condition
                .met_by()
                .iter()
                .all(|status| !condition.broken_by().contains(status)));
            assert_eq!(
                DependencyCondition::parse(condition.as_str()),
                Some(condition)
            );
        }
    }
}
