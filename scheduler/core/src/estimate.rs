//! When a waiting job may start: a small simulation of its queue's environments from now on, and
//! what the estimate rests on (`batchctl why`, the console's job page).
//!
//! Each environment's running attempts end at their expected end — started plus the typical
//! duration of their definition where one is known (from attempts that ended), else at their
//! timeout, else never in the estimate's view —, freeing what they hold; the jobs ahead of this one
//! start first in order as room frees, each taken to need what this job needs and to run its
//! definition's typical duration (their own needs are not read: `why` counts them only); then
//! this job starts when it fits. The earliest environment wins. Concurrency limits, consumable
//! resources, array caps and retries are not simulated: an estimate, said as one.

use serde::{Deserialize, Serialize};

use crate::model::Resources;

/// An attempt that runs now, as the estimate sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningAttempt {
    pub holds: Resources,
    /// When it is expected to end (epoch milliseconds), if anything says.
    pub expected_end: Option<i64>,
}

/// One environment of the job's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentOutlook {
    pub capacity: Resources,
    pub running: Vec<RunningAttempt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EstimateInput {
    pub now: i64,
    pub needs: Resources,
    /// Jobs of the queue ahead of this one.
    pub ahead: u64,
    /// How long this job's definition typically runs (milliseconds), if known.
    pub typical_millis: Option<i64>,
    /// Its queue's ENABLED environments.
    pub environments: Vec<EnvironmentOutlook>,
}

/// The estimate and what it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartEstimate {
    /// Epoch milliseconds; absent when nothing says when room frees (attempts with neither a
    /// timeout nor a typical duration hold it, or no environment could ever fit the job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// What it rests on, in words.
    pub rests_on: Vec<String>,
}

/// The most jobs ahead the simulation steps through; beyond, the estimate says it stopped.
pub const MOST_SIMULATED: u64 = 10_000;

pub fn estimate_start(input: &EstimateInput) -> StartEstimate {
    let mut rests_on = vec![format!(
        "{} job(s) ahead, each taken to need what this one needs and to run {}",
        input.ahead,
        match input.typical_millis {
            Some(millis) => format!(
                "{:.0}s (this definition's typical run)",
                millis as f64 / 1000.0
            ),
            None => "as long as this one (no run of its definition has ended yet)".into(),
        }
    )];
    if input.ahead > MOST_SIMULATED {
        rests_on.push(format!(
            "only the first {MOST_SIMULATED} ahead are simulated"
        ));
    }
    let unknown_ends: usize = input
        .environments
        .iter()
        .flat_map(|environment| &environment.running)
        .filter(|attempt| attempt.expected_end.is_none())
        .count();
    if unknown_ends > 0 {
        rests_on.push(format!(
            "{unknown_ends} running attempt(s) have neither a timeout nor a typical duration: taken never to end"
        ));
    }
    rests_on.push(
        "running attempts end at their typical duration, else their timeout; limits, consumable resources and array caps are not simulated"
            .into(),
    );
    let at = input
        .environments
        .iter()
        .filter_map(|environment| start_in(environment, input))
        .min();
    StartEstimate { at, rests_on }
}

