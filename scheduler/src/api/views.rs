//! What the API returns: jobs in AWS Batch's DescribeJobs shape (camelCase, epoch-millisecond times),
//! and resources in the manifest shape they were applied in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::model::{
    ArrayRole, Attempt, DependencyCondition, ExitRule, Job, JobStatus, Resources,
};
use crate::manifest::{KeyValue, ResourceRequirement, API_VERSION};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    pub job_name: String,
    pub job_queue: String,
    /// `name:revision`.
    pub job_definition: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    pub parameters: BTreeMap<String, String>,
    /// For a multi-node job, its main node's container with what all its nodes reserve.
    pub container: ContainerView,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node_properties: Option<NodePropertiesView>,
    pub retry_strategy: RetryStrategyView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutView>,
    pub attempts: Vec<AttemptView>,
    /// The attempt under way (STARTING or RUNNING), which `attempts` lists only once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_attempt: Option<CurrentAttemptView>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub depends_on: Vec<DependencyView>,
    /// A terminate request's reason, while the work is being stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_requested: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_properties: Option<ArrayPropertiesView>,
    /// Order within its share (AWS Batch's `schedulingPriority`); `batchctl update job` changes it.
    #[serde(default)]
    pub scheduling_priority: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub share_identifier: Option<String>,
    /// Held by `batchctl suspend` (Kubernetes' `suspend`): not placed until resumed.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub suspended: bool,
    /// Its tags: its definition's, with the submit's over them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub tags: BTreeMap<String, String>,
}

/// An array child in a list (`GET /v1/jobs?arrayJobId=…`), in the shape of AWS Batch's
/// JobSummary: no container or parameters, which are the parent's (`GET /v1/jobs/{parent}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildView {
    pub job_id: String,
    pub job_name: String,
    pub job_queue: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
    /// Attempts started, the one under way included.
    pub attempt_count: u32,
    pub array_properties: ArrayPropertiesView,
}

