//! The event bus and notifications' dead letters: `events put|watch|list`, `dlq list|redrive`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use batchctl_scheduler::api::answers::{PutEventsAnswer, PutEventsEntry, RedriveAnswer};
use batchctl_scheduler::api::requests::{PutEventsEntryRequest, PutEventsRequest, RedriveRequest};
use serde_json::Value;

use crate::client::{Answer, Client};
use crate::commands::{DlqCommand, EventsCommand};
use crate::output::{self, Format};

pub(crate) async fn run(
    client: &Client,
    command: EventsCommand,
    format: Format,
) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::Put {
            source,
            detail_type,
            detail,
            id,
        } => {
            let detail: Value = serde_json::from_str(&detail)
                .with_context(|| "--detail is not JSON".to_string())?;
            let entry = PutEventsEntryRequest {
                source,
                detail_type,
                detail,
                id,
            };
            let answer: Answer<PutEventsAnswer> = client
                .post_as(
                    "/v1/events",
                    &PutEventsRequest {
                        entries: Some(vec![serde_json::to_value(entry)?]),
                    },
                )
                .await?;
            let event_id = match answer.typed.entries.first() {
                Some(PutEventsEntry::Accepted { event_id }) => event_id,
                Some(PutEventsEntry::Refused { error_message, .. }) => {
                    bail!("the event was refused: {error_message}")
                }
                None => bail!("the server answered for no entry"),
            };
            if !output::print_structured(&answer.raw, format)? {
                println!("{event_id}");
            }
        }
        EventsCommand::Watch { pattern, after } => {
            let pattern = match pattern {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let value: Value = serde_yaml_ng::from_str(&text)
                        .with_context(|| format!("{} is not JSON or YAML", path.display()))?;
                    Some(value.to_string())
                }
                None => None,
            };
            client.watch_events(pattern.as_deref(), after).await?;
        }
        EventsCommand::List { after } => {
            let answer = client.get(&format!("/v1/events?after={after}")).await?;
            output::print_events(&answer, format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dlq(
    client: &Client,
    command: DlqCommand,
    format: Format,
) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List => {
            let answer = client.get("/v1/dlq").await?;
            output::print_dead_letters(&answer, format)?;
        }
        DlqCommand::Redrive { notification } => {
            let answer: Answer<RedriveAnswer> = client
                .post_as("/v1/dlq/redrive", &RedriveRequest { notification })
                .await?;
            if !output::print_structured(&answer.raw, format)? {
                println!("{} dead letters sent again", answer.typed.redriven);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
