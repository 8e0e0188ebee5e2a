//! The command line: clap's definitions of every command and its arguments, and the parsers of
//! argument values.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use batchctl_scheduler::manifest::{ConsumableRequestSpec, JobDependencySpec};

use crate::output::Format;
use crate::server_args::ServerArgs;

#[derive(Parser)]
#[command(
    name = "batchctl",
    version,
    about = "A batch job scheduler and container runner in the spirit of AWS Batch"
)]
pub(crate) struct Cli {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "BATCHCTL_SERVER",
        default_value = "http://127.0.0.1:7700"
    )]
    pub(crate) server: String,
    /// How to print results.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the scheduler and its HTTP API (the `batchctl-server` program beside this one).
    Server(ServerArgs),
    /// Create or update compute environments, job queues and job definitions from a file.
    Apply {
        /// A YAML (several documents) or JSON file; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Submit a job.
    Submit(SubmitArgs),
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
        /// Jobs whose tags match, as kubectl's label selector: `team=graphics`, `tier!=gpu`,
        /// `team` (set), `!team` (not set); comma-separated, all must hold.
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
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
        #[command(flatten)]
        changes: UpdateFlags,
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
        /// The job's id; `JOB#2` for node 2 of a multi-node job (its main node's output without).
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
pub(crate) enum ScheduleCommand {
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
pub(crate) enum EventsCommand {
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
pub(crate) enum DlqCommand {
    /// List dead letters.
    List,
    /// Send dead letters again (of one notification, or all).
    Redrive {
        #[arg(long)]
        notification: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum RulesCommand {
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
pub(crate) enum ResourceKind {
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
    #[value(alias = "concurrencylimit", alias = "limits")]
    Concurrencylimits,
    #[value(alias = "consumableresource")]
    Consumableresources,
    #[value(alias = "secret")]
    Secrets,
}

impl ResourceKind {
    /// The kind's collection under `/v1`.
    pub(crate) fn collection(self) -> &'static str {
        match self {
            ResourceKind::Jobs => "jobs",
            ResourceKind::Queues => "jobqueues",
            ResourceKind::Definitions => "jobdefinitions",
            ResourceKind::Computeenvironments => "computeenvironments",
            ResourceKind::Schedules => "schedules",
            ResourceKind::Rules => "eventrules",
            ResourceKind::Webhooktriggers => "webhooktriggers",
            ResourceKind::Notifications => "notifications",
            ResourceKind::Concurrencylimits => "concurrencylimits",
            ResourceKind::Consumableresources => "consumableresources",
            ResourceKind::Secrets => "secrets",
        }
    }
}

/// What `update` changes; each flag applies to some kinds only (see `resources::update`).
#[derive(clap::Args, Debug)]
pub(crate) struct UpdateFlags {
    /// A job's order within its share (higher first).
    #[arg(long)]
    pub(crate) scheduling_priority: Option<i64>,
    /// A queue's priority (higher is served first).
    #[arg(long)]
    pub(crate) priority: Option<i64>,
    /// A queue's cap on jobs STARTING or RUNNING at once.
    #[arg(long)]
    pub(crate) max_running_jobs: Option<u32>,
    /// ENABLED or DISABLED (queues and environments).
    #[arg(long)]
    pub(crate) state: Option<String>,
    /// An environment's vCPUs (may be fractional).
    #[arg(long)]
    pub(crate) max_vcpus: Option<f64>,
    #[arg(long = "max-memory-mib")]
    pub(crate) max_memory_mib: Option<u64>,
    #[arg(long)]
    pub(crate) max_gpus: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum UpdateKind {
    Job,
    #[value(alias = "jobqueue")]
    Queue,
    #[value(alias = "ce")]
    Computeenvironment,
}

impl UpdateKind {
    pub(crate) fn collection(self) -> &'static str {
        match self {
            UpdateKind::Job => "jobs",
            UpdateKind::Queue => "jobqueues",
            UpdateKind::Computeenvironment => "computeenvironments",
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            UpdateKind::Job => "job",
            UpdateKind::Queue => "queue",
            UpdateKind::Computeenvironment => "compute environment",
        }
    }

    pub(crate) fn flags(self) -> &'static str {
        match self {
            UpdateKind::Job => "--scheduling-priority N",
            UpdateKind::Queue => {
                "--priority N, --max-running-jobs N and/or --state ENABLED|DISABLED"
            }
            UpdateKind::Computeenvironment => {
                "--max-vcpus, --max-memory-mib, --max-gpus and/or --state ENABLED|DISABLED"
            }
        }
    }
}

/// `--depends-on jobId=ID[,type=N_TO_N][,condition=afterany]`, as the API's `dependsOn` entry.
pub(crate) fn dependency(text: &str) -> Result<JobDependencySpec, String> {
    let mut dependency = JobDependencySpec::default();
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("jobId", id)) if !id.is_empty() => dependency.job_id = Some(id.into()),
            Some(("type", kind)) => dependency.dependency_type = Some(kind.into()),
            Some(("condition", condition)) => dependency.condition = Some(condition.into()),
            _ => {
                return Err(format!(
                    "{part:?} is not jobId=ID, type=TYPE or condition=afterok|afterany|afternotok"
                ))
            }
        };
    }
    if dependency.job_id.is_none() && dependency.dependency_type.is_none() {
        return Err(format!("{text:?} names neither jobId=ID nor type=TYPE"));
    }
    Ok(dependency)
}

pub(crate) fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `batchctl submit`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    #[arg(long)]
    pub(crate) queue: String,
    /// NAME or NAME:REVISION.
    #[arg(long)]
    pub(crate) definition: String,
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// A parameter for Ref:: substitution, KEY=VALUE (repeatable).
    #[arg(long = "param", value_parser = key_value)]
    pub(crate) params: Vec<(String, String)>,
    /// An environment variable override, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = key_value)]
    pub(crate) env: Vec<(String, String)>,
    /// A tag of the job, KEY=VALUE (repeatable), over its definition's tags.
    #[arg(long = "tag", value_parser = key_value)]
    pub(crate) tags: Vec<(String, String)>,
    /// Label the job's containers (Docker) and Jobs and pods (Kubernetes) with its tags
    /// (`--propagate-tags`), or not (`--propagate-tags=false`), over its definition's
    /// `propagateTags` (AWS Batch's field).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub(crate) propagate_tags: Option<bool>,
    /// Submitting again with the same key returns the same job.
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
    /// Wait for another job to SUCCEED first, as the AWS CLI: `jobId=ID` (the whole job),
    /// `jobId=ID,type=N_TO_N` (child i waits for child i of array job ID), or `type=SEQUENTIAL`
    /// (this array's children run one after another); `,condition=afterany` (after it ends
    /// either way) or `,condition=afternotok` (only after it failed) instead of the default
    /// afterok. Repeatable.
    #[arg(long = "depends-on", value_parser = dependency)]
    pub(crate) depends_on: Vec<JobDependencySpec>,
    /// Make this an array job of N children (2 to 100000), `JOBID:0` … `JOBID:N-1`, each with
    /// BATCH_JOB_ARRAY_INDEX set.
    #[arg(long)]
    pub(crate) array_size: Option<u32>,
    /// The array succeeds when at most M children failed (its success policy).
    #[arg(
        long,
        value_name = "M",
        requires = "array_size",
        conflicts_with = "succeeded_indexes"
    )]
    pub(crate) max_failed_children: Option<u32>,
    /// The array succeeds when the children at these indexes succeeded (`0-9,12`).
    #[arg(long, value_name = "RANGES", requires = "array_size")]
    pub(crate) succeeded_indexes: Option<String>,
    /// At most N children RUNNABLE, STARTING or RUNNING at once; the others wait PENDING for a
    /// slot (Slurm's `--array=0-999%N`).
    #[arg(long, value_name = "N", requires = "array_size")]
    pub(crate) max_concurrency: Option<u32>,
    /// A consumable resource the job asks for, `NAME=QUANTITY`, instead of the definition's
    /// (repeatable: all of them replace the definition's list).
    #[arg(long = "consumable-resource", value_name = "NAME=QUANTITY", value_parser = consumable_request)]
    pub(crate) consumable_resources: Vec<ConsumableRequestSpec>,
    /// The share of a fair-share queue the job counts against (required there).
    #[arg(long)]
    pub(crate) share_identifier: Option<String>,
    /// Order within its share, higher first; replaces the definition's schedulingPriority.
    #[arg(long)]
    pub(crate) scheduling_priority: Option<i64>,
    /// Block until the job ends; exit 0 only if it SUCCEEDED.
    #[arg(long)]
    pub(crate) wait: bool,
    /// A command overriding the definition's.
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

/// `NAME=QUANTITY` of `--consumable-resource`.
fn consumable_request(text: &str) -> Result<ConsumableRequestSpec, String> {
    let (name, quantity) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=QUANTITY"))?;
    let quantity = quantity
        .parse()
        .map_err(|_| format!("{quantity:?} is not a quantity (a whole number)"))?;
    Ok(ConsumableRequestSpec {
        consumable_resource: name.to_string(),
        quantity,
    })
}
