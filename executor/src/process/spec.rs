//! What the shim runs: the attempt's spec with the few variables it inherits from the server.

use crate::{AttemptSpec, EnvironmentVariable};

/// Variables a host process needs to find programs; passed through unless the job sets them.
pub(super) const INHERITED_VARIABLES: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

pub(super) fn with_inherited_variables(mut spec: AttemptSpec) -> AttemptSpec {
    for name in INHERITED_VARIABLES {
        let set_by_job = spec.environment.iter().any(|v| v.name == name);
        if let (false, Ok(value)) = (set_by_job, std::env::var(name)) {
            spec.environment.insert(
                0,
                EnvironmentVariable {
                    name: name.to_string(),
                    value,
                },
            );
        }
    }
    spec
}