/// When the job starts in one environment, if it ever does in the estimate's view.
fn start_in(environment: &EnvironmentOutlook, input: &EstimateInput) -> Option<i64> {
    if !input.needs.fits_within(&environment.capacity) {
        return None;
    }
    // Ends still to come: (when, what frees). Unknown ends never come.
    let mut ends: Vec<(i64, Resources)> = environment
        .running
        .iter()
        .filter_map(|attempt| Some((attempt.expected_end?.max(input.now), attempt.holds)))
        .collect();
    let mut in_use = environment
        .running
        .iter()
        .fold(Resources::default(), |sum, attempt| {
            sum.plus(&attempt.holds)
        });
    // Jobs ahead run as long as this one typically does; without a typical duration, they are
    // taken to run as long as the longest known end from now (a guess said in `rests_on`).
    let run = input.typical_millis.unwrap_or_else(|| {
        ends.iter()
            .map(|(end, _)| end - input.now)
            .max()
            .unwrap_or(0)
    });
    let mut waiting = input.ahead.min(MOST_SIMULATED) + 1;
    let mut now = input.now;
    loop {
        while waiting > 0 && in_use.plus(&input.needs).fits_within(&environment.capacity) {
            waiting -= 1;
            if waiting == 0 {
                return Some(now);
            }
            in_use = in_use.plus(&input.needs);
            ends.push((now + run, input.needs));
        }
        // The next end frees room.
        let next = ends
            .iter()
            .enumerate()
            .min_by_key(|(_, (end, _))| *end)
            .map(|(index, _)| index)?;
        let (end, frees) = ends.swap_remove(next);
        now = now.max(end);
        in_use = in_use.saturating_minus(&frees);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpus(n: u64) -> Resources {
        Resources {
            vcpu_millis: n * 1000,
            memory_mib: 64,
            gpus: 0,
        }
    }

    /// An environment of `n` vCPUs with memory to spare.
    fn room(n: u64) -> Resources {
        Resources {
            memory_mib: 1 << 20,
            ..vcpus(n)
        }
    }

    fn running(n: u64, end: Option<i64>) -> RunningAttempt {
        RunningAttempt {
            holds: vcpus(n),
            expected_end: end,
        }
    }

    /// The clock is the input's `now`: each case sets it, so the simulation is checked against
    /// exact times.
    #[test]
    fn a_job_starts_when_the_attempts_before_it_free_room() {
        let environment = EnvironmentOutlook {
            capacity: room(2),
            running: vec![running(1, Some(10_000)), running(1, Some(30_000))],
        };
        let input = |ahead, typical_millis| EstimateInput {
            now: 1_000,
            needs: vcpus(1),
            ahead,
            typical_millis,
            environments: vec![environment.clone()],
        };
        // Nothing ahead: it starts when the first running attempt ends.
        assert_eq!(estimate_start(&input(0, Some(5_000))).at, Some(10_000));
        // One ahead takes the first slot at 10 s; this one the slot the 30 s end frees... or the
        // first job's end at 15 s, which comes sooner.
        assert_eq!(estimate_start(&input(1, Some(5_000))).at, Some(15_000));
        // Two ahead: 10 s and 15 s slots go to them; the next end is the second ahead's at 20 s.
        assert_eq!(estimate_start(&input(2, Some(5_000))).at, Some(20_000));
        // With room now, it starts now.
        let idle = EstimateInput {
            environments: vec![EnvironmentOutlook {
                capacity: room(2),
                running: vec![],
            }],
            ..input(0, None)
        };
        assert_eq!(estimate_start(&idle).at, Some(1_000));
    }

    #[test]
    fn unknown_ends_and_impossible_fits_are_said() {
        let blocked = EstimateInput {
            now: 0,
            needs: vcpus(1),
            ahead: 0,
            typical_millis: None,
            environments: vec![EnvironmentOutlook {
                capacity: room(1),
                running: vec![running(1, None)],
            }],
        };
        let estimate = estimate_start(&blocked);
        assert_eq!(estimate.at, None);
        assert!(
            estimate.rests_on[1]
                .contains("1 running attempt(s) have neither a timeout nor a typical duration"),
            "{estimate:?}"
        );
        let too_big = EstimateInput {
            needs: vcpus(4),
            ..blocked.clone()
        };
        assert_eq!(estimate_start(&too_big).at, None);
        // The earliest of the environments wins.
        let two = EstimateInput {
            environments: vec![
                blocked.environments[0].clone(),
                EnvironmentOutlook {
                    capacity: room(1),
                    running: vec![running(1, Some(7_000))],
                },
            ],
            ..blocked
        };
        assert_eq!(estimate_start(&two).at, Some(7_000));
    }
}
