//! `batchctl`: `batchctl server` runs the scheduler; every other command is an HTTP client of it.

mod client;
mod output;
mod server_args;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use client::Client;
use output::Format;
use server_args::ServerArgs;

#[derive(Parser)]
#[command(
    name = "batchctl",
    version,
    about = "A batch job scheduler and container runner in the spirit of AWS Batch"
)]
struct Cli {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "BATCHCTL_SERVER",
        default_value = "http://127.0.0.1:7700"
    )]
    server: String,
    /// How to print results.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler and its HTTP API (the `batchctl-server` program beside this one).
    Server(ServerArgs),
    /// Create or update compute environments, job queues and job definitions from a file.
    Apply {
        /// A YAML (several documents) or JSON file; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Submit a job.
    Submit {
        #[arg(long)]
        queue: String,
        /// NAME or NAME:REVISION.
        #[arg(long)]
        definition: String,
        #[arg(long)]
        name: Option<String>,
        /// A parameter for Ref:: substitution, KEY=VALUE (repeatable).
        #[arg(long = "param", value_parser = key_value)]
        params: Vec<(String, String)>,
        /// An environment variable override, KEY=VALUE (repeatable).
        #[arg(long = "env", value_parser = key_value)]
        env: Vec<(String, String)>,
        /// Submitting again with the same key returns the same job.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for another job to SUCCEED first, as the AWS CLI: `jobId=ID` (the whole job),
        /// `jobId=ID,type=N_TO_N` (child i waits for child i of array job ID), or `type=SEQUENTIAL`
        /// (this array's children run one after another). Repeatable.
        #[arg(long = "depends-on", value_parser = dependency)]
        depends_on: Vec<Value>,
        /// Make this an array job of N children (2 to 100000), `JOBID:0` … `JOBID:N-1`, each with
        /// BATCH_JOB_ARRAY_INDEX set.
        #[arg(long)]
        array_size: Option<u32>,
        /// The share of a fair-share queue the job counts against (required there).
        #[arg(long)]
        share_identifier: Option<String>,
        /// Order within its share, higher first; replaces the definition's schedulingPriority.
        #[arg(long)]
        scheduling_priority: Option<i64>,
        /// Block until the job ends; exit 0 only if it SUCCEEDED.
        #[arg(long)]
        wait: bool,
        /// A command overriding the definition's.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run a one-off command in an image, follow its output, and exit with its exit code.
    Run {
        image: String,
        #[arg(long, default_value = "default")]
        queue: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List resources.
    Get {
        #[arg(value_enum)]
        resource: ResourceKind,
        /// Only these (job ids, or names; a definition as NAME or NAME:REVISION).
        names: Vec<String>,
        /// After the list, print job state changes as they happen, until interrupted (jobs only;
        /// the --queue and --status filters apply).
        #[arg(short = 'w', long)]
        watch: bool,
        /// Jobs of this queue only.
        #[arg(long)]
        queue: Option<String>,
        /// Jobs in this status only.
        #[arg(long)]
        status: Option<String>,
        /// The children of this array job (which are otherwise left out).
        #[arg(long)]
        array_job_id: Option<String>,
        /// The most jobs to list, newest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Delete resources or finished jobs, by kind and name or as listed in a file (kubectl's
    /// `delete`). Job definitions are deregistered: all ACTIVE revisions, or NAME:REVISION.
    /// Queues and compute environments must be DISABLED first, as AWS Batch requires.
    Delete {
        /// The kind of what to delete (not with -f).
        #[arg(value_enum, required_unless_present = "file")]
        resource: Option<ResourceKind>,
        /// Names (job ids for jobs).
        #[arg(requires = "resource")]
        names: Vec<String>,
        /// Delete what this YAML or JSON file (as given to `apply -f`) describes; `-` reads
        /// standard input.
        #[arg(short = 'f', long = "filename", conflicts_with = "resource")]
        file: Option<PathBuf>,
    },
    /// Hold waiting jobs in their place: they are not placed until resumed (Kubernetes'
    /// `suspend`). An array job's waiting children are held with it.
    Suspend {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Let suspended jobs be placed again, from the place they kept.
    Resume {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Change a waiting job's scheduling priority, a queue's priority or state, or a compute
    /// environment's capacity or state; effective at the dispatcher's next pass.
    Update {
        #[arg(value_enum)]
        resource: UpdateKind,
        /// The job id, queue name or environment name.
        name: String,
        /// A job's order within its share (higher first).
        #[arg(long)]
        scheduling_priority: Option<i64>,
        /// A queue's priority (higher is served first).
        #[arg(long)]
        priority: Option<i64>,
        /// ENABLED or DISABLED (queues and environments).
        #[arg(long)]
        state: Option<String>,
        /// An environment's vCPUs (may be fractional).
        #[arg(long)]
        max_vcpus: Option<f64>,
        #[arg(long = "max-memory-mib")]
        max_memory_mib: Option<u64>,
        #[arg(long)]
        max_gpus: Option<u64>,
    },
    /// Show one job or resource in full: a queue with its job counts and latest jobs, a
    /// schedule with its next ticks, a rule with its latest deliveries, a definition's revisions.
    Describe {
        #[arg(value_enum)]
        resource: ResourceKind,
        /// A job id or a resource name.
        id: String,
    },
    /// Print a shell completion script: `source <(batchctl completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a job attempt's output.
    Logs {
        /// Keep printing until the attempt ends.
        #[arg(short = 'f', long)]
        follow: bool,
        id: String,
        /// Which attempt (1, 2, …); the current or last one by default.
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// Explain what keeps a job from running: queue position, capacity, dependencies, backoff.
    Why { id: String },
    /// Cancel a job that has not started.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop a job, killing its work if it is STARTING or RUNNING.
    Terminate {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Schedules: preview an expression's fire times (no server needed), or fire one now.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Event rules: test a pattern against an event (no server needed).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Events: put one on the bus, or list the latest.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The dead-letter list of notifications whose retries are spent.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The supervising process of one attempt (started by the server; not for people).
    #[command(hide = true)]
    Shim {
        dir: PathBuf,
        #[arg(long)]
        lock_fd: i32,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Print the next fire times of EXPR strictly after --from, one RFC 3339 time per line.
    Preview {
        /// `cron(…)` (AWS), a 5-field cron, `rate(N minutes|hours|days)`, `at(…)` or `@daily`.
        expression: String,
        /// IANA time zone the expression's wall times are in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start from this RFC 3339 time instead of now (also where a rate counts from).
        #[arg(long)]
        from: Option<String>,
        /// How many fire times.
        #[arg(short = 'n', default_value_t = 5)]
        n: usize,
    },
    /// Fire a schedule now (its overlap policy still applies).
    Trigger { name: String },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Put an event on the bus; prints its id.
    Put {
        #[arg(long)]
        source: String,
        #[arg(long)]
        detail_type: String,
        /// A JSON object.
        #[arg(long, default_value = "{}")]
        detail: String,
        /// The event's id; putting the same id again stores it once.
        #[arg(long)]
        id: Option<String>,
    },
    /// Print events as they arrive on the bus (one JSON object per line) until interrupted.
    Watch {
        /// Only events matching this EventBridge pattern (a JSON or YAML file).
        #[arg(long)]
        pattern: Option<PathBuf>,
        /// Start after this sequence number instead of now.
        #[arg(long)]
        after: Option<i64>,
    },
    /// List events on the bus, oldest first.
    List {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters.
    List,
    /// Send dead letters again (of one notification, or all).
    Redrive {
        #[arg(long)]
        notification: Option<String>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Exit 0 if the event matches the pattern, 1 if not, 2 if either is invalid.
    Test {
        /// An EventBridge event pattern (JSON or YAML).
        #[arg(long)]
        pattern: PathBuf,
        /// An event (JSON or YAML).
        #[arg(long)]
        event: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ResourceKind {
    #[value(alias = "job")]
    Jobs,
    #[value(alias = "queue", alias = "jobqueues")]
    Queues,
    #[value(alias = "definition", alias = "jobdefinitions")]
    Definitions,
    #[value(alias = "computeenvironment", alias = "ce")]
    Computeenvironments,
    #[value(alias = "schedule")]
    Schedules,
    #[value(alias = "rule", alias = "eventrules")]
    Rules,
    #[value(alias = "webhooktrigger", alias = "hooks")]
    Webhooktriggers,
    #[value(alias = "notification")]
    Notifications,
}

impl ResourceKind {
    /// The kind's collection under `/v1`.
    fn collection(self) -> &'static str {
        match self {
            ResourceKind::Jobs => "jobs",
            ResourceKind::Queues => "jobqueues",
            ResourceKind::Definitions => "jobdefinitions",
            ResourceKind::Computeenvironments => "computeenvironments",
            ResourceKind::Schedules => "schedules",
            ResourceKind::Rules => "eventrules",
            ResourceKind::Webhooktriggers => "webhooktriggers",
            ResourceKind::Notifications => "notifications",
        }
    }
}

/// The resources of a kind, as `get` lists them.
async fn list_of(client: &Client, resource: ResourceKind) -> anyhow::Result<Value> {
    client.get(&format!("/v1/{}", resource.collection())).await
}

/// Whether a listed item is the one `name` names (a definition also as NAME:REVISION).
fn is_named(item: &Value, name: &str) -> bool {
    let own = item["metadata"]["name"].as_str().unwrap_or_default();
    match item["metadata"]["revision"].as_u64() {
        Some(revision) => own == name || format!("{own}:{revision}") == name,
        None => own == name,
    }
}

/// `get KIND NAME…`: those items, printed as the list is; fails naming any not found.
async fn get_named(
    client: &Client,
    resource: ResourceKind,
    names: &[String],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    if let ResourceKind::Jobs = resource {
        for id in names {
            match client.get(&format!("/v1/jobs/{id}")).await {
                Ok(job) => found.push(job),
                Err(error) => missing.push(format!("{id}: {error:#}")),
            }
        }
    } else {
        let list = list_of(client, resource).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        for name in names {
            let matching: Vec<Value> = items
                .iter()
                .filter(|item| is_named(item, name))
                .cloned()
                .collect();
            if matching.is_empty() {
                missing.push(format!("{} \"{name}\" not found", resource.collection()));
            }
            found.extend(matching);
        }
    }
    let list = json!({ "items": found });
    if found.len() == 1 && matches!(format, Format::Json | Format::Yaml) {
        // One object, as kubectl prints `get KIND NAME -o json`.
        output::print_structured(&list["items"][0], format)?;
    } else {
        print_kind(&list, resource, format)?;
    }
    for problem in &missing {
        eprintln!("error: {problem}");
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_kind(list: &Value, resource: ResourceKind, format: Format) -> anyhow::Result<()> {
    match resource {
        ResourceKind::Jobs => output::print_jobs(list, format),
        ResourceKind::Queues => output::print_queues(list, format),
        ResourceKind::Definitions => output::print_definitions(list, format),
        ResourceKind::Computeenvironments => output::print_environments(list, format),
        ResourceKind::Schedules => output::print_schedules(list, format),
        ResourceKind::Rules => output::print_rules(list, format),
        ResourceKind::Webhooktriggers => output::print_webhook_triggers(list, format),
        ResourceKind::Notifications => output::print_notifications(list, format),
    }
}

/// `describe KIND NAME` for a resource: its document, then what a person asks next about it.
async fn describe_resource(
    client: &Client,
    resource: ResourceKind,
    name: &str,
    format: Format,
) -> anyhow::Result<()> {
    let list = list_of(client, resource).await?;
    let matching: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| is_named(item, name) || item["metadata"]["name"].as_str() == Some(name))
        .cloned()
        .collect();
    let Some(item) = matching.first() else {
        bail!(
            "{} \"{name}\" not found; see `batchctl get {}`",
            resource.collection(),
            resource.collection()
        );
    };
    let document = if matching.len() > 1 {
        json!({ "items": matching })
    } else {
        item.clone()
    };
    if output::print_structured(&document, format)? {
        return Ok(());
    }
    print!("{}", serde_yaml_ng::to_string(&document)?);
    match resource {
        ResourceKind::Queues => {
            let metrics = client.get_text("/metrics").await?;
            let prefix = format!("batchctl_queue_jobs{{queue=\"{name}\",status=\"");
            println!("\njobs by status:");
            for line in metrics.lines().filter(|line| line.starts_with(&prefix)) {
                let rest = &line[prefix.len()..];
                if let Some((status, count)) = rest.split_once("\"} ") {
                    println!("  {status:<10} {count}");
                }
            }
            let filter = client::JobListFilter {
                queue: Some(name.to_string()),
                ..Default::default()
            };
            println!("\nlatest jobs:");
            output::print_jobs(&client.list_jobs(&filter, 10).await?, Format::Table)?;
        }
        ResourceKind::Schedules => {
            let spec = &item["spec"];
            let expression = spec["scheduleExpression"].as_str().unwrap_or_default();
            let zone = spec["timeZone"]
                .as_str()
                .or(spec["scheduleExpressionTimezone"].as_str())
                .unwrap_or("UTC");
            println!("\nnext ticks ({zone}):");
            match preview(expression, zone, None, 5) {
                Ok(times) if times.is_empty() => println!("  none: the schedule has no tick left"),
                Ok(times) => times.iter().for_each(|time| println!("  {time}")),
                Err(error) => println!("  cannot be computed: {error}"),
            }
        }
        ResourceKind::Rules => {
            println!("\nlatest deliveries:");
            let deliveries = json!({ "items": item["status"]["recentDeliveries"] });
            output::print_deliveries(&deliveries)?;
        }
        ResourceKind::Jobs
        | ResourceKind::Definitions
        | ResourceKind::Computeenvironments
        | ResourceKind::Webhooktriggers
        | ResourceKind::Notifications => {}
    }
    Ok(())
}

/// `get jobs --watch`: each Job State Change from the server's event stream as it happens, as a
/// table row (or one JSON object per line with `-o json`), filtered like the list.
async fn watch_jobs(
    client: &Client,
    queue: Option<&str>,
    status: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let mut detail = serde_json::Map::new();
    if let Some(queue) = queue {
        detail.insert("jobQueue".into(), json!([queue]));
    }
    if let Some(status) = status {
        detail.insert("status".into(), json!([status.to_uppercase()]));
    }
    let mut pattern = json!({
        "source": ["batchctl"],
        "detail-type": [batchctl_scheduler::core::events::JOB_STATE_CHANGE],
    });
    if !detail.is_empty() {
        pattern["detail"] = Value::Object(detail);
    }
    client
        .follow_events(Some(&pattern.to_string()), None, |event| {
            output::print_job_change(&event, format)
        })
        .await
}

/// The documents of a YAML or JSON file (`-`: standard input).
fn read_documents(file: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    batchctl_scheduler::manifest::documents_from_text(&text)
        .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))
}

/// The paths to DELETE for a file's documents, in an order that lets each go: what refers to
/// others first (notifications, rules, schedules, definitions, queues), environments last.
fn deletion_targets(documents: &[Value]) -> anyhow::Result<Vec<String>> {
    use batchctl_scheduler::manifest::Kind;
    let order = [
        Kind::Notification,
        Kind::WebhookTrigger,
        Kind::EventRule,
        Kind::Schedule,
        Kind::JobDefinition,
        Kind::JobQueue,
        Kind::ComputeEnvironment,
    ];
    let mut targets = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let kind_name = document["kind"].as_str().unwrap_or_default();
        let Some(rank) = order.iter().position(|kind| kind.as_str() == kind_name) else {
            bail!("documents[{index}].kind: {kind_name:?} is not a batchctl kind; `delete -f` reads the documents `apply -f` takes in batchctl's form (kind, metadata.name)");
        };
        let Some(name) = document["metadata"]["name"].as_str() else {
            bail!("documents[{index}].metadata.name is missing");
        };
        targets.push((rank, format!("/v1/{}/{name}", order[rank].collection())));
    }
    targets.sort_by_key(|(rank, _)| *rank);
    Ok(targets.into_iter().map(|(_, path)| path).collect())
}

/// DELETEs each path in turn, going on past failures (as kubectl); fails if any did.
async fn delete_all(
    client: &Client,
    targets: &[String],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut deleted = Vec::new();
    let mut failed = 0;
    for target in targets {
        match client.delete(target).await {
            Ok(answer) => {
                let entries = answer["deleted"].as_array().cloned().unwrap_or_default();
                if entries.is_empty() {
                    eprintln!(
                        "{}: nothing left to deregister (every revision is INACTIVE already)",
                        target.trim_start_matches("/v1/")
                    );
                }
                deleted.extend(entries);
            }
            Err(error) => {
                failed += 1;
                eprintln!("error: {}: {error:#}", target.trim_start_matches("/v1/"));
            }
        }
    }
    output::print_deleted(&json!({ "deleted": deleted }), format)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum UpdateKind {
    Job,
    #[value(alias = "jobqueue")]
    Queue,
    #[value(alias = "ce")]
    Computeenvironment,
}

impl UpdateKind {
    fn collection(self) -> &'static str {
        match self {
            UpdateKind::Job => "jobs",
            UpdateKind::Queue => "jobqueues",
            UpdateKind::Computeenvironment => "computeenvironments",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            UpdateKind::Job => "job",
            UpdateKind::Queue => "queue",
            UpdateKind::Computeenvironment => "compute environment",
        }
    }

    fn flags(self) -> &'static str {
        match self {
            UpdateKind::Job => "--scheduling-priority N",
            UpdateKind::Queue => "--priority N and/or --state ENABLED|DISABLED",
            UpdateKind::Computeenvironment => {
                "--max-vcpus, --max-memory-mib, --max-gpus and/or --state ENABLED|DISABLED"
            }
        }
    }
}

/// `suspend` or `resume` each job in turn, going on past failures; fails if any did.
async fn change_jobs(
    client: &Client,
    ids: &[String],
    action: &str,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut jobs = Vec::new();
    let mut failed = false;
    for id in ids {
        match client
            .post(&format!("/v1/jobs/{id}/{action}"), &json!({}))
            .await
        {
            Ok(job) => jobs.push(job),
            Err(error) => {
                failed = true;
                eprintln!("error: {id}: {error:#}");
            }
        }
    }
    if !jobs.is_empty() {
        output::print_jobs(&json!({ "items": jobs }), format)?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `jobId=ID[,type=TYPE]` into a JobDependency.
fn dependency(text: &str) -> Result<Value, String> {
    let mut dependency = serde_json::Map::new();
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("jobId", id)) if !id.is_empty() => dependency.insert("jobId".into(), json!(id)),
            Some(("type", kind)) => dependency.insert("type".into(), json!(kind)),
            _ => return Err(format!("{part:?} is not jobId=ID or type=TYPE")),
        };
    }
    if dependency.is_empty() {
        return Err(format!("{text:?} names neither jobId=ID nor type=TYPE"));
    }
    Ok(Value::Object(dependency))
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

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
            let documents = read_documents(&file)?;
            let answer = client
                .post("/v1/apply", &json!({ "documents": documents }))
                .await?;
            output::print_applied(&answer, format)?;
        }
        Command::Submit {
            queue,
            definition,
            name,
            params,
            env,
            idempotency_key,
            depends_on,
            array_size,
            share_identifier,
            scheduling_priority,
            wait,
            command,
        } => {
            let mut overrides = serde_json::Map::new();
            if !command.is_empty() {
                overrides.insert("command".into(), json!(command));
            }
            if !env.is_empty() {
                let env: Vec<Value> = env
                    .iter()
                    .map(|(k, v)| json!({"name": k, "value": v}))
                    .collect();
                overrides.insert("environment".into(), json!(env));
            }
            let mut request = json!({
                "jobQueue": queue,
                "jobDefinition": definition,
                "parameters": params.into_iter().collect::<std::collections::BTreeMap<String, String>>(),
            });
            if let Some(name) = name {
                request["jobName"] = json!(name);
            }
            if !overrides.is_empty() {
                request["containerOverrides"] = Value::Object(overrides);
            }
            if !depends_on.is_empty() {
                request["dependsOn"] = json!(depends_on);
            }
            if let Some(size) = array_size {
                request["arrayProperties"] = json!({ "size": size });
            }
            if let Some(share) = share_identifier {
                request["shareIdentifier"] = json!(share);
            }
            if let Some(priority) = scheduling_priority {
                request["schedulingPriorityOverride"] = json!(priority);
            }
            let job = client.submit(&request, idempotency_key.as_deref()).await?;
            if !wait {
                output::print_job(&job, format)?;
                return Ok(ExitCode::SUCCESS);
            }
            if matches!(format, Format::Table) {
                eprintln!(
                    "job {} submitted; waiting for it to finish",
                    job["jobId"].as_str().unwrap_or_default()
                );
            }
            let job_id = job["jobId"].as_str().unwrap_or_default();
            let job = match job["arrayProperties"]["size"].as_u64() {
                Some(size) if matches!(format, Format::Table | Format::Wide) => {
                    wait_with_progress(&client, job_id, size).await?
                }
                Some(_) | None => client.wait_for_job(job_id).await?,
            };
            output::print_job(&job, format)?;
            return Ok(exit_for(&job));
        }
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
            limit,
        } => {
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
            scheduling_priority,
            priority,
            state,
            max_vcpus,
            max_memory_mib,
            max_gpus,
        } => {
            let mut patch = serde_json::Map::new();
            let mut refused = Vec::new();
            let mut set = |flag: &str, key: &str, value: Option<Value>, allowed: bool| {
                if let Some(value) = value {
                    if allowed {
                        patch.insert(key.to_string(), value);
                    } else {
                        refused.push(flag.to_string());
                    }
                }
            };
            let (job, queue, environment) = (
                matches!(resource, UpdateKind::Job),
                matches!(resource, UpdateKind::Queue),
                matches!(resource, UpdateKind::Computeenvironment),
            );
            set(
                "--scheduling-priority",
                "schedulingPriority",
                scheduling_priority.map(|v| json!(v)),
                job,
            );
            set("--priority", "priority", priority.map(|v| json!(v)), queue);
            set(
                "--state",
                "state",
                state.map(|v| json!(v.to_uppercase())),
                queue || environment,
            );
            set(
                "--max-vcpus",
                "maxVcpus",
                max_vcpus.map(|v| json!(v)),
                environment,
            );
            set(
                "--max-memory-mib",
                "maxMemoryMiB",
                max_memory_mib.map(|v| json!(v)),
                environment,
            );
            set(
                "--max-gpus",
                "maxGpus",
                max_gpus.map(|v| json!(v)),
                environment,
            );
            if !refused.is_empty() {
                bail!(
                    "{} do(es) not apply to a {}",
                    refused.join(", "),
                    resource.noun()
                );
            }
            if patch.is_empty() {
                bail!("say what to change: {}", resource.flags());
            }
            let path = format!("/v1/{}/{name}", resource.collection());
            let answer = client.patch(&path, &Value::Object(patch)).await?;
            match resource {
                UpdateKind::Job => output::print_job(&answer, format)?,
                UpdateKind::Queue | UpdateKind::Computeenvironment => {
                    output::print_applied(&answer, format)?
                }
            }
        }
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
                .post(
                    &format!("/v1/jobs/{id}/cancel"),
                    &json!({ "reason": reason }),
                )
                .await?;
            output::print_job(&job, format)?;
        }
        Command::Terminate { id, reason } => {
            let job = client
                .post(
                    &format!("/v1/jobs/{id}/terminate"),
                    &json!({ "reason": reason }),
                )
                .await?;
            output::print_job(&job, format)?;
        }
        Command::Events(EventsCommand::Put {
            source,
            detail_type,
            detail,
            id,
        }) => {
            let detail: Value = serde_json::from_str(&detail)
                .with_context(|| "--detail is not JSON".to_string())?;
            let mut entry = json!({"source": source, "detail-type": detail_type, "detail": detail});
            if let Some(id) = id {
                entry["id"] = json!(id);
            }
            let answer = client
                .post("/v1/events", &json!({ "entries": [entry] }))
                .await?;
            let first = &answer["entries"][0];
            if let Some(message) = first["errorMessage"].as_str() {
                bail!("the event was refused: {message}");
            }
            if !output::print_structured(&answer, format)? {
                println!("{}", first["eventId"].as_str().unwrap_or_default());
            }
        }
        Command::Dlq(DlqCommand::List) => {
            let answer = client.get("/v1/dlq").await?;
            output::print_dead_letters(&answer, format)?;
        }
        Command::Dlq(DlqCommand::Redrive { notification }) => {
            let answer = client
                .post("/v1/dlq/redrive", &json!({ "notification": notification }))
                .await?;
            if !output::print_structured(&answer, format)? {
                println!("{} dead letters sent again", answer["redriven"]);
            }
        }
        Command::Events(EventsCommand::Watch { pattern, after }) => {
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
        Command::Events(EventsCommand::List { after }) => {
            let answer = client.get(&format!("/v1/events?after={after}")).await?;
            output::print_events(&answer, format)?;
        }
        Command::Schedule(ScheduleCommand::Trigger { name }) => {
            let job = client
                .post(&format!("/v1/schedules/{name}/trigger"), &json!({}))
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
fn preview(
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

/// Polls until the job ends: every 25 ms for the first 2 s, so short jobs are seen at once, then
/// backing off to every 500 ms so long waits cost the server little.
fn exit_for(job: &Value) -> ExitCode {
    if job["status"] == "SUCCEEDED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `submit --wait` on an array job: a progress bar of its children on standard error (drawn only
/// when that is a terminal), from the parent's `statusSummary`, until the array has ended.
async fn wait_with_progress(client: &Client, job_id: &str, size: u64) -> anyhow::Result<Value> {
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
async fn run_one_off(
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
        .post("/v1/apply", &json!({ "documents": [definition] }))
        .await?;
    let request = json!({"jobQueue": queue, "jobDefinition": name, "jobName": name, "containerOverrides": {"command": command}});
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
