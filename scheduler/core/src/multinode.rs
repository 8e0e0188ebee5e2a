//! Multi-node parallel jobs (AWS Batch's `type: multinode`): a job of `numNodes` containers that
//! are placed together or not at all, find each other over a network of their own, and end with
//! their main node.
//!
//! The model keeps a multi-node job as **one job with one attempt at a time**: the attempt is the
//! whole gang (a Docker network and a container per node; a Kubernetes Indexed Job). So gang
//! placement is what placement already does for one job — the job reserves the sum of its nodes'
//! resources in one environment, or waits — and a retry starts every node again. Each node's
//! output is kept apart (`logs JOB#2`).

use serde::{Deserialize, Serialize};

use crate::model::{ContainerProperties, Resources};

/// The most nodes a job may have (AWS Batch's limit is 1,000; on one engine far fewer are useful).
pub const MAX_NODES: u32 = 64;

/// `nodeProperties`, checked: every node from 0 to `num_nodes - 1` is in exactly one range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeProperties {
    pub num_nodes: u32,
    pub main_node: u32,
    /// In the order of their first node.
    pub ranges: Vec<NodeRange>,
}

/// Nodes `first..=last` run `container`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRange {
    pub first: u32,
    pub last: u32,
    pub container: ContainerProperties,
}

impl NodeProperties {
    /// Checks a node count, main node and ranges (as `targetNodes` text, with their containers),
    /// naming the offending range by its position in the list.
    pub fn new(
        num_nodes: u32,
        main_node: u32,
        ranges: Vec<(String, ContainerProperties)>,
    ) -> Result<NodeProperties, (String, String)> {
        if !(1..=MAX_NODES).contains(&num_nodes) {
            return Err((
                "numNodes".into(),
                format!("is {num_nodes}; give 1 to {MAX_NODES} nodes"),
            ));
        }
        if main_node >= num_nodes {
            return Err((
                "mainNode".into(),
                format!(
                    "is {main_node}, which is not a node of {num_nodes} (nodes are numbered from 0)"
                ),
            ));
        }
        if ranges.is_empty() {
            return Err((
                "nodeRangeProperties".into(),
                "is empty: give at least one range, e.g. targetNodes: \"0:\"".into(),
            ));
        }
        let mut checked: Vec<NodeRange> = Vec::with_capacity(ranges.len());
        for (position, (target, container)) in ranges.into_iter().enumerate() {
            let field = format!("nodeRangeProperties[{position}].targetNodes");
            let (first, last) = target_nodes(&target, num_nodes).map_err(|e| (field.clone(), e))?;
            if let Some(other) = checked.iter().find(|r| first <= r.last && r.first <= last) {
                return Err((
                    field,
                    format!(
                        "{target:?} overlaps nodes {}:{} of an earlier range; each node must be in one range",
                        other.first, other.last
                    ),
                ));
            }
            checked.push(NodeRange {
                first,
                last,
                container,
            });
        }
        checked.sort_by_key(|range| range.first);
        let covered: u32 = checked.iter().map(|r| r.last - r.first + 1).sum();
        if covered != num_nodes {
            let missing = (0..num_nodes)
                .find(|node| !checked.iter().any(|r| (r.first..=r.last).contains(node)))
                .unwrap_or(0);
            return Err((
                "nodeRangeProperties".into(),
                format!("no range covers node {missing}; every node from 0 to {} needs one (\"0:\" covers all)", num_nodes - 1),
            ));
        }
        Ok(NodeProperties {
            num_nodes,
            main_node,
            ranges: checked,
        })
    }

    /// The container node `index` runs.
    pub fn container_of(&self, index: u32) -> &ContainerProperties {
        self.ranges
            .iter()
            .find(|range| (range.first..=range.last).contains(&index))
            .map(|range| &range.container)
            .unwrap_or(&self.ranges[0].container)
    }

    /// What the whole job reserves: the sum of its nodes' resources, placed together.
    pub fn total_resources(&self) -> Resources {
        (0..self.num_nodes).fold(
            Resources {
                vcpu_millis: 0,
                memory_mib: 0,
                gpus: 0,
            },
            |total, node| {
                let each = self.container_of(node).resources;
                Resources {
                    vcpu_millis: total.vcpu_millis + each.vcpu_millis,
                    memory_mib: total.memory_mib + each.memory_mib,
                    gpus: total.gpus + each.gpus,
                }
            },
        )
    }
}

