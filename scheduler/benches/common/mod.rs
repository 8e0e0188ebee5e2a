//! What the bench binaries share: the resources they apply, fresh databases, and submitted jobs.
// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use batchctl_executor::fake::{CallLog, FakeExecutor};
use batchctl_scheduler::core::model::{DefinitionRef, EnvironmentType, Job, QueueName};
use batchctl_scheduler::dispatcher::{Dispatcher, DispatcherConfig, Executors};
use batchctl_scheduler::manifest::{self, build_job, SubmitContext, SubmitJobRequest};
use batchctl_scheduler::store::{now_millis, Store, StoreLocation};
use sqlx::Connection;

/// The command line of a bench binary: `--name value` options and `--flag`s.
pub struct Arguments(Vec<String>);

impl Arguments {
    pub fn from_env() -> Arguments {
        Arguments(std::env::args().collect())
    }

    pub fn value(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .cloned()
    }

    /// A numeric option, or `default` when absent.
    pub fn number<N: std::str::FromStr>(&self, name: &str, default: N) -> N {
        self.value(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    /// Whether `--only` leaves `database` out.
    pub fn skips(&self, database: &str) -> bool {
        self.value("--only").is_some_and(|only| only != database)
    }
}

/// The median of some figures (the upper middle one of an even count).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// A dispatcher on `store` whose process environments run on a no-op executor (returned, to
/// count what it started), with logs flushed every 50 ms, as every bench here runs it.
pub fn noop_dispatcher(store: &Store) -> (Dispatcher, FakeExecutor) {
    // Benches count starts only; a record of every call would hold a copy of every spec.
    let fake = FakeExecutor::with_call_log(CallLog::Dropped);
    let executors = Executors::default().with(EnvironmentType::Process, Arc::new(fake.clone()));
    let dispatcher = Dispatcher::new(
        store.clone(),
        executors,
        DispatcherConfig {
            log_flush_interval: Duration::from_millis(50),
            ..DispatcherConfig::default()
        },
    );
    (dispatcher, fake)
}

/// A process environment too large to ever be full, a queue on it, and a no-op definition.
pub const RESOURCES: &str = r#"
apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: bench}
spec: {type: process, maxVcpus: 1000000, maxMemoryMiB: 100000000}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: bench}
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: bench}]}
---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: noop}
spec:
  containerProperties: {image: none, command: ["noop"], resourceRequirements: [{type: VCPU, value: "1"}, {type: MEMORY, value: "1"}]}
"#;

/// A fresh store with RESOURCES applied, on `database` (`sqlite` or `postgres`); `None` when
/// Postgres is asked for and BATCHCTL_TEST_DATABASE_URL is not set. Keep the directory alive.
pub async fn fresh_store(database: &str) -> Option<(Store, Option<tempfile::TempDir>)> {
    let (location, dir) = fresh_location(database).await?;
    let store = Store::open(&location).await.unwrap();
    apply_text(&store, RESOURCES).await;
    Some((store, dir))
}

/// Applies manifests, as `batchctl apply -f` would (without the API).
pub async fn apply_text(store: &Store, text: &str) {
    let documents = manifest::documents_from_text(text).unwrap();
    let valid: Vec<_> = documents
        .iter()
        .map(|d| (manifest::parse_document(d).unwrap(), d["spec"].clone()))
        .collect();
    store.apply(&valid, now_millis()).await.unwrap();
}

/// Gives the bench queue a `maxRunningJobs` cap, so placement counts and bounds its slots.
pub async fn cap_queue(store: &Store, max_running_jobs: u64) {
    let text = format!(
        "apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {{name: bench}}\nspec: {{priority: 1, maxRunningJobs: {max_running_jobs}, computeEnvironmentOrder: [{{order: 1, computeEnvironment: bench}}]}}\n"
    );
    apply_text(store, &text).await;
}

/// Configures the throttles without letting them bind, so placement does their bookkeeping for
/// every job: a concurrency limit keyed by the definition with room for every job, and a
/// REPLENISHABLE consumable resource of which each job asks one, with more than enough.
pub async fn throttle_without_binding(store: &Store) {
    let text = "apiVersion: batchctl/v1\nkind: ConcurrencyLimit\nmetadata: {name: per-definition}\n\
        spec: {key: jobDefinition, max: 1000000}\n---\n\
        apiVersion: batchctl/v1\nkind: ConsumableResource\nmetadata: {name: tokens}\n\
        spec: {totalQuantity: 1000000000}\n---\n\
        apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: noop}\nspec:\n\
        \x20 containerProperties: {image: none, command: [\"noop\"], resourceRequirements: [{type: VCPU, value: \"1\"}, {type: MEMORY, value: \"1\"}]}\n\
        \x20 consumableResourceProperties: {consumableResourceList: [{consumableResource: tokens, quantity: 1}]}\n";
    apply_text(store, text).await;
}

/// Applies an event rule that matches every Job State Change, so transitions emit events.
pub async fn listen_to_job_events(store: &Store) {
    let text = "apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {name: all-jobs}\nspec:\n  eventPattern: {source: [batchctl]}\n  target: {jobQueue: bench, jobDefinition: noop}\n";
    apply_text(store, text).await;
    assert!(store.refresh_job_event_interest().await.unwrap());
}

/// `n` single no-op jobs of the bench queue.
pub async fn make_jobs(store: &Store, n: usize) -> Vec<Job> {
    let request = SubmitJobRequest {
        job_queue: "bench".into(),
        job_definition: "noop".into(),
        ..SubmitJobRequest::default()
    };
    make_jobs_from(store, &request, n).await
}

async fn fresh_location(database: &str) -> Option<(StoreLocation, Option<tempfile::TempDir>)> {
    match database {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            Some((
                StoreLocation::Sqlite {
                    path: dir.path().join("bench.db"),
                },
                Some(dir),
            ))
        }
        _ => {
            let admin = std::env::var("BATCHCTL_TEST_DATABASE_URL").ok()?;
            let name = format!("batchctl_bench_{}", uuid::Uuid::new_v4().simple());
            let mut connection = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::Executor::execute(&mut connection, format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            let base = admin.rsplit_once('/').unwrap().0;
            Some((
                StoreLocation::Postgres {
                    url: format!("{base}/{name}"),
                },
                None,
            ))
        }
    }
}

/// `n` jobs as a submit of `request` builds them, each with its own id.
pub async fn make_jobs_from(store: &Store, request: &SubmitJobRequest, n: usize) -> Vec<Job> {
    let definition = store
        .job_definition(&DefinitionRef::parse("noop").unwrap())
        .await
        .unwrap()
        .unwrap()
        .definition;
    let queue = store
        .job_queue(&QueueName::try_from("bench".to_string()).unwrap())
        .await
        .unwrap()
        .unwrap();
    let environments = store.compute_environments().await.unwrap();
    let context = SubmitContext {
        definition: &definition,
        queue: &queue,
        environments: &environments,
    };
    (0..n)
        .map(|_| {
            build_job(
                request,
                &context,
                batchctl_scheduler::submission::new_job_id(),
                None,
                now_millis(),
            )
            .unwrap()
        })
        .collect()
}

/// The allocator the server binary uses (`cli/src/server_main.rs`), so that benches measure
/// what a server does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
