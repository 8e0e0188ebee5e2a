//! Retention on SQLite and Postgres: finished jobs past their time to live go with their
//! children, attempts and output, in bounded batches; a queue's own retention and a schedule's
//! history limits hold; jobs a waiting job depends on stay; SQLite gives the space back.

mod support;

use batchctl_executor::OutputStream;
use batchctl_scheduler::core::lifecycle::Retention;
use batchctl_scheduler::core::model::{
    ArrayRole, Attempt, CurrentAttempt, Dependency, DependencyKind, EnvironmentName, Job, JobId,
    JobStatus, QueueName,
};
use batchctl_scheduler::retention::prune_once;
use batchctl_scheduler::store::{now_millis, Effect, NewLogChunk, Store, Transition};
use support::job;
use tokio_util::sync::CancellationToken;

store_suite!(
    expired_jobs_go_with_their_output_and_needed_ones_stay,
    a_large_array_goes_in_batches_parent_last,
    schedule_history_limits_keep_the_newest_runs,
);

const KEEPING_QUEUE: &str = "apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: keep}
spec:
  priority: 1
  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]
  jobRetention: {succeededSeconds: 86400}
";

fn id(text: &str) -> JobId {
    JobId(text.to_string())
}

/// Places `job_id` (RUNNABLE) and ends its attempt as `to`, now.
async fn finish(store: &Store, job_id: &str, to: JobStatus) {
    let now = now_millis();
    let environment = EnvironmentName::try_from("local".to_string()).unwrap();
    let placed = Transition {
        job_id: id(job_id),
        from: JobStatus::Runnable,
        to: JobStatus::Starting,
        effect: Effect::Placed {
            attempt: CurrentAttempt {
                number: 1,
                compute_environment: environment.clone(),
                executor_handle: format!("{job_id}-1"),
                placed_at: now,
                started_at: None,
                gpu_ids: vec![],
            },
            used_up: Vec::new(),
        },
    };
    let ended = Transition {
        job_id: id(job_id),
        from: JobStatus::Starting,
        to,
        effect: Effect::AttemptEnded {
            attempt: Attempt {
                number: 1,
                compute_environment: environment,
                exit_code: Some(i32::from(to == JobStatus::Failed)),
                status_reason: "ended".into(),
                started_at: Some(now),
                stopped_at: now,
                resources: None,
            },
            runnable_after: None,
            disruption: false,
            next_resources: None,
        },
    };
    let applied = store
        .apply_transitions(&[placed, ended], now)
        .await
        .unwrap();
    assert_eq!(applied, [true, true], "{job_id} was not RUNNABLE");
}

async fn admit(store: &Store, queue: &str) {
    store
        .admit_submitted(
            &QueueName::try_from(queue.to_string()).unwrap(),
            JobStatus::Runnable,
            JobStatus::Pending,
            1000,
            3,
        )
        .await
        .unwrap();
}

fn array_job(job_id: &str, size: u32) -> Job {
    let mut job = job(job_id, None);
    job.spec.array_size = Some(size);
    job.array = ArrayRole::Parent { size };
    job
}

/// Finishes every child of `parent` (SUCCEEDED) and then the parent.
async fn finish_array(store: &Store, parent: &str, size: u32) {
    for index in 0..size {
        finish(store, &format!("{parent}:{index}"), JobStatus::Succeeded).await;
    }
    let ended = Transition {
        job_id: id(parent),
        from: JobStatus::Pending,
        to: JobStatus::Succeeded,
        effect: Effect::ArrayEnded {
            reason: "children ended".into(),
            at: now_millis(),
        },
    };
    let applied = store.apply_transitions(&[ended], now_millis()).await;
    assert_eq!(applied.unwrap(), [true]);
}

async fn exists(store: &Store, job_id: &str) -> bool {
    store.job(&id(job_id)).await.unwrap().is_some()
}

async fn counted(store: &Store, queue: &str, status: JobStatus) -> i64 {
    store
        .job_counts()
        .await
        .unwrap()
        .iter()
        .filter(|count| count.queue == queue && count.status == status.as_str())
        .map(|count| count.n)
        .sum()
}

