//! Test databases: a fresh, migrated SQLite file or Postgres database per test.
//!
//! Postgres comes from `BATCHCTL_TEST_DATABASE_URL` (`.ci/postgres` starts one and prints it). With
//! `CI=true` a missing database fails the test; elsewhere the test is skipped, saying so loudly.
#![allow(dead_code)]

/// The text of `LOCAL_QUEUE`, as a literal so that other manifests can `concat!` it.
macro_rules! local_queue {
    () => {
        "apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: local}
spec: {type: process, maxVcpus: 2, maxMemoryMiB: 1024}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: q}
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]}
"
    };
}

pub mod dispatcher;
pub mod moves;
pub mod small_filesystem;

use std::collections::BTreeMap;

use batchctl_scheduler::core::model::{
    ArrayRole, ContainerProperties, DefinitionName, Job, JobId, JobName, JobSpec, JobStatus,
    QueueName, Resources, RetryPolicy,
};
use batchctl_scheduler::store::{Store, StoreLocation};
use sqlx::Connection;

/// The key the test stores seal secrets with.
pub fn test_keyring() -> std::sync::Arc<batchctl_scheduler::sealing::Keyring> {
    std::sync::Arc::new(batchctl_scheduler::sealing::Keyring::from_keys(
        &[42; 32],
        &[],
    ))
}

pub struct TestStore {
    pub store: Store,
    pub location: StoreLocation,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite {
        path: dir.path().join("batchctl.db"),
    };
    TestStore {
        store: Store::open(&location)
            .await
            .unwrap()
            .with_keyring(test_keyring()),
        location,
        _dir: Some(dir),
    }
}

/// A URL of a new, empty Postgres database, or `None` (after saying why) when no server is set up.
pub async fn postgres_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("BATCHCTL_TEST_DATABASE_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but BATCHCTL_TEST_DATABASE_URL is not set: the Postgres tests must run in CI");
        }
        eprintln!("\n!!! SKIPPING a Postgres test: BATCHCTL_TEST_DATABASE_URL is not set (run .ci/postgres) !!!\n");
        return None;
    };
    let name = format!("batchctl_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Postgres at {admin_url}: {e}"));
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').map(|(base, _)| base).unwrap();
    Some(format!("{base}/{name}"))
}

pub async fn postgres() -> Option<TestStore> {
    let url = postgres_url().await?;
    let location = StoreLocation::Postgres { url };
    Some(TestStore {
        store: Store::open(&location)
            .await
            .unwrap()
            .with_keyring(test_keyring()),
        location,
        _dir: None,
    })
}

/// Declares each listed async test twice, in modules `sqlite` and `postgres`. Each test function
/// takes a `Store`.
#[macro_export]
macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let test_store = $crate::support::sqlite().await;
                    super::$test(test_store.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(test_store) = $crate::support::postgres().await else { return };
                    super::$test(test_store.store.clone()).await;
                }
            )*
        }
    };
}

/// Applies manifest text (YAML, several documents) to the store.
pub async fn apply(store: &Store, text: &str) {
    let documents = batchctl_scheduler::manifest::documents_from_text(text).unwrap();
    let valid: Vec<_> = documents
        .iter()
        .map(|d| {
            (
                batchctl_scheduler::manifest::parse_document(d).unwrap(),
                d["spec"].clone(),
            )
        })
        .collect();
    store.apply(&valid, 1).await.unwrap();
}

/// A 2-vCPU process environment `local` and a queue `q` on it, which most suites start from.
pub const LOCAL_QUEUE: &str = local_queue!();

/// Applies `LOCAL_QUEUE`, then `text`.
pub async fn apply_on_local_queue(store: &Store, text: &str) {
    apply(store, LOCAL_QUEUE).await;
    apply(store, text).await;
}

/// A SUBMITTED job in queue `q` running `true`, for store tests.
pub fn job(id: &str, idempotency_key: Option<&str>) -> Job {
    Job {
        job_id: JobId(id.into()),
        job_name: JobName::try_from("test".to_string()).unwrap(),
        queue: QueueName::try_from("q".to_string()).unwrap(),
        status: JobStatus::Submitted,
        status_reason: None,
        spec: JobSpec {
            definition: DefinitionName::try_from("d".to_string()).unwrap(),
            definition_revision: 1,
            parameters: BTreeMap::new(),
            container: ContainerProperties {
                image: "busybox".into(),
                command: vec!["true".into()],
                environment: vec![],
                resources: Resources {
                    vcpu_millis: 1000,
                    memory_mib: 64,
                    gpus: 0,
                },
                working_dir: None,
                user: None,
                image_pull_policy: Default::default(),
                privileged: false,
                capabilities: vec![],
                secrets: vec![],
                linux: Default::default(),
                storage: Default::default(),
            },
            retry: RetryPolicy::attempts(1),
            depends_on: vec![],
            array_size: None,
            array_success_policy: Default::default(),
            array_max_concurrency: None,
            share_identifier: None,
            scheduling_priority: 0,
            max_log_bytes: None,
            chain_depth: 0,
            consumable_resources: Vec::new(),
            tags: Default::default(),
            propagate_tags: false,
            pod: Default::default(),
            nodes: None,
            timeout_seconds: None,
        },
        created_at: 1,
        started_at: None,
        stopped_at: None,
        n_attempts: 0,
        disruptions: 0,
        attempts: vec![],
        current_attempt: None,
        stop_requested: None,
        idempotency_key: idempotency_key.map(str::to_string),
        runnable_after: None,
        suspended: false,
        array: ArrayRole::Single,
    }
}
