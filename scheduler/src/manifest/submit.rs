//! The SubmitJob request (`POST /v1/jobs`, schedule and rule targets) and `build_job`.

use super::*;

/// What a submit depends on, each once. Which jobs exist, and whether an N_TO_N partner is an
/// array of the same size, is checked against the store by the caller.
pub(super) fn dependencies(
    specs: &[JobDependencySpec],
    array_size: Option<u32>,
) -> Result<Vec<Dependency>, FieldError> {
    if specs.len() > MAX_DEPENDENCIES {
        return Err(FieldError::new(
            "dependsOn",
            format!(
                "has {} entries; at most {MAX_DEPENDENCIES} are allowed",
                specs.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut dependencies = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let field = |name: &str| format!("dependsOn[{index}].{name}");
        let kind = match spec.dependency_type.as_deref() {
            None => DependencyKind::Whole,
            Some("N_TO_N") => DependencyKind::NToN,
            Some("SEQUENTIAL") => DependencyKind::Sequential,
            Some(other) => {
                return Err(FieldError::new(
                    field("type"),
                    format!("{other:?} is not a dependency type; use N_TO_N or SEQUENTIAL, or leave it out to wait for the whole job"),
                ))
            }
        };
        if kind != DependencyKind::Whole && array_size.is_none() {
            return Err(FieldError::new(
                field("type"),
                format!(
                    "{} dependencies are for array jobs; set arrayProperties.size, or leave type out to wait for the whole job",
                    kind.aws_name().unwrap_or_default()
                ),
            ));
        }
        let job_id = match (kind, spec.job_id.as_deref().map(str::trim)) {
            (DependencyKind::Sequential, None) => None,
            (DependencyKind::Sequential, Some(_)) => {
                return Err(FieldError::new(
                    field("jobId"),
                    "must be left out of a SEQUENTIAL dependency, which orders this array's own children",
                ))
            }
            (DependencyKind::Whole | DependencyKind::NToN, None | Some("")) => {
                return Err(FieldError::new(field("jobId"), "is empty; give a job id"))
            }
            (DependencyKind::Whole | DependencyKind::NToN, Some(id)) => Some(JobId(id.to_string())),
        };
        let condition = match spec.condition.as_deref().map(str::trim) {
            None => DependencyCondition::AfterOk,
            Some(text) => DependencyCondition::parse(text).ok_or_else(|| {
                FieldError::new(
                    field("condition"),
                    format!("{text:?} is not a condition; use afterok (the default), afterany or afternotok"),
                )
            })?,
        };
        if kind == DependencyKind::Sequential && condition != DependencyCondition::AfterOk {
            return Err(FieldError::new(
                field("condition"),
                "a SEQUENTIAL dependency runs each child after the one before it succeeded; leave condition out (afterok)",
            ));
        }
        let key = (job_id.clone(), kind == DependencyKind::Sequential);
        if seen.insert(key) {
            dependencies.push(Dependency {
                job_id,
                kind,
                condition,
            });
        }
    }
    Ok(dependencies)
}

/// Checks a job's dependencies against the jobs they name, as found in the store (each with its
/// array size): every named job must exist, and an N_TO_N partner must be an array job of the same
/// size. Dependencies can only name jobs that already exist, so they can never form a cycle.
pub fn check_dependency_targets(
    dependencies: &[Dependency],
    array_size: Option<u32>,
    found: &HashMap<JobId, Option<u32>>,
) -> Result<(), FieldError> {
    for (index, dependency) in dependencies.iter().enumerate() {
        let Some(job_id) = &dependency.job_id else {
            continue;
        };
        let field = format!("dependsOn[{index}].jobId");
        let Some(target_size) = found.get(job_id) else {
            return Err(FieldError::new(
                field,
                format!("job {job_id} does not exist; depend only on jobs already submitted"),
            ));
        };
        match dependency.kind {
            DependencyKind::NToN if *target_size != array_size => {
                return Err(FieldError::new(
                    field,
                    format!(
                        "an N_TO_N dependency needs an array job of the same size; job {job_id} has {} and this job {} children",
                        target_size.map_or("no array".to_string(), |size| format!("{size} children")),
                        array_size.unwrap_or(0)
                    ),
                ))
            }
            DependencyKind::NToN | DependencyKind::Whole | DependencyKind::Sequential => {}
        }
    }
    Ok(())
}

pub(super) fn array_size(
    properties: Option<&ArrayPropertiesSpec>,
) -> Result<Option<u32>, FieldError> {
    let Some(properties) = properties else {
        return Ok(None);
    };
    match properties.size {
        size @ 2..=MAX_ARRAY_SIZE => Ok(Some(size)),
        size => Err(FieldError::new(
            "arrayProperties.size",
            format!("is {size}; an array job has 2 to {MAX_ARRAY_SIZE} children (leave arrayProperties out for a single job)"),
        )),
    }
}

/// A submit request, as AWS Batch's SubmitJob: `jobName`, `jobQueue`, `jobDefinition` (`name` or
/// `name:revision`), `parameters`, `containerOverrides`, and per-job `retryStrategy` and `timeout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "jobName": "hello",
    "jobQueue": "default",
    "jobDefinition": "hello",
    "parameters": {"who": "you"}
}))]
pub struct SubmitJobRequest {
    #[serde(default)]
    pub job_name: Option<String>,
    pub job_queue: String,
    pub job_definition: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub container_overrides: Option<ContainerOverrides>,
    #[serde(default)]
    pub retry_strategy: Option<RetryStrategySpec>,
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    #[serde(default)]
    pub depends_on: Vec<JobDependencySpec>,
    #[serde(default)]
    pub array_properties: Option<ArrayPropertiesSpec>,
    /// The share of a fair-share queue this job counts against (required there, refused elsewhere).
    #[serde(default)]
    pub share_identifier: Option<String>,
    /// Replaces the definition's `schedulingPriority`.
    #[serde(default)]
    pub scheduling_priority_override: Option<i64>,
    /// Replaces the definition's `consumableResourceProperties`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumable_resource_properties_override: Option<ConsumableResourceProperties>,
    /// The job's tags, over its definition's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Whether the job's tags become its containers' labels; the definition's `propagateTags`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<bool>,
}

