//! What a stopped container's state says about its attempt. Pure: no engine calls.

use bollard::models::ContainerState;

use crate::AttemptOutcome;

/// The outcome of the attempt whose container `name` stopped in `state`: killed for memory,
/// exited with a code, or lost when the engine recorded none.
pub fn outcome_of_state(name: &str, state: &ContainerState) -> AttemptOutcome {
    let exit_code = state.exit_code.map(|code| code as i32);
    match (state.oom_killed, exit_code) {
        (Some(true), exit_code) => AttemptOutcome::OutOfMemory { exit_code },
        (_, Some(exit_code)) => AttemptOutcome::Exited {
            exit_code,
            signal: None,
        },
        (_, None) => AttemptOutcome::Lost {
            reason: format!("container {name} reports no exit code"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_containers_state_is_its_attempts_outcome() {
        let state = |oom_killed: Option<bool>, exit_code: Option<i64>| ContainerState {
            oom_killed,
            exit_code,
            ..ContainerState::default()
        };
        let cases = [
            (
                state(Some(false), Some(0)),
                AttemptOutcome::Exited {
                    exit_code: 0,
                    signal: None,
                },
            ),
            (
                state(None, Some(3)),
                AttemptOutcome::Exited {
                    exit_code: 3,
                    signal: None,
                },
            ),
            // Stopped by an engine restart: SIGKILL after the stop timeout.
            (
                state(Some(false), Some(137)),
                AttemptOutcome::Exited {
                    exit_code: 137,
                    signal: None,
                },
            ),
            (
                state(Some(true), Some(137)),
                AttemptOutcome::OutOfMemory {
                    exit_code: Some(137),
                },
            ),
            (
                state(None, None),
                AttemptOutcome::Lost {
                    reason: "container c-1 reports no exit code".into(),
                },
            ),
        ];
        for (state, expected) in cases {
            assert_eq!(outcome_of_state("c-1", &state), expected, "{state:?}");
        }
    }
}
