//! Building a SUBMITTED job from a SubmitJob request against what the store holds: the path the
//! schedule and rule runners share (the HTTP handler does the same, answering with field errors).

use crate::core::model::{DefinitionRef, Job, JobId, QueueName};
use crate::manifest::{build_job, FieldError, SubmitContext, SubmitJobRequest};
use crate::store::{Store, StoreError};

/// The job `request` asks for, or why it cannot be built (the request's fault: a queue or
/// definition that does not exist, a bad override). The outer error is the store's.
pub async fn build_from_store(
    store: &Store,
    request: &SubmitJobRequest,
    now: i64,
) -> Result<Result<Job, FieldError>, StoreError> {
    let Ok(queue_name) = QueueName::try_from(request.job_queue.clone()) else {
        return Ok(Err(FieldError::new(
            "target.jobQueue",
            "is not a queue name",
        )));
    };
    let Some(queue) = store.job_queue(&queue_name).await? else {
        return Ok(Err(FieldError::new(
            "target.jobQueue",
            format!("queue \"{queue_name}\" does not exist"),
        )));
    };
    let definition = match DefinitionRef::parse(&request.job_definition) {
        Ok(reference) => store.job_definition(&reference).await?,
        Err(message) => return Ok(Err(FieldError::new("target.jobDefinition", message))),
    };
    let Some(definition) = definition else {
        return Ok(Err(FieldError::new(
            "target.jobDefinition",
            format!(
                "job definition \"{}\" does not exist",
                request.job_definition
            ),
        )));
    };
    let environments = store.compute_environments().await?;
    let context = SubmitContext {
        definition: &definition.definition,
        queue: &queue,
        environments: &environments,
    };
    let job_id = JobId(uuid::Uuid::new_v4().to_string());
    Ok(build_job(request, &context, job_id, None, now))
}