/// AWS Batch's ArrayProperties of SubmitJob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArrayPropertiesSpec {
    pub size: u32,
    /// When the array SUCCEEDS although some children failed (not in AWS Batch; Kubernetes
    /// Indexed Jobs' successPolicy): one of `maxFailedChildren` or `succeededIndexes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_policy: Option<SuccessPolicySpec>,
    /// How many children may be RUNNABLE, STARTING or RUNNING at once; the others wait PENDING
    /// for a slot (not in AWS Batch; Slurm's `--array=0-999%10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// The array's `maxConcurrency`, checked against its size: from 1 to the size.
pub(super) fn array_max_concurrency(
    properties: Option<&ArrayPropertiesSpec>,
    size: Option<u32>,
) -> Result<Option<u32>, FieldError> {
    let field = "arrayProperties.maxConcurrency";
    match (
        properties.and_then(|properties| properties.max_concurrency),
        size,
    ) {
        (None, _) => Ok(None),
        (Some(max), Some(size)) if (1..=size).contains(&max) => Ok(Some(max)),
        (Some(max), Some(size)) => Err(FieldError::new(
            field,
            format!("is {max}; give from 1 to the array's {size} children"),
        )),
        (Some(_), None) => Err(FieldError::new(
            field,
            "applies to array jobs only; give arrayProperties.size too",
        )),
    }
}

/// `arrayProperties.successPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessPolicySpec {
    /// The array succeeds when at most this many children failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_children: Option<u32>,
    /// The array succeeds when the children at these indexes (`0-9,12`) succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_indexes: Option<String>,
}