async fn expired_jobs_go_with_their_output_and_needed_ones_stay(store: Store) {
    support::apply_on_local_queue(&store, KEEPING_QUEUE).await;
    let mut kept = job("kept", None);
    kept.queue = QueueName::try_from("keep".to_string()).unwrap();
    let mut waiting = job("waiting", None);
    waiting.spec.depends_on = ["needed", "running"]
        .into_iter()
        .map(|other| Dependency {
            job_id: Some(id(other)),
            kind: DependencyKind::Whole,
            condition: Default::default(),
        })
        .collect();
    store
        .insert_jobs(&[
            job("ok", None),
            job("bad", None),
            array_job("arr", 3),
            job("needed", None),
            job("running", None),
            kept,
        ])
        .await
        .unwrap();
    store.insert_jobs(&[waiting]).await.unwrap();
    admit(&store, "q").await;
    admit(&store, "keep").await;
    finish(&store, "ok", JobStatus::Succeeded).await;
    finish(&store, "bad", JobStatus::Failed).await;
    finish(&store, "needed", JobStatus::Succeeded).await;
    finish(&store, "kept", JobStatus::Succeeded).await;
    finish_array(&store, "arr", 3).await;
    store
        .append_logs(&[NewLogChunk {
            job_id: id("ok"),
            attempt_number: 1,
            node: 0,
            stream: OutputStream::Stdout,
            data: b"output\n".to_vec(),
            cursor: 7,
        }])
        .await
        .unwrap();
    assert_eq!(store.logs((&id("ok"), 1, 0), 0, 10).await.unwrap().len(), 1);

    // Kept for a day, nothing is old enough yet.
    let cancel = CancellationToken::new();
    let deleted = prune_once(&store, Retention::uniform(86_400), &cancel)
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // With no retention at all, every finished job goes but the one `waiting` still needs, and
    // the one whose queue keeps its jobs for a day.
    let deleted = prune_once(&store, Retention::uniform(0), &cancel)
        .await
        .unwrap();
    assert_eq!(deleted, 2 + 4, "ok, bad, the array and its three children");
    for gone in ["ok", "bad", "arr", "arr:0", "arr:2"] {
        assert!(!exists(&store, gone).await, "{gone} was kept");
    }
    for stays in ["needed", "kept", "running", "waiting"] {
        assert!(exists(&store, stays).await, "{stays} was deleted");
    }
    assert!(store
        .logs((&id("ok"), 1, 0), 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(counted(&store, "q", JobStatus::Succeeded).await, 1);
    assert_eq!(counted(&store, "q", JobStatus::Failed).await, 0);
    assert_eq!(counted(&store, "keep", JobStatus::Succeeded).await, 1);
    assert!(store
        .array_status_summaries(&[id("arr")])
        .await
        .unwrap()
        .get(&id("arr"))
        .is_none_or(|summary| summary.values().all(|n| *n == 0)));

    // Once `waiting` has moved on, `needed` goes too.
    finish(&store, "running", JobStatus::Failed).await;
    store
        .resolve_dependencies(JobStatus::Failed, JobStatus::Runnable, 30)
        .await
        .unwrap();
    assert_eq!(
        store.job(&id("waiting")).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    prune_once(&store, Retention::uniform(0), &cancel)
        .await
        .unwrap();
    assert!(!exists(&store, "needed").await);
}

async fn a_large_array_goes_in_batches_parent_last(store: Store) {
    support::apply(&store, support::LOCAL_QUEUE).await;
    store.insert_jobs(&[array_job("big", 5)]).await.unwrap();
    admit(&store, "q").await;
    finish_array(&store, "big", 5).await;
    let batch = |budget| store.prune_finished("q", JobStatus::Succeeded, i64::MAX, budget);
    assert_eq!(batch(2).await.unwrap(), 2, "two children");
    assert!(exists(&store, "big").await, "the parent goes last");
    assert_eq!(batch(2).await.unwrap(), 2);
    assert_eq!(batch(2).await.unwrap(), 2, "the last child and the parent");
    assert!(!exists(&store, "big").await);
    assert_eq!(batch(2).await.unwrap(), 0);
    assert_eq!(counted(&store, "q", JobStatus::Succeeded).await, 0);
}

async fn schedule_history_limits_keep_the_newest_runs(store: Store) {
    support::apply_on_local_queue(
        &store,
        "apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: d}
spec: {containerProperties: {image: x, command: ['true']}}
---
apiVersion: batchctl/v1
kind: Schedule
metadata: {name: hourly}
spec:
  scheduleExpression: '@hourly'
  successfulJobsHistoryLimit: 2
  failedJobsHistoryLimit: 0
  target: {jobQueue: q, jobDefinition: d}
",
    )
    .await;
    for (tick, status) in [
        (1, JobStatus::Succeeded),
        (2, JobStatus::Failed),
        (3, JobStatus::Succeeded),
        (4, JobStatus::Succeeded),
        (5, JobStatus::Failed),
    ] {
        let job_id = format!("run-{tick}");
        assert!(store
            .fire_tick("hourly", tick * 3_600_000, &job(&job_id, None), 30)
            .await
            .unwrap());
        admit(&store, "q").await;
        finish(&store, &job_id, status).await;
    }
    let deleted = prune_once(
        &store,
        Retention::uniform(86_400),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(deleted, 3);
    let mut left = Vec::new();
    for tick in 1..=5 {
        if exists(&store, &format!("run-{tick}")).await {
            left.push(tick);
        }
    }
    assert_eq!(left, [3, 4], "the two newest successes; no failure");
}

#[tokio::test]
async fn sqlite_gives_freed_pages_back() {
    let test_store = support::sqlite().await;
    let store = test_store.store.clone();
    let batchctl_scheduler::store::StoreLocation::Sqlite { path } = &test_store.location else {
        unreachable!()
    };
    let size = || std::fs::metadata(path).unwrap().len();
    support::apply(&store, support::LOCAL_QUEUE).await;
    store
        .insert_jobs(&[array_job("big", 20_000)])
        .await
        .unwrap();
    admit(&store, "q").await;
    // Ended in bulk (through the failed-dependency path would need more set-up): every child
    // FAILED at once, then the parent.
    store
        .advance_oldest(JobStatus::Runnable, JobStatus::Failed, u32::MAX, 20)
        .await
        .unwrap();
    let ended = Transition {
        job_id: id("big"),
        from: JobStatus::Pending,
        to: JobStatus::Failed,
        effect: Effect::ArrayEnded {
            reason: "children ended".into(),
            at: now_millis(),
        },
    };
    store
        .apply_transitions(&[ended], now_millis())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Checkpointed, so the file holds the rows rather than the WAL.
    store.checkpoint().await.unwrap();
    let full = size();
    // Pages the set-up's writes freed and left unused: a pass gives those back.
    let stale = store.reclaimable_pages().await.unwrap();
    let cancel = CancellationToken::new();
    let deleted = prune_once(&store, Retention::uniform(0), &cancel)
        .await
        .unwrap();
    assert_eq!(deleted, 20_001);
    // The pass leaves the pages it freed for the writes until the next pass...
    store.checkpoint().await.unwrap();
    let freed = store.reclaimable_pages().await.unwrap();
    assert!(freed > 0, "the deletes freed no page");
    assert!(
        size() >= full - stale * 4096,
        "the pass gave back the pages it had just freed: {full} bytes before, {} after, {stale} pages were free before",
        size()
    );
    // ...and the next one, finding them still unused, gives back up to 4096 (16 MiB) of them.
    assert_eq!(
        prune_once(&store, Retention::uniform(0), &cancel)
            .await
            .unwrap(),
        0
    );
    store.checkpoint().await.unwrap();
    assert_eq!(
        store.reclaimable_pages().await.unwrap(),
        freed.saturating_sub(4096)
    );
    assert!(size() < full, "the second pass gave nothing back");
    store.reclaim_space(u32::MAX).await.unwrap();
    store.checkpoint().await.unwrap();
    assert_eq!(store.reclaimable_pages().await.unwrap(), 0);
    assert!(
        size() < full / 2,
        "the file kept its size: {} bytes before, {} after",
        full,
        size()
    );
}

/// A database made before incremental auto-vacuum keeps its free pages for reuse: nothing to
/// give back, so a pruning pass does not ask SQLite to (it would only take the writer for it).
#[tokio::test]
async fn sqlite_without_incremental_auto_vacuum_has_nothing_to_give_back() {
    use sqlx::{Connection, Executor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batchctl.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    // Pages filled and freed: in a file made without auto-vacuum (as before 0.1's setting)...
    let fill_and_free = |url: String| async move {
        let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
        connection
            .execute(
                "CREATE TABLE scratch (x BLOB); \
                 WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500) \
                 INSERT INTO scratch SELECT zeroblob(4000) FROM c; DROP TABLE scratch;",
            )
            .await
            .unwrap();
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
        free
    };
    assert!(fill_and_free(url.clone()).await > 400);
    let store =
        batchctl_scheduler::store::Store::open(&batchctl_scheduler::store::StoreLocation::Sqlite {
            path: path.clone(),
        })
        .await
        .unwrap();
    assert_eq!(store.reclaimable_pages().await.unwrap(), 0);
    store.close().await;
    // ...and in one the store made, with incremental auto-vacuum, they can be given back.
    let test_store = support::sqlite().await;
    let batchctl_scheduler::store::StoreLocation::Sqlite { path } = &test_store.location else {
        unreachable!()
    };
    let url = format!("sqlite://{}?mode=rwc", path.display());
    assert!(fill_and_free(url).await > 400);
    assert!(test_store.store.reclaimable_pages().await.unwrap() > 400);
}