/// AWS Batch's `targetNodes`: `"2"`, `"0:3"`, `"1:"` (to the last node), `":3"` (from node 0).
pub fn target_nodes(text: &str, num_nodes: u32) -> Result<(u32, u32), String> {
    let number = |part: &str, default: u32| -> Result<u32, String> {
        match part.trim() {
            "" => Ok(default),
            digits => digits.parse::<u32>().map_err(|_| {
                format!("{text:?} is not a node range; write \"N\", \"N:M\", \"N:\" or \":M\"")
            }),
        }
    };
    let (first, last) = match text.split_once(':') {
        Some((first, last)) => (
            number(first, 0)?,
            number(last, num_nodes.saturating_sub(1))?,
        ),
        None if text.trim().is_empty() => {
            return Err("is empty; write \"N\", \"N:M\", \"N:\" or \":M\"".into())
        }
        None => {
            let node = number(text, 0)?;
            (node, node)
        }
    };
    if first > last {
        return Err(format!("{text:?} ends before it starts"));
    }
    if last >= num_nodes {
        return Err(format!(
            "{text:?} names node {last}, but the job has {num_nodes} (nodes are numbered from 0)"
        ));
    }
    Ok((first, last))
}

/// A node's own id, as AWS Batch names it: `JOB#2`.
pub fn node_job_id(job_id: &str, node: u32) -> String {
    format!("{job_id}#{node}")
}

/// `JOB#2` → (`JOB`, 2); `None` for an id without a node.
pub fn split_node_job_id(text: &str) -> Option<(&str, u32)> {
    let (job, node) = text.rsplit_once('#')?;
    let node = node.parse().ok()?;
    Some((job, node))
}

/// What a node's container is called beside its attempt's: the main node's is the attempt's own
/// name (so a backend that knows an attempt by its main container finds it), every other one
/// `<attempt>-node-<i>`.
pub fn node_attempt_id(attempt_id: &str, node: u32, main_node: u32) -> String {
    match node == main_node {
        true => attempt_id.to_string(),
        false => format!("{attempt_id}-node-{node}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ImagePullPolicy;

    fn container(image: &str, vcpus: u64) -> ContainerProperties {
        ContainerProperties {
            image: image.into(),
            command: vec!["true".into()],
            environment: vec![],
            resources: Resources {
                vcpu_millis: vcpus * 1000,
                memory_mib: 128,
                gpus: 0,
            },
            working_dir: None,
            user: None,
            image_pull_policy: ImagePullPolicy::IfNotPresent,
            privileged: false,
            capabilities: vec![],
            secrets: vec![],
            linux: Default::default(),
            storage: Default::default(),
        }
    }

    #[test]
    fn target_nodes_reads_aws_forms() {
        type Case = (&'static str, u32, Result<(u32, u32), &'static str>);
        let cases: &[Case] = &[
            ("0:", 3, Ok((0, 2))),
            (":1", 3, Ok((0, 1))),
            ("1:2", 3, Ok((1, 2))),
            ("2", 3, Ok((2, 2))),
            (":", 4, Ok((0, 3))),
            ("3", 3, Err("names node 3")),
            ("2:1", 3, Err("ends before")),
            ("a:", 3, Err("not a node range")),
            ("", 3, Err("is empty")),
        ];
        for (text, nodes, expected) in cases {
            match (target_nodes(text, *nodes), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text}"),
                (Err(got), Err(part)) => assert!(got.contains(part), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn ranges_must_cover_every_node_once() {
        let ok = NodeProperties::new(
            3,
            0,
            vec![
                ("1:".into(), container("w", 1)),
                ("0".into(), container("m", 2)),
            ],
        )
        .unwrap();
        assert_eq!(ok.ranges[0].first, 0, "sorted by first node");
        assert_eq!(ok.container_of(0).image, "m");
        assert_eq!(ok.container_of(2).image, "w");
        assert_eq!(ok.total_resources().vcpu_millis, 4000);

        let refused = [
            (
                NodeProperties::new(0, 0, vec![("0:".into(), container("a", 1))]),
                "numNodes",
            ),
            (
                NodeProperties::new(2, 2, vec![("0:".into(), container("a", 1))]),
                "mainNode",
            ),
            (NodeProperties::new(2, 0, vec![]), "nodeRangeProperties"),
            (
                NodeProperties::new(
                    3,
                    0,
                    vec![
                        ("0:1".into(), container("a", 1)),
                        ("1:".into(), container("b", 1)),
                    ],
                ),
                "nodeRangeProperties[1].targetNodes",
            ),
            (
                NodeProperties::new(3, 0, vec![("0:1".into(), container("a", 1))]),
                "nodeRangeProperties",
            ),
        ];
        for (result, field) in refused {
            let (got, message) = result.unwrap_err();
            assert_eq!(got, field, "{message}");
        }
    }

    #[test]
    fn node_ids_and_names() {
        assert_eq!(node_job_id("abc", 2), "abc#2");
        assert_eq!(split_node_job_id("abc#2"), Some(("abc", 2)));
        assert_eq!(split_node_job_id("abc"), None);
        assert_eq!(split_node_job_id("abc#x"), None);
        assert_eq!(node_attempt_id("abc-1", 0, 0), "abc-1");
        assert_eq!(node_attempt_id("abc-1", 2, 0), "abc-1-node-2");
    }
}