/// The array's success policy, checked against its size.
pub(super) fn array_success_policy(
    properties: Option<&ArrayPropertiesSpec>,
    size: Option<u32>,
) -> Result<ArraySuccessPolicy, FieldError> {
    let field = "arrayProperties.successPolicy";
    let (Some(policy), Some(size)) = (
        properties.and_then(|properties| properties.success_policy.as_ref()),
        size,
    ) else {
        return Ok(ArraySuccessPolicy::AllChildren);
    };
    match (policy.max_failed_children, &policy.succeeded_indexes) {
        (Some(max), None) if max < size => Ok(ArraySuccessPolicy::MaxFailedChildren(max)),
        (Some(max), None) => Err(FieldError::new(
            format!("{field}.maxFailedChildren"),
            format!("is {max}; give fewer than the array's {size} children"),
        )),
        (None, Some(text)) => crate::core::array::parse_index_ranges(text, size)
            .map(ArraySuccessPolicy::SucceededIndexes)
            .map_err(|message| FieldError::new(format!("{field}.succeededIndexes"), message)),
        (Some(_), Some(_)) | (None, None) => Err(FieldError::new(
            field,
            "give exactly one of maxFailedChildren and succeededIndexes",
        )),
    }
}

/// AWS Batch's JobDependency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDependencySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub dependency_type: Option<String>,
    /// `afterok` (the default), `afterany` or `afternotok`: which end of the job lets this one
    /// run, as Slurm's dependency types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// How many jobs one job may depend on (AWS Batch allows 20).
pub const MAX_DEPENDENCIES: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerOverrides {
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
    #[serde(default)]
    pub resource_requirements: Vec<ResourceRequirement>,
}

/// What a submit is checked against, read from the store.
pub struct SubmitContext<'a> {
    pub definition: &'a JobDefinition,
    pub queue: &'a JobQueue,
    pub environments: &'a [ComputeEnvironment],
}

