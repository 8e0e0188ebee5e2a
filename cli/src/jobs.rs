//! Commands that wait on jobs: `submit --wait` (with a progress bar for arrays) and `run`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use batchctl_scheduler::api::requests::ApplyRequest;
use batchctl_scheduler::manifest::{ContainerOverrides, SubmitJobRequest};
use serde_json::{json, Value};

use crate::client::Client;

/// The exit code of `submit --wait`: success only if the job SUCCEEDED.
pub(crate) fn exit_for(job: &Value) -> ExitCode {
    if job["status"] == "SUCCEEDED" {
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
) -> anyhow::Result<Value> {
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40.cyan/blue} {pos}/{len} children finished {msg} [{elapsed}]",
        )
        .expect("a valid template")
        .progress_chars("##-"),
    );
    loop {
        let job = client.get(&format!("/v1/jobs/{job_id}")).await?;
        let summary = &job["arrayProperties"]["statusSummary"];
        let count = |status: &str| summary[status].as_u64().unwrap_or(0);
        bar.set_position(count("SUCCEEDED") + count("FAILED"));
        bar.set_message(format!(
            "({} running, {} failed)",
            count("RUNNING") + count("STARTING"),
            count("FAILED")
        ));
        if matches!(job["status"].as_str(), Some("SUCCEEDED" | "FAILED")) {
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
    let job = client.submit(&request, None).await?;
    let job_id = job["jobId"].as_str().unwrap_or_default().to_string();
    eprintln!("job {job_id}");
    client.copy_logs(&job_id, Some(1), true).await?;
    let job = client.wait_for_job(&job_id).await?;
    let exit_code = job["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|a| a["exitCode"].as_i64());
    match (job["status"].as_str(), exit_code) {
        (Some("SUCCEEDED"), _) => Ok(ExitCode::SUCCESS),
        (_, Some(code)) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        (status, None) => bail!(
            "job {job_id} ended {}: {}",
            status.unwrap_or("?"),
            job["statusReason"].as_str().unwrap_or("")
        ),
    }
}
