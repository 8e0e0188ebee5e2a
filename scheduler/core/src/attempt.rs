//! What an attempt runs: the job's container with `Ref::` parameters substituted and the `BATCH_*`
//! environment added.

use std::collections::BTreeMap;

use crate::contract::{AttemptSpec, EnvironmentVariable};

use super::model::{ArrayRole, EnvironmentName, Job};

/// Prefixes of the variables batchctl sets itself; a job may not set them.
pub const RESERVED_VARIABLE_PREFIXES: [&str; 2] = ["AWS_BATCH_", "BATCH_"];

/// What made a job, beyond a person's submit: each origin adds variables of its own to the job's
/// environment, named here with every other `BATCH_*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOrigin<'a> {
    /// An event rule's delivery of an event.
    Rule { event_id: &'a str, rule: &'a str },
    /// A schedule's tick, at this scheduled time (RFC 3339, in the schedule's time zone).
    Schedule { scheduled_time: &'a str },
}

/// The variables a job made by `origin` carries: `BATCH_EVENT_ID` and `BATCH_EVENT_RULE`, or
/// `BATCH_SCHEDULED_TIME`.
pub fn origin_variables(origin: JobOrigin<'_>) -> Vec<(String, String)> {
    match origin {
        JobOrigin::Rule { event_id, rule } => vec![
            ("BATCH_EVENT_ID".into(), event_id.into()),
            ("BATCH_EVENT_RULE".into(), rule.into()),
        ],
        JobOrigin::Schedule { scheduled_time } => {
            vec![("BATCH_SCHEDULED_TIME".into(), scheduled_time.into())]
        }
    }
}

/// The name of attempt `number` of a job, usable as a directory, container or Kubernetes object name.
/// An array child's `:` (not allowed in container names) becomes `.`.
pub fn attempt_id(job_id: &str, number: u32) -> String {
    format!("{}-{number}", job_id.replace(':', "."))
}

pub fn attempt_spec(job: &Job, number: u32, environment_name: &EnvironmentName) -> AttemptSpec {
    let container = &job.spec.container;
    let command = container
        .command
        .iter()
        .map(|word| substitute_parameters(word, &job.spec.parameters))
        .collect();
    let attempt = number.to_string();
    let batch_variables = [
        ("BATCH_JOB_ID", job.job_id.0.as_str()),
        ("BATCH_JOB_ATTEMPT", attempt.as_str()),
        ("BATCH_JOB_QUEUE", job.queue.as_str()),
        ("BATCH_COMPUTE_ENVIRONMENT", environment_name.as_str()),
        ("AWS_BATCH_JOB_ID", job.job_id.0.as_str()),
        ("AWS_BATCH_JOB_ATTEMPT", attempt.as_str()),
        ("AWS_BATCH_JQ_NAME", job.queue.as_str()),
        ("AWS_BATCH_CE_NAME", environment_name.as_str()),
    ];
    let array_index = match &job.array {
        ArrayRole::Child { index, .. } => Some(index.to_string()),
        ArrayRole::Single | ArrayRole::Parent { .. } => None,
    };
    let array_variables = array_index.iter().flat_map(|index| {
        [
            ("BATCH_JOB_ARRAY_INDEX", index.as_str()),
            ("AWS_BATCH_JOB_ARRAY_INDEX", index.as_str()),
        ]
    });
    let environment = container
        .environment
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .chain(batch_variables)
        .chain(array_variables)
        .map(|(name, value)| EnvironmentVariable {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect();
    AttemptSpec {
        attempt_id: attempt_id(&job.job_id.0, number),
        job_id: job.job_id.0.clone(),
        attempt_number: number,
        compute_environment: environment_name.to_string(),
        image: container.image.clone(),
        command,
        environment,
        working_dir: container.working_dir.clone(),
        user: container.user.clone(),
        resources: container.resources,
        image_pull_policy: container.image_pull_policy,
        privileged: container.privileged,
        capabilities: container.capabilities.clone(),
        timeout_seconds: job.spec.timeout_seconds,
        // Filled in by the dispatcher when the attempt starts: the values are read from the store
        // then, and never kept in the job.
        secrets: Vec::new(),
        linux: container.linux.clone(),
        storage: container.storage.clone(),
        pod: job.spec.pod.clone(),
        gpu_ids: job
            .current_attempt
            .as_ref()
            .map(|attempt| attempt.gpu_ids.clone())
            .unwrap_or_default(),
        tags: match job.spec.propagate_tags {
            true => job.spec.tags.clone(),
            false => BTreeMap::new(),
        },
    }
}

/// Replaces every `Ref::name` whose name is a parameter with the parameter's value, as AWS Batch does
/// in commands. The longest parameter name that matches wins; an unknown `Ref::` is left as written.
pub fn substitute_parameters(word: &str, parameters: &BTreeMap<String, String>) -> String {
    const MARKER: &str = "Ref::";
    let mut result = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(start) = rest.find(MARKER) {
        result.push_str(&rest[..start]);
        let after = &rest[start + MARKER.len()..];
        let name_length = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        let longest_known = (1..=name_length).rev().find_map(|length| {
            parameters
                .get(&after[..length])
                .map(|value| (length, value))
        });
        match longest_known {
            Some((length, value)) => {
                result.push_str(value);
                rest = &after[length..];
            }
            None => {
                result.push_str(MARKER);
                rest = after;
            }
        }
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let parameters: BTreeMap<String, String> = [
            ("who", "you"),
            ("in", "a.txt"),
            ("input", "b.txt"),
            ("dash-name", "d"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cases = [
            ("echo hello Ref::who", "echo hello you"),
            ("Ref::who", "you"),
            ("Ref::who!", "you!"),
            ("Ref::input", "b.txt"),
            ("Ref::inp", "a.txtp"),
            ("--file=Ref::in,Ref::who", "--file=a.txt,you"),
            ("Ref::dash-name", "d"),
            ("Ref::unknown stays", "Ref::unknown stays"),
            ("Ref::", "Ref::"),
            ("no refs at all", "no refs at all"),
            ("Ref::Ref::who", "Ref::you"),
            ("ünï Ref::who ü", "ünï you ü"),
        ];
        for (word, expected) in cases {
            assert_eq!(substitute_parameters(word, &parameters), expected, "{word}");
        }
    }

    #[test]
    fn attempt_ids_name_job_and_attempt() {
        assert_eq!(attempt_id("abc", 2), "abc-2");
    }
}
