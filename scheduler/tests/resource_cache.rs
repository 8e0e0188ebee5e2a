//! The store's cache of what submits read (`store/resource_cache.rs`), with two servers on one
//! database, on SQLite and Postgres.

mod support;

use batchctl_scheduler::core::model::{DefinitionRef, QueueName};
use batchctl_scheduler::store::{Store, StoreLocation};

fn queue_name(name: &str) -> QueueName {
    QueueName::try_from(name.to_string()).unwrap()
}

/// What submits read comes from a short-lived cache: an apply through the same store is seen at
/// once, one through another server sharing the database within `FRESH_FOR`, and a queue the
/// cache has not seen is read, never refused.
async fn submit_reads_see_applies(location: StoreLocation) {
    use batchctl_scheduler::store::FRESH_FOR;
    let here = Store::open(&location).await.unwrap();
    let elsewhere = Store::open(&location).await.unwrap();
    support::apply(&here, support::LOCAL_QUEUE).await;
    let q = queue_name("q");
    let priority =
        |queue: Option<batchctl_scheduler::core::model::JobQueue>| queue.unwrap().priority;
    assert_eq!(priority(here.job_queue_for_submit(&q).await.unwrap()), 1);
    assert_eq!(
        priority(elsewhere.job_queue_for_submit(&q).await.unwrap()),
        1
    );

    support::apply(
        &here,
        "apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: q}\n\
         spec: {priority: 5, computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]}\n\
         ---\napiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: r}\n\
         spec: {priority: 2, computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]}\n",
    )
    .await;
    assert_eq!(priority(here.job_queue_for_submit(&q).await.unwrap()), 5);
    let r = queue_name("r");
    assert_eq!(
        priority(elsewhere.job_queue_for_submit(&r).await.unwrap()),
        2
    );
    assert!(elsewhere
        .job_queue_for_submit(&queue_name("nope"))
        .await
        .unwrap()
        .is_none());

    let definition = |command: &str| {
        format!(
            "apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {{name: d}}\n\
             spec: {{containerProperties: {{image: none, command: [{command}]}}}}\n"
        )
    };
    let latest = DefinitionRef::parse("d").unwrap();
    let revision = |stored: Option<batchctl_scheduler::store::StoredDefinition>| {
        stored.unwrap().definition.revision
    };
    support::apply(&here, &definition("'true'")).await;
    assert_eq!(
        revision(elsewhere.job_definition_for_submit(&latest).await.unwrap()),
        1
    );
    support::apply(&here, &definition("'false'")).await;
    assert_eq!(
        revision(here.job_definition_for_submit(&latest).await.unwrap()),
        2
    );

    tokio::time::sleep(FRESH_FOR + std::time::Duration::from_millis(100)).await;
    assert_eq!(
        priority(elsewhere.job_queue_for_submit(&q).await.unwrap()),
        5
    );
    assert_eq!(
        revision(elsewhere.job_definition_for_submit(&latest).await.unwrap()),
        2
    );
    let environments = elsewhere.compute_environments_for_submit().await.unwrap();
    assert_eq!(environments.len(), 1);
}

#[tokio::test]
async fn submit_reads_see_applies_on_sqlite() {
    let test_store = support::sqlite().await;
    submit_reads_see_applies(test_store.location.clone()).await;
}

#[tokio::test]
async fn submit_reads_see_applies_on_postgres() {
    let Some(test_store) = support::postgres().await else {
        return;
    };
    submit_reads_see_applies(test_store.location.clone()).await;
}