/// Builds the job a request asks for (stored SUBMITTED, or RUNNABLE when it has nothing to wait
/// for: `core::state_machine::status_at_submit`): the definition's spec with the request's parameters
/// and overrides applied, checked against the queue and its environments.
pub fn build_job(
    request: &SubmitJobRequest,
    context: &SubmitContext<'_>,
    job_id: JobId,
    idempotency_key: Option<String>,
    now: i64,
) -> Result<Job, FieldError> {
    let SubmitContext {
        definition,
        queue,
        environments,
    } = context;
    if queue.state == ResourceState::Disabled {
        return Err(FieldError::new(
            "jobQueue",
            format!("queue \"{}\" is DISABLED and accepts no new jobs; enable it or submit to another queue", queue.name),
        ));
    }
    let job_name = JobName::try_from(
        request
            .job_name
            .clone()
            .unwrap_or_else(|| definition.name.to_string()),
    )
    .map_err(|m| FieldError::new("jobName", m))?;
    if definition.spec.nodes.is_some() {
        multinode_refusal(request)?;
    }
    let mut container = definition.spec.container.clone();
    let mut parameters = definition.spec.parameters.clone();
    parameters.extend(request.parameters.clone());
    if let Some(overrides) = &request.container_overrides {
        let within = |error: FieldError| error.within("containerOverrides");
        if let Some(command) = &overrides.command {
            if command.is_empty() {
                return Err(FieldError::new(
                    "containerOverrides.command",
                    "is empty; leave it out to run the definition's command",
                ));
            }
            container.command = command.clone();
        }
        for (name, value) in environment(&overrides.environment, "environment").map_err(within)? {
            match container
                .environment
                .iter_mut()
                .find(|(existing, _)| *existing == name)
            {
                Some(entry) => entry.1 = value,
                None => container.environment.push((name, value)),
            }
        }
        container.resources =
            resources(&overrides.resource_requirements, container.resources).map_err(within)?;
    }
    let fits_somewhere = queue.compute_environments.iter().any(|name| {
        environments
            .iter()
            .any(|e| e.name == *name && container.resources.fits_within(&e.capacity))
    });
    if !fits_somewhere {
        let needs = &container.resources;
        return Err(FieldError::new(
            "containerOverrides.resourceRequirements",
            format!(
                "the job needs {} vCPU, {} MiB and {} GPU, more than any compute environment of queue \"{}\" has; ask for less or add a larger environment",
                needs.vcpu_millis as f64 / 1000.0,
                needs.memory_mib,
                needs.gpus,
                queue.name
            ),
        ));
    }
    let share_identifier = match (&queue.fair_share, &request.share_identifier) {
        (Some(_), Some(share)) => {
            validate_share_identifier(share, false)
                .map_err(|reason| FieldError::new("shareIdentifier", reason))?;
            Some(share.clone())
        }
        (Some(_), None) => {
            return Err(FieldError::new(
                "shareIdentifier",
                format!("is required: queue \"{}\" has a fair-share schedulingPolicy; name the share this job counts against", queue.name),
            ))
        }
        (None, Some(_)) => {
            return Err(FieldError::new(
                "shareIdentifier",
                format!("queue \"{}\" has no schedulingPolicy; leave shareIdentifier out or submit to a fair-share queue", queue.name),
            ))
        }
        (None, None) => None,
    };
    let array_size = array_size(request.array_properties.as_ref())?;
    let array_success_policy = array_success_policy(request.array_properties.as_ref(), array_size)?;
    let array_max_concurrency =
        array_max_concurrency(request.array_properties.as_ref(), array_size)?;
    let depends_on = dependencies(&request.depends_on, array_size)?;
    // A submit's retryStrategy replaces the definition's, as in AWS Batch.
    let retry = match &request.retry_strategy {
        Some(strategy) => retry_policy(Some(strategy))?,
        None => definition.spec.retry.clone(),
    };
    let timeout_seconds = match &request.timeout {
        Some(timeout) => timeout_seconds(Some(timeout))?,
        None => definition.spec.timeout_seconds,
    };
    let spec = JobSpec {
        definition: definition.name.clone(),
        definition_revision: definition.revision,
        parameters,
        container,
        retry,
        timeout_seconds,
        depends_on,
        array_size,
        array_success_policy,
        array_max_concurrency,
        share_identifier,
        scheduling_priority: request
            .scheduling_priority_override
            .unwrap_or(definition.spec.scheduling_priority),
        max_log_bytes: definition.spec.max_log_bytes,
        chain_depth: 0,
        consumable_resources: match &request.consumable_resource_properties_override {
            Some(properties) => consumable_requests(properties)
                .map_err(|error| error.within("consumableResourcePropertiesOverride"))?,
            None => definition.spec.consumable_resources.clone(),
        },
        tags: {
            let mut merged = definition.spec.tags.clone();
            merged.extend(request.tags.clone());
            super::job_definition::tags(&merged)?
        },
        propagate_tags: request
            .propagate_tags
            .unwrap_or(definition.spec.propagate_tags),
        pod: definition.spec.pod.clone(),
        nodes: definition.spec.nodes.clone(),
    };
    Ok(Job {
        job_id,
        job_name,
        queue: queue.name.clone(),
        status: crate::core::state_machine::status_at_submit(&spec),
        status_reason: None,
        spec,
        created_at: now,
        started_at: None,
        stopped_at: None,
        n_attempts: 0,
        disruptions: 0,
        attempts: Vec::new(),
        current_attempt: None,
        stop_requested: None,
        idempotency_key,
        runnable_after: None,
        suspended: false,
        array: match array_size {
            Some(size) => ArrayRole::Parent { size },
            None => ArrayRole::Single,
        },
    })
}

/// What a submit of a multi-node definition may not ask for: an array of multi-node jobs (AWS
/// Batch runs none), and container overrides, which would have to say which nodes they are for
/// (AWS Batch's `nodeOverrides`, not supported yet).
fn multinode_refusal(request: &SubmitJobRequest) -> Result<(), FieldError> {
    if request.array_properties.is_some() {
        return Err(FieldError::new(
            "arrayProperties",
            "the job definition is multinode, and a multi-node job cannot be an array; submit one job per set of nodes",
        ));
    }
    if request.container_overrides.is_some() {
        return Err(FieldError::new(
            "containerOverrides",
            "the job definition is multinode, whose nodes take no container overrides (AWS Batch's nodeOverrides are not supported); change the definition's nodeRangeProperties or pass parameters",
        ));
    }
    Ok(())
}
