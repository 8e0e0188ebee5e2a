//! Building a SUBMITTED job from a SubmitJob request against what the store holds: the path the
//! HTTP handler, the schedule runner and the rule runner share. Queues, definitions and compute
//! environments come from the store's short-lived cache (`store::resource_cache`).

use crate::core::model::{DefinitionRef, Job, JobId, QueueName};
use crate::manifest::{build_job, FieldError, SubmitContext, SubmitJobRequest};
use crate::store::{Store, StoreError};

/// The job `request` asks for, or why it cannot be built (the request's fault: a queue or
/// definition that does not exist, a bad override), its fields named after `field_prefix`
/// (`""` for an API request, `"target."` for a schedule's or rule's target). The outer error is
/// the store's.
pub async fn build_from_store(
    store: &Store,
    request: &SubmitJobRequest,
    idempotency_key: Option<String>,
    now: i64,
    field_prefix: &str,
) -> Result<Result<Job, FieldError>, StoreError> {
    let field = |name: &str| format!("{field_prefix}{name}");
    let queue_name = match QueueName::try_from(request.job_queue.clone()) {
        Ok(name) => name,
        Err(message) => return Ok(Err(FieldError::new(field("jobQueue"), message))),
    };
    let Some(queue) = store.job_queue_for_submit(&queue_name).await? else {
        return Ok(Err(FieldError::new(
            field("jobQueue"),
            format!("queue \"{queue_name}\" does not exist; see `batchctl get queues`"),
        )));
    };
    let definition = match DefinitionRef::parse(&request.job_definition) {
        Ok(reference) => store.job_definition_for_submit(&reference).await?,
        Err(message) => return Ok(Err(FieldError::new(field("jobDefinition"), message))),
    };
    let Some(definition) = definition else {
        return Ok(Err(FieldError::new(
            field("jobDefinition"),
            format!(
                "job definition \"{}\" does not exist; see `batchctl get definitions`",
                request.job_definition
            ),
        )));
    };
    if !definition.active {
        let revision = definition.definition.revision;
        return Ok(Err(FieldError::new(
            field("jobDefinition"),
            match DefinitionRef::parse(&request.job_definition).map(|r| r.revision) {
                Ok(Some(_)) => format!(
                    "job definition \"{}\" revision {revision} is INACTIVE (deregistered); submit another revision, or apply the definition again to register a new one",
                    definition.definition.name
                ),
                Ok(None) | Err(_) => format!(
                    "every revision of job definition \"{}\" is INACTIVE (deregistered; the latest is {revision}); apply the definition again to register a new revision",
                    definition.definition.name
                ),
            },
        )));
    }
    let environments = store.compute_environments_for_submit().await?;
    let context = SubmitContext {
        definition: &definition.definition,
        queue: &queue,
        environments: &environments,
    };
    let job_id = new_job_id();
    let job = match build_job(request, &context, job_id, idempotency_key, now) {
        Ok(job) => job,
        Err(error) => return Ok(Err(error)),
    };
    if !job.spec.consumable_resources.is_empty() {
        let stock = store.consumable_stock().await?;
        if let Err((index, message)) =
            crate::core::consumable::check_requests(&job.spec.consumable_resources, &stock)
        {
            let asked_by = match request.consumable_resource_properties_override {
                Some(_) => "consumableResourcePropertiesOverride",
                None => "jobDefinition: its consumableResourceProperties",
            };
            return Ok(Err(FieldError::new(
                field(&format!("{asked_by}.consumableResourceList[{index}]")),
                message,
            )));
        }
    }
    Ok(Ok(job))
}

/// A new job's id: a UUID (as AWS Batch's), of version 7 — its first 48 bits are the time in
/// milliseconds — so that ids made one after another sort together, and every index keyed by
/// job id (the jobs', attempts', output's and dependencies') grows at its end and is pruned from
/// its start instead of being written all over (see BENCHMARKS.md, "Time-ordered job ids").
pub fn new_job_id() -> JobId {
    JobId(uuid::Uuid::now_v7().to_string())
}
