//! Commands that wait on jobs: `submit --wait` (with a progress bar for arrays) and `run`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use batchctl_scheduler::api::requests::ApplyRequest;
use batchctl_scheduler::api::views::JobView;
use batchctl_scheduler::core::model::JobStatus;
use batchctl_scheduler::manifest::{
    ArrayPropertiesSpec, ConsumableResourceProperties, ContainerOverrides, KeyValue,
    SubmitJobRequest, SuccessPolicySpec,
};
use serde_json::json;

use crate::client::{Answer, Client};
use crate::commands::SubmitArgs;
use crate::output::{self, Format};

/// The exit code of `submit --wait`: success only if the job SUCCEEDED.
pub(crate) fn exit_for(job: &JobView) -> ExitCode {
    if job.status == JobStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `submit --wait` on an array job: a progress bar of its children on standard error (drawn only
/// when that is a terminal), from the parent's `statusSummary`, until the array has ended.
pub(crate) async fn wait_with_progress(
    client: &Client,
    job_id: &str,
    size: u64,
) -> anyhow::Result<Answer<JobView>> {
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40.cyan/blue} {pos}/{len} children finished {msg} [{elapsed}]",
        )
        .expect("a valid template")
        .progress_chars("##-"),
    );
    loop {
        let job: Answer<JobView> = client.get_as(&format!("/v1/jobs/{job_id}")).await?;
        let summary = job
            .typed
            .array_properties
            .as_ref()
            .and_then(|properties| properties.status_summary.clone())
            .unwrap_or_default();
        let count = |status: JobStatus| summary.get(&status).copied().unwrap_or(0);
        bar.set_position(count(JobStatus::Succeeded) + count(JobStatus::Failed));
        bar.set_message(format!(
            "({} running, {} failed)",
            count(JobStatus::Running) + count(JobStatus::Starting),
            count(JobStatus::Failed)
        ));
        if job.typed.status.is_terminal() {
            bar.finish_and_clear();
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `batchctl run`: an implicit definition per image (`run-<image>`), the command as an override,
/// the output followed, and the job's exit code as ours (as `docker run`).
pub(crate) async fn run_one_off(
    client: &Client,
    image: &str,
    queue: &str,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let name: String = format!("run-{image}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    let definition = json!({
        "apiVersion": "batchctl/v1", "kind": "JobDefinition", "metadata": {"name": name},
        "spec": {"containerProperties": {"image": image, "command": ["true"]}}
    });
    client
        .post(
            "/v1/apply",
            &ApplyRequest {
                documents: vec![definition],
            },
        )
        .await?;
    let request = SubmitJobRequest {
        job_name: Some(name.clone()),
        job_queue: queue.to_string(),
        job_definition: name,
        container_overrides: Some(ContainerOverrides {
            command: Some(command),
            ..ContainerOverrides::default()
        }),
        ..SubmitJobRequest::default()
    };
    let job_id = client.submit(&request, None).await?.typed.job_id;
    eprintln!("job {job_id}");
    client.copy_logs(&job_id, Some(1), true).await?;
    let job = client.wait_for_job(&job_id).await?.typed;
    let exit_code = job.attempts.last().and_then(|attempt| attempt.exit_code);
    match (job.status, exit_code) {
        (JobStatus::Succeeded, _) => Ok(ExitCode::SUCCESS),
        (_, Some(code)) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        (status, None) => bail!(
            "job {job_id} ended {status}: {}",
            job.status_reason.as_deref().unwrap_or("")
        ),
    }
}

/// `batchctl submit`: the request as the API's `SubmitJobRequest`; with `--wait`, until the job
/// ended (a progress bar for an array on a terminal), exiting 0 only if it SUCCEEDED.
pub(crate) async fn submit(
    client: &Client,
    args: SubmitArgs,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let SubmitArgs {
        queue,
        definition,
        name,
        params,
        env,
        tags,
        propagate_tags,
        idempotency_key,
        depends_on,
        array_size,
        max_failed_children,
        succeeded_indexes,
        max_concurrency,
        consumable_resources,
        share_identifier,
        scheduling_priority,
        wait,
        command,
    } = args;
    let overrides = ContainerOverrides {
        command: (!command.is_empty()).then_some(command),
        environment: env
            .into_iter()
            .map(|(name, value)| KeyValue { name, value })
            .collect(),
        resource_requirements: Vec::new(),
    };
    let request = SubmitJobRequest {
        job_name: name,
        job_queue: queue,
        job_definition: definition,
        parameters: params.into_iter().collect(),
        container_overrides: (overrides != ContainerOverrides::default()).then_some(overrides),
        depends_on,
        array_properties: array_size.map(|size| ArrayPropertiesSpec {
            size,
            success_policy: (max_failed_children.is_some() || succeeded_indexes.is_some())
                .then_some(SuccessPolicySpec {
                    max_failed_children,
                    succeeded_indexes,
                }),
            max_concurrency,
        }),
        share_identifier,
        scheduling_priority_override: scheduling_priority,
        tags: tags.into_iter().collect(),
        propagate_tags,
        consumable_resource_properties_override: (!consumable_resources.is_empty()).then_some(
            ConsumableResourceProperties {
                consumable_resource_list: consumable_resources,
            },
        ),
        ..SubmitJobRequest::default()
    };
    let job = client.submit(&request, idempotency_key.as_deref()).await?;
    if !wait {
        output::print_job(&job.raw, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let job = job.typed;
    if matches!(format, Format::Table) {
        eprintln!("job {} submitted; waiting for it to finish", job.job_id);
    }
    let size = job.array_properties.as_ref().and_then(|array| array.size);
    let job = match size {
        Some(size) if matches!(format, Format::Table | Format::Wide) => {
            wait_with_progress(client, &job.job_id, u64::from(size)).await?
        }
        Some(_) | None => client.wait_for_job(&job.job_id).await?,
    };
    output::print_job(&job.raw, format)?;
    Ok(exit_for(&job.typed))
}
