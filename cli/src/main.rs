//! `batchctl`: `batchctl server` runs the scheduler; every other command is an HTTP client of it.

mod client;
mod commands;
mod events;
mod jobs;
mod output;
mod resources;
mod server_args;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use batchctl_scheduler::api::requests::{ApplyRequest, StopRequest};
use clap::Parser;

use client::Client;
use commands::{Cli, Command, ResourceKind, RulesCommand, ScheduleCommand};
use jobs::run_one_off;
use resources::{
    change_jobs, delete_all, deletion_targets, describe_resource, get_named, read_documents,
    update, watch_jobs,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Schedule(ScheduleCommand::Preview {
        expression,
        tz,
        from,
        n,
    }) = &cli.command
    {
        // Pure: no server, no runtime.
        return match preview(expression, tz, from.as_deref(), *n) {
            Ok(times) => {
                for time in times {
                    println!("{time}");
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Rules(RulesCommand::Test { pattern, event }) = &cli.command {
        return rules_test(pattern, event);
    }
    if let Command::Server(_) = &cli.command {
        return exec_server();
    }
    if let Command::Completion { shell } = &cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "batchctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if let Command::Shim { dir, lock_fd } = &cli.command {
        // The shim must stay small and synchronous: no runtime, no logging set-up.
        return match batchctl_executor::process::shim::run(dir, *lock_fd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("batchctl shim: {error}");
                ExitCode::FAILURE
            }
        };
    }
    // One thread: a client command waits on the network, and starting worker threads (and
    // reading the cgroup's CPU quota to size them) cost more than the command's own work.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(run(cli));
    // Reading standard input (`apply -f -`) may still block a thread at an error; do not wait.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `batchctl server …`: hands over to `batchctl-server` beside this program, with the arguments
/// after `server` (clap has checked them already), keeping this process's id and descriptors.
fn exec_server() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let program = match std::env::current_exe() {
        Ok(path) => path.with_file_name("batchctl-server"),
        Err(error) => {
            eprintln!("error: cannot find the batchctl executable: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut arguments = std::env::args_os().skip(1).peekable();
    // Global options may come before `server`; those that take a value take the next argument.
    let mut before: Vec<std::ffi::OsString> = Vec::new();
    while let Some(argument) = arguments.next() {
        if argument == "server" {
            break;
        }
        let takes_value = argument == "--server" || argument == "-o" || argument == "--output";
        before.push(argument);
        if takes_value {
            before.extend(arguments.next());
        }
    }
    let error = std::process::Command::new(&program)
        .args(arguments)
        .args(before)
        .exec();
    eprintln!(
        "error: cannot run {}: {error}; install batchctl-server beside batchctl (both are built by `cargo install --path cli`)",
        program.display()
    );
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::new(&cli.server)?;
    let format = cli.output;
    match cli.command {
        Command::Apply { file } => {
            let mut documents = read_documents(&file)?;
            resources::read_secret_files(&mut documents, &file)?;
            let answer = client
                .post("/v1/apply", &ApplyRequest { documents })
                .await?;
            output::print_applied(&answer, format)?;
        }
        Command::Submit(args) => return jobs::submit(&client, args, format).await,
        Command::Run {
            image,
            queue,
            command,
        } => return run_one_off(&client, &image, &queue, command).await,
        Command::Get {
            resource,
            names,
            watch,
            queue,
            status,
            array_job_id,
            selector,
            limit,
        } => {
            if selector.is_some() && !matches!(resource, ResourceKind::Jobs) {
                bail!("-l selects jobs by their tags: `batchctl get jobs -l team=graphics`");
            }
            if watch && !matches!(resource, ResourceKind::Jobs) {
                bail!("--watch follows jobs only: `batchctl get jobs --watch`");
            }
            if !names.is_empty() {
                return get_named(&client, resource, &names, format).await;
            }
            let list = match resource {
                ResourceKind::Jobs => {
                    let filter = client::JobListFilter {
                        queue: queue.clone(),
                        status: status.clone(),
                        array_job_id,
                        tag_selector: selector,
                    };
                    client.list_jobs(&filter, limit).await?
                }
                ResourceKind::Queues => client.get("/v1/jobqueues").await?,
                ResourceKind::Definitions => client.get("/v1/jobdefinitions").await?,
                ResourceKind::Computeenvironments => client.get("/v1/computeenvironments").await?,
                ResourceKind::Schedules => client.get("/v1/schedules").await?,
                ResourceKind::Rules => client.get("/v1/eventrules").await?,
                ResourceKind::Webhooktriggers => client.get("/v1/webhooktriggers").await?,
                ResourceKind::Notifications => client.get("/v1/notifications").await?,
                ResourceKind::Concurrencylimits => client.get("/v1/concurrencylimits").await?,
                ResourceKind::Consumableresources => client.get("/v1/consumableresources").await?,
                ResourceKind::Secrets => client.get("/v1/secrets").await?,
            };
            match resource {
                ResourceKind::Jobs => output::print_jobs(&list, format)?,
                ResourceKind::Queues => output::print_queues(&list, format)?,
                ResourceKind::Definitions => output::print_definitions(&list, format)?,
                ResourceKind::Computeenvironments => output::print_environments(&list, format)?,
                ResourceKind::Schedules => output::print_schedules(&list, format)?,
                ResourceKind::Rules => output::print_rules(&list, format)?,
                ResourceKind::Webhooktriggers => output::print_webhook_triggers(&list, format)?,
                ResourceKind::Notifications => output::print_notifications(&list, format)?,
                ResourceKind::Concurrencylimits => output::print_concurrency_limits(&list, format)?,
                ResourceKind::Consumableresources => {
                    output::print_consumable_resources(&list, format)?
                }
                ResourceKind::Secrets => output::print_secrets(&list, format)?,
            }
            if watch {
                watch_jobs(&client, queue.as_deref(), status.as_deref(), format).await?;
            }
        }
        Command::Delete {
            resource,
            names,
            file,
        } => {
            let targets = match (resource, file) {
                (_, Some(file)) => deletion_targets(&read_documents(&file)?)?,
                (Some(kind), None) if names.is_empty() => {
                    bail!(
                        "name what to delete: `batchctl delete {} NAME…`",
                        kind.collection()
                    )
                }
                (Some(kind), None) => names
                    .into_iter()
                    .map(|name| format!("/v1/{}/{name}", kind.collection()))
                    .collect(),
                (None, None) => bail!("name a kind and names, or give -f FILE"),
            };
            return delete_all(&client, &targets, format).await;
        }
        Command::Suspend { ids } => return change_jobs(&client, &ids, "suspend", format).await,
        Command::Resume { ids } => return change_jobs(&client, &ids, "resume", format).await,
        Command::Update {
            resource,
            name,
            changes,
        } => update(&client, resource, &name, changes, format).await?,
        Command::Describe {
            resource: ResourceKind::Jobs,
            id,
        } => {
            let job = client.get(&format!("/v1/jobs/{id}")).await?;
            output::describe_job(&job, format)?;
        }
        Command::Describe { resource, id } => {
            describe_resource(&client, resource, &id, format).await?
        }
        Command::Logs {
            follow,
            id,
            attempt,
        } => client.copy_logs(&id, attempt, follow).await?,
        Command::Why { id } => {
            let answer = client.get(&format!("/v1/jobs/{id}/why")).await?;
            output::print_why(&answer, format)?;
        }
        Command::Cancel { id, reason } => {
            let job = client
                .post(&format!("/v1/jobs/{id}/cancel"), &StopRequest { reason })
                .await?;
            output::print_job(&job, format)?;
        }
        Command::Terminate { id, reason } => {
            let job = client
                .post(&format!("/v1/jobs/{id}/terminate"), &StopRequest { reason })
                .await?;
            output::print_job(&job, format)?;
        }
        Command::Events(command) => return events::run(&client, command, format).await,
        Command::Dlq(command) => return events::dlq(&client, command, format).await,
        Command::Schedule(ScheduleCommand::Trigger { name }) => {
            let job = client
                .post(
                    &format!("/v1/schedules/{name}/trigger"),
                    &serde_json::Map::new(),
                )
                .await?;
            output::print_job(&job, format)?;
        }
        Command::Shim { .. }
        | Command::Completion { .. }
        | Command::Server(_)
        | Command::Schedule(ScheduleCommand::Preview { .. })
        | Command::Rules(RulesCommand::Test { .. }) => {
            unreachable!("handled before the runtime starts")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `batchctl rules test`: 0 on a match, 1 on none, 2 when the pattern or event is unusable.
fn rules_test(pattern: &std::path::Path, event: &std::path::Path) -> ExitCode {
    let read = |path: &std::path::Path| -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not JSON or YAML", path.display()))
    };
    let parsed = read(pattern).and_then(|value| {
        batchctl_scheduler::core::event_pattern::EventPattern::parse(&value)
            .map_err(|error| anyhow::anyhow!("{}: {error}", pattern.display()))
    });
    let (parsed, event) = match (parsed, read(event)) {
        (Ok(parsed), Ok(event)) => (parsed, event),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    if !event.is_object() {
        eprintln!("error: {}: an event is a JSON object", event);
        return ExitCode::from(2);
    }
    if parsed.matches(&event) {
        println!("match");
        ExitCode::SUCCESS
    } else {
        println!("no match");
        ExitCode::from(1)
    }
}

/// `batchctl schedule preview`: the next `n` fire times, in the expression's zone, as RFC 3339.
pub(crate) fn preview(
    expression: &str,
    tz: &str,
    from: Option<&str>,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    use batchctl_scheduler::core::schedule;
    let zone: chrono_tz::Tz = tz.parse().map_err(|_| {
        anyhow::anyhow!("--tz: {tz:?} is not an IANA time zone (like Europe/Berlin)")
    })?;
    let parsed = schedule::parse_expression(expression)
        .map_err(|error| anyhow::anyhow!("{expression:?} {error}"))?;
    let from = match from {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|error| anyhow::anyhow!("--from: {text:?} is not an RFC 3339 time: {error}"))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    Ok(schedule::preview(&parsed, zone, from, from, n)
        .into_iter()
        .map(|time| time.with_timezone(&zone).to_rfc3339())
        .collect())
}
