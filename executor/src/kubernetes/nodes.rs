//! Multi-node attempts on Kubernetes (`AttemptSpec::nodes`): an Indexed Job of one pod per node
//! and a headless Service, so each pod has a stable host name (`<attempt>-<i>.<service>`).
//! Pure: no API calls.
//!
//! Invariants:
//! - One pod template serves every node, so the nodes must run the same container; what tells
//!   them apart comes from the pod's completion index (`AWS_BATCH_JOB_NODE_INDEX` by the
//!   downward API, `AWS_BATCH_JOB_ID` as `<job>#<i>`). Different containers per node range are
//!   refused, naming the first node that differs.
//! - The Job ends with its main node: `successPolicy` completes it when the main node's index
//!   succeeds, `backoffLimit: 0` fails it when any pod fails; either way Kubernetes stops the
//!   other pods. `successPolicy` needs Kubernetes 1.31; older clusters are refused.
//! - The main node's address is its stable DNS name: `AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS`
//!   holds a name that resolves to the address, known before any pod runs.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, SuccessPolicy, SuccessPolicyRule};
use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, ObjectFieldSelector, Pod, Service, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::spec::{label_value, JobSettings};
use super::JOB_NAME_LABEL;
use crate::{AttemptSpec, NodeGroup, MAIN_NODE_ADDRESS_VARIABLE};

/// The annotation and label Kubernetes puts on each pod of an Indexed Job.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// On a multi-node attempt's Job: which index is the main node.
pub const ANNOTATION_MAIN_NODE: &str = "batchctl.io/main-node";
/// The oldest Kubernetes minor version whose Job has `successPolicy` (beta, on by default).
pub const MIN_MINOR_VERSION: u32 = 31;

/// Variables that differ from node to node, set from the pod's index instead.
const NODE_VARIABLES: [&str; 2] = ["AWS_BATCH_JOB_NODE_INDEX", "AWS_BATCH_JOB_ID"];

/// The headless Service of an attempt's nodes (a DNS-1035 label: it must start with a letter).
pub fn service_name(attempt: &str) -> String {
    label_value(&format!("nodes-{attempt}"))
}

/// The main node's stable DNS name, within the namespace.
pub fn main_node_host(attempt: &str, main_node: u32) -> String {
    format!("{attempt}-{main_node}.{}", service_name(attempt))
}

/// Why these nodes cannot share one pod template: the first node whose container differs from
/// node 0's, beyond its node variables.
pub fn uniformity_refusal(group: &NodeGroup) -> Option<String> {
    let shape = |node: &AttemptSpec| {
        let mut node = node.clone();
        node.attempt_id.clear();
        node.gpu_ids.clear();
        node.environment
            .retain(|variable| !NODE_VARIABLES.contains(&variable.name.as_str()));
        node
    };
    let first = shape(&group.nodes[0]);
    let differs = group.nodes.iter().position(|node| shape(node) != first)?;
    Some(format!(
        "CannotStartContainerError: on Kubernetes a multi-node job's nodes share one pod template, but node {differs} runs a different container from node 0; give every nodeRangeProperties entry the same container, or run the job on a docker environment"
    ))
}

/// Why a cluster of minor version `minor` cannot run multi-node attempts, or `None`.
pub fn version_refusal(minor: u32) -> Option<String> {
    (minor < MIN_MINOR_VERSION).then(|| {
        format!(
            "CannotStartContainerError: multi-node jobs need Kubernetes 1.{MIN_MINOR_VERSION} or newer (a Job's successPolicy ends it with its main node); this cluster is 1.{minor}"
        )
    })
}

/// Makes `job` (the main node's Job manifest) the Indexed Job of every node in `group`.
pub fn make_indexed(job: &mut Job, spec: &AttemptSpec, group: &NodeGroup) {
    let count = group.nodes.len() as i32;
    let main = group.main_node.to_string();
    job.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_MAIN_NODE.to_string(), main.clone());
    let Some(job_spec) = job.spec.as_mut() else {
        return;
    };
    job_spec.completion_mode = Some("Indexed".to_string());
    job_spec.completions = Some(count);
    job_spec.parallelism = Some(count);
    job_spec.success_policy = Some(SuccessPolicy {
        rules: vec![SuccessPolicyRule {
            succeeded_indexes: Some(main),
            succeeded_count: None,
        }],
    });
    let Some(pod) = job_spec.template.spec.as_mut() else {
        return;
    };
    pod.subdomain = Some(service_name(&spec.attempt_id));
    for container in &mut pod.containers {
        let env = container.env.get_or_insert_with(Vec::new);
        env.retain(|variable| {
            !NODE_VARIABLES.contains(&variable.name.as_str())
                && variable.name != MAIN_NODE_ADDRESS_VARIABLE
        });
        // The index first: a later variable may refer to it as `$(NAME)`.
        env.push(EnvVar {
            name: NODE_VARIABLES[0].to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
        env.push(EnvVar {
            name: NODE_VARIABLES[1].to_string(),
            value: Some(format!("{}#$({})", spec.job_id, NODE_VARIABLES[0])),
            ..EnvVar::default()
        });
        env.push(EnvVar {
            name: MAIN_NODE_ADDRESS_VARIABLE.to_string(),
            value: Some(main_node_host(&spec.attempt_id, group.main_node)),
            ..EnvVar::default()
        });
    }
}

/// The headless Service that gives the attempt's pods their DNS names, owned by its Job so that
/// Kubernetes deletes it with the Job.
pub fn service_manifest(spec: &AttemptSpec, settings: &JobSettings, owner: &Job) -> Service {
    let labels = BTreeMap::from([
        (
            super::spec::LABEL_JOB_ID.to_string(),
            label_value(&spec.job_id),
        ),
        (
            super::spec::LABEL_OWNER.to_string(),
            label_value(&settings.owner),
        ),
    ]);
    Service {
        metadata: ObjectMeta {
            name: Some(service_name(&spec.attempt_id)),
            labels: Some(labels),
            owner_references: owner.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "batch/v1".to_string(),
                    kind: "Job".to_string(),
                    name: spec.attempt_id.clone(),
                    uid,
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            // Nodes look each other up as they start, before any is ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(
                JOB_NAME_LABEL.to_string(),
                spec.attempt_id.clone(),
            )])),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The main node of a multi-node attempt's Job, or `None` for a Job of one pod.
pub fn main_node_of(job: &Job) -> Option<u32> {
    job.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_MAIN_NODE)?
        .parse()
        .ok()
}

/// The node (completion index) a pod runs, or `None` for a pod of a Job of one pod.
pub fn node_of(pod: &Pod) -> Option<u32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}