impl From<&crate::store::ChildSummary> for ChildView {
    fn from(child: &crate::store::ChildSummary) -> ChildView {
        ChildView {
            job_id: child.job_id.0.clone(),
            job_name: child.job_name.clone(),
            job_queue: child.queue.clone(),
            status: child.status,
            status_reason: child.status_reason.clone(),
            created_at: child.created_at,
            started_at: child.started_at,
            stopped_at: child.stopped_at,
            attempt_count: child.n_attempts,
            array_properties: ArrayPropertiesView {
                size: None,
                index: child.array_index,
                status_summary: None,
                success_policy: None,
                max_concurrency: None,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub dependency_type: Option<String>,
    /// `afterany` or `afternotok`; absent for the default, afterok (AWS Batch's only kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// AWS Batch's ArrayPropertiesDetail: `size` and `statusSummary` on a parent, `index` on a child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArrayPropertiesView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Children per status, every status listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_summary: Option<BTreeMap<JobStatus, u64>>,
    /// When the array succeeds although children failed; absent when every child must succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_policy: Option<crate::manifest::SuccessPolicySpec>,
    /// How many children may be RUNNABLE, STARTING or RUNNING at once; absent when unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

impl JobView {
    /// Fills in an array parent's `statusSummary` from its children's counts by status.
    pub fn with_status_summary(mut self, counts: Option<&BTreeMap<JobStatus, u64>>) -> JobView {
        if let Some(properties) = &mut self.array_properties {
            if properties.size.is_some() {
                let summary = JobStatus::ALL
                    .into_iter()
                    .map(|status| {
                        let count = counts.and_then(|c| c.get(&status)).copied();
                        (status, count.unwrap_or(0))
                    })
                    .collect();
                properties.status_summary = Some(summary);
            }
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub image: String,
    pub command: Vec<String>,
    pub environment: Vec<KeyValue>,
    pub resource_requirements: Vec<ResourceRequirement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The last finished attempt's exit code, as AWS Batch reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl ContainerView {
    fn of(container: &crate::core::model::ContainerProperties) -> ContainerView {
        ContainerView {
            image: container.image.clone(),
            command: container.command.clone(),
            environment: container
                .environment
                .iter()
                .map(|(name, value)| KeyValue {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            resource_requirements: resource_requirements(&container.resources),
            working_dir: container.working_dir.clone(),
            user: container.user.clone(),
            exit_code: None,
        }
    }
}

/// A multi-node job's nodes (AWS Batch's `nodeProperties`); each node's output is `logs JOB#N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePropertiesView {
    pub num_nodes: u32,
    pub main_node: u32,
    pub node_range_properties: Vec<NodeRangeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRangeView {
    /// `first:last`.
    pub target_nodes: String,
    pub container: ContainerView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategyView {
    pub attempts: u32,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub evaluate_on_exit: Vec<ExitRule>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backoff: Option<BackoffView>,
    /// How many disruptions `RETRY_WITHOUT_COUNT` may retry without spending an attempt.
    #[serde(default)]
    pub max_disruptions: u32,
    /// How many it has so far (attempts retried without counting).
    #[serde(default)]
    pub disruptions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackoffView {
    pub initial_delay_seconds: u64,
    pub factor: f64,
    pub max_delay_seconds: u64,
    pub jitter: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutView {
    pub attempt_duration_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt_number: u32,
    pub compute_environment: String,
    pub exit_code: Option<i32>,
    pub status_reason: String,
    pub started_at: Option<i64>,
    pub stopped_at: i64,
    /// What the attempt ran with (a retry's may have grown by `resourceAdjustments`); absent
    /// for attempts recorded before batchctl kept it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_requirements: Vec<ResourceRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentAttemptView {
    pub attempt_number: u32,
    pub compute_environment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> JobView {
        let container = &job.spec.container;
        JobView {
            job_id: job.job_id.0.clone(),
            job_name: job.job_name.to_string(),
            job_queue: job.queue.to_string(),
            job_definition: format!("{}:{}", job.spec.definition, job.spec.definition_revision),
            status: job.status,
            status_reason: job.status_reason.clone(),
            created_at: job.created_at,
            started_at: job.started_at,
            stopped_at: job.stopped_at,
            parameters: job.spec.parameters.clone(),
            container: ContainerView {
                exit_code: job.attempts.last().and_then(|attempt| attempt.exit_code),
                ..ContainerView::of(container)
            },
            node_properties: job.spec.nodes.as_ref().map(|nodes| NodePropertiesView {
                num_nodes: nodes.num_nodes,
                main_node: nodes.main_node,
                node_range_properties: nodes
                    .ranges
                    .iter()
                    .map(|range| NodeRangeView {
                        target_nodes: format!("{}:{}", range.first, range.last),
                        container: ContainerView::of(&range.container),
                    })
                    .collect(),
            }),
            retry_strategy: RetryStrategyView {
                attempts: job.spec.retry.attempts,
                evaluate_on_exit: job.spec.retry.evaluate_on_exit.clone(),
                backoff: job.spec.retry.backoff.as_ref().map(|b| BackoffView {
                    initial_delay_seconds: b.initial_delay_seconds,
                    factor: b.factor_percent as f64 / 100.0,
                    max_delay_seconds: b.max_delay_seconds,
                    jitter: b.jitter,
                }),
                max_disruptions: job.spec.retry.max_disruptions,
                disruptions: job.disruptions,
            },
            timeout: job.spec.timeout_seconds.map(|seconds| TimeoutView {
                attempt_duration_seconds: seconds,
            }),
            attempts: job.attempts.iter().map(AttemptView::from).collect(),
            current_attempt: job
                .current_attempt
                .as_ref()
                .map(|attempt| CurrentAttemptView {
                    attempt_number: attempt.number,
                    compute_environment: attempt.compute_environment.to_string(),
                    started_at: attempt.started_at,
                }),
            depends_on: job
                .spec
                .depends_on
                .iter()
                .map(|dependency| DependencyView {
                    job_id: dependency.job_id.as_ref().map(|id| id.0.clone()),
                    dependency_type: dependency.kind.aws_name().map(str::to_string),
                    condition: match dependency.condition {
                        DependencyCondition::AfterOk => None,
                        DependencyCondition::AfterAny | DependencyCondition::AfterNotOk => {
                            Some(dependency.condition.as_str().to_string())
                        }
                    },
                })
                .collect(),
            stop_requested: job.stop_requested.clone(),
            scheduling_priority: job.spec.scheduling_priority,
            share_identifier: job.spec.share_identifier.clone(),
            suspended: job.suspended,
            tags: job.spec.tags.clone(),
            array_properties: match &job.array {
                ArrayRole::Single => None,
                ArrayRole::Parent { size } => Some(ArrayPropertiesView {
                    size: Some(*size),
                    index: None,
                    status_summary: None,
                    success_policy: success_policy_view(&job.spec.array_success_policy),
                    max_concurrency: job.spec.array_max_concurrency,
                }),
                ArrayRole::Child { index, .. } => Some(ArrayPropertiesView {
                    size: None,
                    index: Some(*index),
                    status_summary: None,
                    success_policy: None,
                    max_concurrency: None,
                }),
            },
        }
    }
}

/// An array's success policy as it was submitted.
fn success_policy_view(
    policy: &crate::core::model::ArraySuccessPolicy,
) -> Option<crate::manifest::SuccessPolicySpec> {
    use crate::core::model::ArraySuccessPolicy;
    match policy {
        ArraySuccessPolicy::AllChildren => None,
        ArraySuccessPolicy::MaxFailedChildren(max) => Some(crate::manifest::SuccessPolicySpec {
            max_failed_children: Some(*max),
            succeeded_indexes: None,
        }),
        ArraySuccessPolicy::SucceededIndexes(ranges) => Some(crate::manifest::SuccessPolicySpec {
            max_failed_children: None,
            succeeded_indexes: Some(crate::core::array::index_ranges_text(ranges)),
        }),
    }
}

impl From<&Attempt> for AttemptView {
    fn from(attempt: &Attempt) -> AttemptView {
        AttemptView {
            attempt_number: attempt.number,
            compute_environment: attempt.compute_environment.to_string(),
            exit_code: attempt.exit_code,
            status_reason: attempt.status_reason.clone(),
            started_at: attempt.started_at,
            stopped_at: attempt.stopped_at,
            resource_requirements: attempt
                .resources
                .as_ref()
                .map(resource_requirements)
                .unwrap_or_default(),
        }
    }
}

pub fn resource_requirements(resources: &Resources) -> Vec<ResourceRequirement> {
    let vcpus = resources.vcpu_millis as f64 / 1000.0;
    let mut requirements = vec![
        ResourceRequirement {
            resource_type: "VCPU".into(),
            value: vcpus.to_string(),
        },
        ResourceRequirement {
            resource_type: "MEMORY".into(),
            value: resources.memory_mib.to_string(),
        },
    ];
    if resources.gpus > 0 {
        requirements.push(ResourceRequirement {
            resource_type: "GPU".into(),
            value: resources.gpus.to_string(),
        });
    }
    requirements
}

/// A stored resource, shaped as the document that applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceView {
    pub api_version: String,
    pub kind: String,
    pub metadata: ResourceMetadataView,
    pub spec: serde_json::Value,
    /// A job definition revision's ACTIVE or INACTIVE (deregistered), as AWS Batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMetadataView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

impl ResourceView {
    pub fn new(kind: &str, name: String, revision: Option<u32>, spec: serde_json::Value) -> Self {
        ResourceView {
            api_version: API_VERSION.into(),
            kind: kind.into(),
            metadata: ResourceMetadataView { name, revision },
            spec,
            status: None,
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A notification endpoint as read tokens may see it: user and password in the URL and the values of
/// its query (where services put their tokens) are hidden; scheme, host, port and path stay.
pub fn redacted_endpoint(endpoint: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(endpoint) else {
        return "(hidden: not a URL)".into();
    };
    // A user name alone can be the credential (`https://TOKEN@host`): both are hidden.
    if !url.username().is_empty() {
        let _ = url.set_username("hidden");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("hidden"));
    }
    if url.query().is_some() {
        let names: Vec<String> = url
            .query_pairs()
            .map(|(name, _)| name.into_owned())
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(names.iter().map(|name| (name.as_str(), "(hidden)")));
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redacted_endpoint;

    #[test]
    fn endpoint_credentials_are_hidden() {
        let cases = [
            (
                "https://hooks.example.com/in",
                "https://hooks.example.com/in",
            ),
            (
                "https://ghp_token@hooks.example.com/in",
                "https://hidden@hooks.example.com/in",
            ),
            (
                "https://ci:s3cret@hooks.example.com:8443/in",
                "https://hidden:hidden@hooks.example.com:8443/in",
            ),
            (
                "https://hooks.example.com/in?token=abc&team=x",
                "https://hooks.example.com/in?token=%28hidden%29&team=%28hidden%29",
            ),
        ];
        for (endpoint, shown) in cases {
            assert_eq!(redacted_endpoint(endpoint), shown);
        }
    }
}
