//! What an attempt runs: the job's container with `Ref::` parameters substituted and the `BATCH_*`
//! environment added.

use std::collections::BTreeMap;

use crate::contract::{AttemptSpec, EnvironmentVariable, NodeGroup};
use crate::multinode::{node_attempt_id, node_job_id};

use super::model::{ArrayRole, ContainerProperties, EnvironmentName, Job};

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
    let gpu_ids = job
        .current_attempt
        .as_ref()
        .map(|attempt| attempt.gpu_ids.clone())
        .unwrap_or_default();
    let Some(nodes) = &job.spec.nodes else {
        let mut spec = container_spec(job, number, environment_name, &job.spec.container, &[]);
        spec.gpu_ids = gpu_ids;
        return spec;
    };
    let attempt = attempt_id(&job.job_id.0, number);
    let (num_nodes, main_node) = (nodes.num_nodes.to_string(), nodes.main_node.to_string());
    // The GPUs placement gave the job, handed out to its nodes in node order.
    let mut unassigned = gpu_ids.into_iter();
    let group: Vec<AttemptSpec> = (0..nodes.num_nodes)
        .map(|node| {
            let (index, node_job_id) = (node.to_string(), node_job_id(&job.job_id.0, node));
            let variables = [
                ("AWS_BATCH_JOB_NODE_INDEX", index.as_str()),
                ("AWS_BATCH_JOB_NUM_NODES", num_nodes.as_str()),
                ("AWS_BATCH_JOB_MAIN_NODE_INDEX", main_node.as_str()),
                // AWS Batch names a node's job `JOB#i` in its own variable.
                ("AWS_BATCH_JOB_ID", node_job_id.as_str()),
            ];
            let container = nodes.container_of(node);
            let mut spec = container_spec(job, number, environment_name, container, &variables);
            spec.attempt_id = node_attempt_id(&attempt, node, nodes.main_node);
            spec.gpu_ids = unassigned
                .by_ref()
                .take(container.resources.gpus as usize)
                .collect();
            spec
        })
        .collect();
    let mut spec = group[nodes.main_node as usize].clone();
    spec.attempt_id = attempt;
    spec.gpu_ids = group.iter().flat_map(|node| node.gpu_ids.clone()).collect();
    spec.nodes = Some(NodeGroup {
        main_node: nodes.main_node,
        nodes: group,
    });
    spec
}

/// The spec of one container of a job's attempt, with `variables` over the `BATCH_*` ones (a later
/// variable of the same name wins where a backend sets them in order).
fn container_spec(
    job: &Job,
    number: u32,
    environment_name: &EnvironmentName,
    container: &ContainerProperties,
    variables: &[(&str, &str)],
) -> AttemptSpec {
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
    let mut environment: Vec<EnvironmentVariable> = Vec::new();
    let all = container
        .environment
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .chain(batch_variables)
        .chain(array_variables)
        .chain(variables.iter().copied());
    for (name, value) in all {
        // Names are unique: a later one replaces an earlier one in its place.
        match environment
            .iter_mut()
            .find(|variable| variable.name == name)
        {
            Some(variable) => variable.value = value.to_string(),
            None => environment.push(EnvironmentVariable {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
    }
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
        gpu_ids: Vec::new(),
        tags: match job.spec.propagate_tags {
            true => job.spec.tags.clone(),
            false => BTreeMap::new(),
        },
        nodes: None,
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
    fn a_multinode_attempt_has_a_spec_per_node() {
        use crate::model::{CurrentAttempt, JobStatus, Resources};
        use crate::multinode::NodeProperties;
        let needs = |gpus| Resources {
            vcpu_millis: 1000,
            memory_mib: 64,
            gpus,
        };
        let mut job = crate::why::tests::job(JobStatus::Starting, needs(0));
        let mut main = job.spec.container.clone();
        main.command = vec!["serve".into(), "Ref::port".into()];
        main.resources = needs(1);
        let mut worker = job.spec.container.clone();
        worker.command = vec!["work".into()];
        worker.resources = needs(2);
        job.spec.parameters.insert("port".into(), "7000".into());
        let nodes = NodeProperties::new(
            3,
            1,
            vec![
                ("1".into(), main),
                ("0".into(), worker.clone()),
                ("2".into(), worker),
            ],
        )
        .unwrap();
        job.spec.nodes = Some(nodes);
        job.current_attempt = Some(CurrentAttempt {
            number: 2,
            compute_environment: EnvironmentName::try_from("ce".to_string()).unwrap(),
            executor_handle: "j-2".into(),
            placed_at: 0,
            started_at: None,
            gpu_ids: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
        });
        let spec = attempt_spec(
            &job,
            2,
            &EnvironmentName::try_from("ce".to_string()).unwrap(),
        );
        let group = spec.nodes.as_ref().expect("a node group");
        assert_eq!(group.main_node, 1);
        assert_eq!(
            spec.command,
            ["serve", "7000"],
            "the attempt's own fields are the main node's"
        );
        let variable = |node: &AttemptSpec, name: &str| {
            node.environment
                .iter()
                .find(|v| v.name == name)
                .map(|v| v.value.clone())
        };
        let names: Vec<&str> = group.nodes.iter().map(|n| n.attempt_id.as_str()).collect();
        assert_eq!(names, ["j-2-node-0", "j-2", "j-2-node-2"]);
        for (index, node) in group.nodes.iter().enumerate() {
            assert_eq!(
                variable(node, "AWS_BATCH_JOB_NODE_INDEX"),
                Some(index.to_string())
            );
            assert_eq!(
                variable(node, "AWS_BATCH_JOB_NUM_NODES").as_deref(),
                Some("3")
            );
            assert_eq!(
                variable(node, "AWS_BATCH_JOB_MAIN_NODE_INDEX").as_deref(),
                Some("1")
            );
            assert_eq!(
                variable(node, "AWS_BATCH_JOB_ID"),
                Some(format!("j#{index}"))
            );
            assert_eq!(variable(node, "BATCH_JOB_ID").as_deref(), Some("j"));
            let count = node
                .environment
                .iter()
                .filter(|v| v.name == "AWS_BATCH_JOB_ID")
                .count();
            assert_eq!(count, 1, "one value per name");
        }
        let gpus: Vec<Vec<String>> = group.nodes.iter().map(|n| n.gpu_ids.clone()).collect();
        assert_eq!(
            gpus,
            [vec!["a", "b"], vec!["c"], vec!["d", "e"]],
            "in node order"
        );
        assert_eq!(group.nodes[2].command, ["work"]);
    }

    #[test]
    fn attempt_ids_name_job_and_attempt() {
        assert_eq!(attempt_id("abc", 2), "abc-2");
    }
}
