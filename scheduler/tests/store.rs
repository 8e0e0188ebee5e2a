//! One store suite, run against SQLite and Postgres.

mod support;

use std::collections::BTreeMap;

use batchctl_executor::OutputStream;
use batchctl_scheduler::core::model::{DefinitionRef, Job, JobId, JobName, JobStatus, QueueName};
use batchctl_scheduler::manifest::{self, Kind};
use batchctl_scheduler::store::{
    AppliedAction, ApplyError, Effect, JobFilter, NewLogChunk, Store, Transition,
};
use serde_json::json;

store_suite!(
    apply_writes_nothing_when_a_document_is_rejected,
    definitions_get_a_revision_only_when_their_spec_changes,
    resources_are_updated_in_place,
    idempotency_keys_return_the_first_job,
    transitions_are_compare_and_set,
    an_attempt_end_records_the_attempt_once,
    a_write_that_loses_some_moves_keeps_the_others_once,
    job_lists_page_newest_first_and_filter,
    logs_keep_bytes_and_resume_cursor,
    stop_requests_only_reach_active_jobs,
    advance_oldest_moves_in_submission_order,
    a_job_backing_off_is_not_runnable_before_its_time,
    admission_takes_each_queue_by_itself,
    job_counts_follow_every_status_write,
    runnable_ahead_counts_the_queue_only_up_to_its_limit,
    every_status_is_listed_and_holds_up_its_queue_s_delete,
);

/// `why`'s queue position: RUNNABLE jobs of the same queue submitted earlier, counted only up to
/// one past the limit.
async fn runnable_ahead_counts_the_queue_only_up_to_its_limit(store: Store) {
    let mut elsewhere = job("elsewhere", None);
    elsewhere.queue = queue_name("other");
    let jobs = [
        job("a", None),
        elsewhere,
        job("b", None),
        job("c", None),
        job("d", None),
    ];
    store.insert_jobs(&jobs).await.unwrap();
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 10, 3)
        .await
        .unwrap();
    let ahead = |id: &str, limit| {
        let store = store.clone();
        let id = JobId(id.to_string());
        async move { store.runnable_ahead(&id, limit).await.unwrap() }
    };
    assert_eq!(ahead("a", 10).await, 0);
    assert_eq!(ahead("d", 10).await, 3, "a, b and c; not the other queue's");
    assert_eq!(ahead("d", 1).await, 2, "counted to one past the limit");
    assert_eq!(ahead("elsewhere", 10).await, 0);
}

/// The counters `/metrics` reads follow inserts (singles and array children), bulk admission and
/// transitions without a count of the table, and survive a fold unchanged.
async fn job_counts_follow_every_status_write(store: Store) {
    let mut other = job("other-0", None);
    other.queue = queue_name("other");
    store
        .insert_jobs(&[
            job("a", None),
            job("b", None),
            array_job("p", 3, vec![]),
            other,
        ])
        .await
        .unwrap();
    admit_and_resolve(&store).await;
    succeed(&store, "a").await;
    let expected = |store: Store| async move {
        let mut counts: Vec<(String, String, i64)> = store
            .job_counts()
            .await
            .unwrap()
            .into_iter()
            .map(|count| (count.queue, count.status, count.n))
            .collect();
        counts.sort();
        counts
    };
    let counts = expected(store.clone()).await;
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for (_, status, n) in &counts {
        *by_status.entry(status.clone()).or_default() += n;
    }
    for (status, n) in &by_status {
        let status = JobStatus::parse(status).unwrap();
        assert_eq!(
            store.count_jobs(status).await.unwrap() as i64,
            *n,
            "{status}"
        );
    }
    assert_eq!(
        counts.iter().map(|(_, _, n)| n).sum::<i64>(),
        7,
        "a, b, p and its 3 children, other-0: {counts:?}"
    );
    assert!(
        counts.contains(&("other".into(), "SUBMITTED".into(), 1)),
        "{counts:?}"
    );
    let submitted = store.queues_with(JobStatus::Submitted).await.unwrap();
    assert_eq!(
        submitted,
        ["other".to_string()].into(),
        "admission asks only these"
    );
    assert!(
        counts.contains(&("q".into(), "SUCCEEDED".into(), 1)),
        "{counts:?}"
    );
    store.fold_job_counts().await.unwrap();
    assert_eq!(
        expected(store.clone()).await,
        counts,
        "a fold changes no count"
    );
}

/// A queue's backlog does not hold up another queue's jobs: admission takes the oldest
/// SUBMITTED jobs of the queue it is asked for, whatever other queues hold.
async fn admission_takes_each_queue_by_itself(store: Store) {
    let mut jobs: Vec<Job> = (0..5).map(|n| job(&format!("big-{n}"), None)).collect();
    for job in &mut jobs {
        job.queue = queue_name("big");
    }
    let mut small = job("small-0", None);
    small.queue = queue_name("small");
    jobs.push(small);
    store.insert_jobs(&jobs).await.unwrap();
    let moved = store
        .admit_submitted(
            &queue_name("small"),
            JobStatus::Runnable,
            JobStatus::Pending,
            2,
            3,
        )
        .await
        .unwrap();
    assert_eq!(moved, (1, 0));
    assert_eq!(
        statuses(&store, &["small-0", "big-0", "big-4"]).await,
        [
            JobStatus::Runnable,
            JobStatus::Submitted,
            JobStatus::Submitted
        ]
    );
    let moved = store
        .admit_submitted(
            &queue_name("big"),
            JobStatus::Runnable,
            JobStatus::Pending,
            2,
            3,
        )
        .await
        .unwrap();
    assert_eq!(moved, (2, 0), "the oldest two of big");
    assert_eq!(
        statuses(&store, &["big-0", "big-1", "big-2"]).await,
        [
            JobStatus::Runnable,
            JobStatus::Runnable,
            JobStatus::Submitted
        ]
    );
}

fn documents(values: &[serde_json::Value]) -> Vec<(manifest::Resource, serde_json::Value)> {
    values
        .iter()
        .map(|v| (manifest::parse_document(v).unwrap(), v["spec"].clone()))
        .collect()
}

fn environment(name: &str, vcpus: u64) -> serde_json::Value {
    json!({"apiVersion": "batchctl/v1", "kind": "ComputeEnvironment", "metadata": {"name": name},
           "spec": {"type": "process", "maxVcpus": vcpus, "maxMemoryMiB": 1024}})
}

fn queue(name: &str, environment: &str) -> serde_json::Value {
    json!({"apiVersion": "batchctl/v1", "kind": "JobQueue", "metadata": {"name": name},
           "spec": {"priority": 1, "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": environment}]}})
}

fn definition(name: &str, command: &str) -> serde_json::Value {
    json!({"apiVersion": "batchctl/v1", "kind": "JobDefinition", "metadata": {"name": name},
           "spec": {"containerProperties": {"image": "busybox", "command": ["sh", "-c", command]}}})
}

use support::job;

use support::moves::{admit_and_resolve, array_job, ended, placed, queue_name, statuses, succeed};

async fn runnable_job(store: &Store, id: &str) {
    store.insert_jobs(&[job(id, None)]).await.unwrap();
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 100, 2)
        .await
        .unwrap();
}

async fn apply_writes_nothing_when_a_document_is_rejected(store: Store) {
    let batch = documents(&[environment("local", 2), queue("q", "missing")]);
    let error = store.apply(&batch, 1).await.unwrap_err();
    let ApplyError::Invalid { index, error } = error else {
        panic!("expected a validation error, got {error}")
    };
    assert_eq!(index, 1);
    assert_eq!(error.field, "spec.computeEnvironmentOrder");
    assert!(
        error.message.contains("\"missing\" does not exist"),
        "{error}"
    );
    assert!(store.compute_environments().await.unwrap().is_empty());
    // The same queue applies once its environment comes in the same batch.
    let batch = documents(&[queue("q", "local"), environment("local", 2)]);
    let applied = store.apply(&batch, 1).await.unwrap();
    assert_eq!(applied.len(), 2);
    assert_eq!(store.job_queues().await.unwrap().len(), 1);
}

async fn definitions_get_a_revision_only_when_their_spec_changes(store: Store) {
    let first = store
        .apply(&documents(&[definition("hello", "echo 1")]), 1)
        .await
        .unwrap();
    assert_eq!(
        (first[0].revision, first[0].action),
        (Some(1), AppliedAction::Created)
    );
    let same = store
        .apply(&documents(&[definition("hello", "echo 1")]), 2)
        .await
        .unwrap();
    assert_eq!(
        (same[0].revision, same[0].action),
        (Some(1), AppliedAction::Unchanged)
    );
    let changed = store
        .apply(&documents(&[definition("hello", "echo 2")]), 3)
        .await
        .unwrap();
    assert_eq!(
        (changed[0].revision, changed[0].action),
        (Some(2), AppliedAction::Created)
    );

    let latest = store
        .job_definition(&DefinitionRef::parse("hello").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.definition.revision, 2);
    assert_eq!(latest.definition.spec.container.command[2], "echo 2");
    let first = store
        .job_definition(&DefinitionRef::parse("hello:1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.definition.spec.container.command[2], "echo 1");
    assert!(store
        .job_definition(&DefinitionRef::parse("hello:3").unwrap())
        .await
        .unwrap()
        .is_none());
    let all = store.job_definitions(None).await.unwrap();
    let revisions: Vec<u32> = all.iter().map(|d| d.definition.revision).collect();
    assert_eq!(revisions, [2, 1]);
}

async fn resources_are_updated_in_place(store: Store) {
    store
        .apply(&documents(&[environment("local", 2)]), 1)
        .await
        .unwrap();
    let again = store
        .apply(&documents(&[environment("local", 2)]), 2)
        .await
        .unwrap();
    assert_eq!(again[0].action, AppliedAction::Unchanged);
    let bigger = store
        .apply(&documents(&[environment("local", 8)]), 3)
        .await
        .unwrap();
    assert_eq!(bigger[0].action, AppliedAction::Configured);
    let environments = store.compute_environments().await.unwrap();
    assert_eq!(environments.len(), 1);
    assert_eq!(environments[0].capacity.vcpu_millis, 8000);
    let specs = store
        .resource_specs(Kind::ComputeEnvironment)
        .await
        .unwrap();
    assert_eq!(specs[0].1["maxVcpus"], 8);
}

async fn idempotency_keys_return_the_first_job(store: Store) {
    let first = store.insert_jobs(&[job("a", Some("key-1"))]).await.unwrap();
    let second = store
        .insert_jobs(&[job("b", Some("key-1")), job("c", None), job("d", None)])
        .await
        .unwrap();
    assert_eq!(first[0].job_id.0, "a");
    let ids: Vec<&str> = second.iter().map(|j| j.job_id.0.as_str()).collect();
    assert_eq!(ids, ["a", "c", "d"]);
    assert!(store.job(&JobId("b".into())).await.unwrap().is_none());
    let page = store
        .jobs(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 3);
}

async fn transitions_are_compare_and_set(store: Store) {
    runnable_job(&store, "a").await;
    let applied = store.apply_transitions(&[placed("a", 1)], 3).await.unwrap();
    assert_eq!(applied, [true]);
    // A second writer computed the same move from the same old state: it must lose.
    let applied = store.apply_transitions(&[placed("a", 1)], 3).await.unwrap();
    assert_eq!(applied, [false]);
    let job = store.job(&JobId("a".into())).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Starting);
    let attempt = job.current_attempt.unwrap();
    assert_eq!(
        (attempt.number, attempt.executor_handle.as_str()),
        (1, "a-1")
    );
}

async fn an_attempt_end_records_the_attempt_once(store: Store) {
    runnable_job(&store, "a").await;
    store.apply_transitions(&[placed("a", 1)], 3).await.unwrap();
    // An end for an attempt the job is not on changes nothing.
    let stale = ended("a", 7, JobStatus::Starting, JobStatus::Failed);
    assert_eq!(store.apply_transitions(&[stale], 4).await.unwrap(), [false]);
    let end = ended("a", 1, JobStatus::Starting, JobStatus::Failed);
    assert_eq!(
        store
            .apply_transitions(&[end.clone(), end], 4)
            .await
            .unwrap(),
        [true, false]
    );
    let job = store.job(&JobId("a".into())).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.n_attempts, 1);
    assert_eq!(job.stopped_at, Some(20));
    assert_eq!(job.current_attempt, None);
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].exit_code, Some(3));
    assert_eq!(
        job.status_reason.as_deref(),
        Some("Essential container in task exited with code 3")
    );
}

/// A batch in which some compare-and-sets lose: the write learns which from the count of rows it
/// changed, and when that falls short it is rolled back and made again row by row (see
/// `apply_transitions`). The winners apply once, with one attempt record each, not two.
async fn a_write_that_loses_some_moves_keeps_the_others_once(store: Store) {
    for id in ["a", "b", "c"] {
        runnable_job(&store, id).await;
    }
    let placements = [placed("a", 1), placed("b", 1), placed("c", 1)];
    store.apply_transitions(&placements, 3).await.unwrap();
    let b_ended = ended("b", 1, JobStatus::Starting, JobStatus::Failed);
    assert_eq!(
        store.apply_transitions(&[b_ended], 4).await.unwrap(),
        [true]
    );
    let ends = [
        ended("a", 1, JobStatus::Starting, JobStatus::Failed),
        ended("b", 1, JobStatus::Starting, JobStatus::Failed),
        ended("c", 1, JobStatus::Starting, JobStatus::Failed),
    ];
    assert_eq!(
        store.apply_transitions(&ends, 5).await.unwrap(),
        [true, false, true]
    );
    for id in ["a", "b", "c"] {
        let job = store.job(&JobId(id.into())).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Failed, "{id}");
        assert_eq!((job.n_attempts, job.attempts.len()), (1, 1), "{id}");
    }
}

async fn job_lists_page_newest_first_and_filter(store: Store) {
    for id in ["1", "2", "3", "4", "5"] {
        store.insert_jobs(&[job(id, None)]).await.unwrap();
    }
    let mut filter = JobFilter {
        limit: 2,
        ..JobFilter::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.jobs(&filter).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| j.job_id.0.clone()));
        match page.next {
            Some(next) => filter.before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["5", "4", "3", "2", "1"]);
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 2, 9)
        .await
        .unwrap();
    let runnable = store
        .jobs(&JobFilter {
            status: Some(JobStatus::Runnable),
            queue: Some(QueueName::try_from("q".to_string()).unwrap()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = runnable.jobs.iter().map(|j| j.job_id.0.as_str()).collect();
    assert_eq!(ids, ["2", "1"]);
    // AWS Batch's JOB_NAME filter: a name, or a prefix with `*`; ASCII letters in either case.
    let mut named = job("6", None);
    named.job_name = JobName::try_from("Nightly-Report".to_string()).unwrap();
    store.insert_jobs(&[named]).await.unwrap();
    for (text, status, expected) in [
        ("nightly-report", None, vec!["6"]),
        ("NIGHTLY*", None, vec!["6"]),
        ("nightly", None, vec![]),
        ("te*", None, vec!["5", "4", "3", "2", "1"]),
        ("te*", Some(JobStatus::Runnable), vec!["2", "1"]),
        ("test", Some(JobStatus::Submitted), vec!["5", "4", "3"]),
    ] {
        let page = store
            .jobs(&JobFilter {
                name: Some(batchctl_scheduler::store::JobNameFilter::parse(text).unwrap()),
                status,
                queue: Some(QueueName::try_from("q".to_string()).unwrap()),
                limit: 10,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        let ids: Vec<&str> = page.jobs.iter().map(|j| j.job_id.0.as_str()).collect();
        assert_eq!(ids, expected, "{text} {status:?}");
    }
    for bad in ["", "*", "a*b", "a**"] {
        assert!(
            batchctl_scheduler::store::JobNameFilter::parse(bad).is_err(),
            "{bad:?}"
        );
    }
    // A name is not indexed: a page looks through NAME_SCAN_WINDOW sequence numbers below its
    // cursor and, finding fewer than asked, points at the rest. From a cursor far above the
    // jobs (seq 1 to 6), it takes windows to reach them, never a scan of everything at once.
    use batchctl_scheduler::store::NAME_SCAN_WINDOW;
    let window = |before: i64| JobFilter {
        name: Some(batchctl_scheduler::store::JobNameFilter::parse("te*").unwrap()),
        before: Some(before),
        limit: 10,
        ..JobFilter::default()
    };
    let page = store.jobs(&window(2 * NAME_SCAN_WINDOW + 5)).await.unwrap();
    assert!(page.jobs.is_empty());
    assert_eq!(page.next, Some(NAME_SCAN_WINDOW + 5));
    let page = store.jobs(&window(NAME_SCAN_WINDOW + 5)).await.unwrap();
    let ids: Vec<&str> = page.jobs.iter().map(|j| j.job_id.0.as_str()).collect();
    assert_eq!(ids, ["5"]);
    assert_eq!(page.next, Some(5), "jobs 1 to 4 are below this window");
    let page = store.jobs(&window(5)).await.unwrap();
    let ids: Vec<&str> = page.jobs.iter().map(|j| j.job_id.0.as_str()).collect();
    assert_eq!(ids, ["4", "3", "2", "1"]);
    assert_eq!(page.next, None);
    let other_queue = store
        .jobs(&JobFilter {
            queue: Some(QueueName::try_from("other".to_string()).unwrap()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(other_queue.jobs.is_empty());
    // Tags, as kubectl's label selectors, on both databases' JSON functions.
    let mut tagged = job("7", None);
    tagged.spec.tags = [("team", "graphics"), ("tier", "gpu")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut other_team = job("8", None);
    other_team.spec.tags = [("team".to_string(), "audio".to_string())].into();
    store.insert_jobs(&[tagged, other_team]).await.unwrap();
    for (text, status, expected) in [
        ("team=graphics", None, vec!["7"]),
        ("team", None, vec!["8", "7"]),
        (
            "team!=graphics",
            None,
            vec!["8", "6", "5", "4", "3", "2", "1"],
        ),
        ("!team", Some(JobStatus::Runnable), vec!["2", "1"]),
        (
            "team=graphics,tier=gpu",
            Some(JobStatus::Submitted),
            vec!["7"],
        ),
        ("team=graphics,tier=cpu", None, vec![]),
    ] {
        let page = store
            .jobs(&JobFilter {
                tags: batchctl_scheduler::core::tags::TagSelector::parse(text).unwrap(),
                status,
                limit: 10,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        let ids: Vec<&str> = page.jobs.iter().map(|j| j.job_id.0.as_str()).collect();
        assert_eq!(ids, expected, "{text} {status:?}");
    }
}

/// The top-level listing indexes leave out STARTING and RUNNING (migration 0034): lists of those
/// read another index, and lists without a status merge them in, with and without a queue, page
/// by page; a queue with a job in either still may not be deleted.
async fn every_status_is_listed_and_holds_up_its_queue_s_delete(store: Store) {
    for id in ["a", "b", "c", "d", "e"] {
        store.insert_jobs(&[job(id, None)]).await.unwrap();
    }
    let mut other = job("o", None);
    other.queue = queue_name("other");
    store.insert_jobs(&[other]).await.unwrap();
    store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 100, 2)
        .await
        .unwrap();
    let started = Transition {
        job_id: JobId("b".into()),
        from: JobStatus::Starting,
        to: JobStatus::Running,
        effect: Effect::Started { at: 11 },
    };
    let moves = [
        placed("a", 1),
        placed("b", 1),
        placed("c", 1),
        placed("o", 1),
    ];
    assert_eq!(
        store.apply_transitions(&moves, 10).await.unwrap(),
        [true; 4]
    );
    let moves = [
        started,
        ended("c", 1, JobStatus::Starting, JobStatus::Failed),
    ];
    assert_eq!(
        store.apply_transitions(&moves, 12).await.unwrap(),
        [true; 2]
    );
    let list = |status: Option<JobStatus>, queue: Option<&str>, limit: u32| {
        let store = store.clone();
        let queue = queue.map(queue_name);
        async move {
            let mut filter = JobFilter {
                status,
                queue,
                limit,
                ..JobFilter::default()
            };
            let mut ids = Vec::new();
            loop {
                let page = store.jobs(&filter).await.unwrap();
                ids.extend(page.jobs.iter().map(|j| j.job_id.0.clone()));
                match page.next {
                    Some(next) => filter.before = Some(next),
                    None => return ids,
                }
            }
        }
    };
    use JobStatus::{Failed, Runnable, Running, Starting};
    for (status, queue, expected) in [
        (Some(Starting), None, vec!["o", "a"]),
        (Some(Starting), Some("q"), vec!["a"]),
        (Some(Running), None, vec!["b"]),
        (Some(Running), Some("q"), vec!["b"]),
        (Some(Running), Some("other"), vec![]),
        (Some(Failed), Some("q"), vec!["c"]),
        (Some(Runnable), None, vec!["e", "d"]),
        (None, Some("q"), vec!["e", "d", "c", "b", "a"]),
        (None, None, vec!["o", "e", "d", "c", "b", "a"]),
    ] {
        for limit in [1, 10] {
            assert_eq!(
                list(status, queue, limit).await,
                expected,
                "{status:?} in {queue:?}, {limit} a page"
            );
        }
    }

    let disabled = |name: &str| {
        let mut queue = queue(name, "local");
        queue["spec"]["state"] = json!("DISABLED");
        queue
    };
    // What is left unfinished in q is b, RUNNING; in other, o, STARTING.
    store
        .advance_oldest(JobStatus::Runnable, JobStatus::Failed, 100, 13)
        .await
        .unwrap();
    let end_a = [ended("a", 1, JobStatus::Starting, JobStatus::Failed)];
    assert_eq!(store.apply_transitions(&end_a, 14).await.unwrap(), [true]);
    let batch = documents(&[environment("local", 2), disabled("q"), disabled("other")]);
    store.apply(&batch, 1).await.unwrap();
    for (queue, held_by) in [("q", "job b is RUNNING"), ("other", "job o is STARTING")] {
        let refused = store
            .delete_resource(Kind::JobQueue, queue, None, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains(held_by), "{queue}: {refused}");
    }
}

async fn logs_keep_bytes_and_resume_cursor(store: Store) {
    let job_id = JobId("a".into());
    assert_eq!(store.log_cursor(&job_id, 1, 0).await.unwrap(), 0);
    let chunk = |data: &[u8], stream, cursor| NewLogChunk {
        job_id: job_id.clone(),
        attempt_number: 1,
        node: 0,
        stream,
        data: data.to_vec(),
        cursor,
    };
    store
        .append_logs(&[
            chunk(b"hello\n", OutputStream::Stdout, 11),
            chunk(&[0xff, 0xfe, 0x00], OutputStream::Stderr, 19),
        ])
        .await
        .unwrap();
    let lines = store.logs((&job_id, 1, 0), 0, 100).await.unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1].data, [0xff, 0xfe, 0x00]);
    assert_eq!(lines[1].stream, OutputStream::Stderr);
    let after_first = store.logs((&job_id, 1, 0), lines[0].id, 100).await.unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(store.log_cursor(&job_id, 1, 0).await.unwrap(), 19);
    assert!(store
        .logs((&job_id, 2, 0), 0, 100)
        .await
        .unwrap()
        .is_empty());

    // A multi-node job's nodes keep their output and cursors apart.
    let node = NewLogChunk {
        node: 2,
        ..chunk(b"node two\n", OutputStream::Stdout, 5)
    };
    store.append_logs(&[node]).await.unwrap();
    let two = store.logs((&job_id, 1, 2), 0, 100).await.unwrap();
    assert_eq!(two.len(), 1);
    assert_eq!(two[0].data, b"node two\n");
    assert_eq!(store.logs((&job_id, 1, 0), 0, 100).await.unwrap().len(), 2);
    assert_eq!(store.log_cursor(&job_id, 1, 2).await.unwrap(), 5);
    assert_eq!(store.log_cursor(&job_id, 1, 0).await.unwrap(), 19);
    assert_eq!(store.output_layout(&job_id, 1, 2).await.unwrap().len(), 1);
}

async fn stop_requests_only_reach_active_jobs(store: Store) {
    runnable_job(&store, "a").await;
    let id = JobId("a".into());
    assert!(!store.request_stop(&id, "not yet").await.unwrap());
    store.apply_transitions(&[placed("a", 1)], 3).await.unwrap();
    assert!(store.request_stop(&id, "stop it").await.unwrap());
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job.stop_requested.as_deref(), Some("stop it"));
    assert_eq!(store.active_jobs().await.unwrap().len(), 1);
}

async fn advance_oldest_moves_in_submission_order(store: Store) {
    for id in ["1", "2", "3"] {
        store.insert_jobs(&[job(id, None)]).await.unwrap();
    }
    assert!(!store
        .queues_with(JobStatus::Submitted)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .queues_with(JobStatus::Runnable)
        .await
        .unwrap()
        .is_empty());
    let moved = store
        .advance_oldest(JobStatus::Submitted, JobStatus::Runnable, 2, 5)
        .await
        .unwrap();
    assert_eq!(moved, 2);
    let heads = store
        .runnable_jobs(
            &QueueName::try_from("q".to_string()).unwrap(),
            0,
            10,
            i64::MAX,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = heads.iter().map(|(_, j)| j.job_id.0.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);
    // A page after the first job starts behind it.
    let rest = store
        .runnable_jobs(
            &QueueName::try_from("q".to_string()).unwrap(),
            heads[0].0,
            10,
            i64::MAX,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = rest.iter().map(|(_, j)| j.job_id.0.as_str()).collect();
    assert_eq!(ids, ["2"]);
}

async fn a_job_backing_off_is_not_runnable_before_its_time(store: Store) {
    runnable_job(&store, "a").await;
    store.apply_transitions(&[placed("a", 1)], 3).await.unwrap();
    let mut retry = ended("a", 1, JobStatus::Starting, JobStatus::Runnable);
    if let Effect::AttemptEnded { runnable_after, .. } = &mut retry.effect {
        *runnable_after = Some(1_000);
    }
    assert_eq!(store.apply_transitions(&[retry], 4).await.unwrap(), [true]);
    let queue = QueueName::try_from("q".to_string()).unwrap();
    assert!(store
        .runnable_jobs(&queue, 0, 10, 999)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .runnable_jobs(&queue, 0, 10, 1_000)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// The leader lease exists on Postgres only (a SQLite file has one server).
mod lease {
    use std::time::Duration;

    use batchctl_scheduler::core::model::{JobId, JobStatus};
    use batchctl_scheduler::store::{Fence, StoreError};

    use super::{placed, runnable_job};

    #[tokio::test]
    async fn a_deposed_leader_cannot_move_jobs() {
        let Some(test_store) = crate::support::postgres().await else {
            return;
        };
        let store = test_store.store.clone();
        let ttl = Duration::from_millis(400);
        assert_eq!(store.try_acquire_lease("a", ttl).await.unwrap(), Some(1));
        assert_eq!(
            store.try_acquire_lease("b", ttl).await.unwrap(),
            None,
            "held"
        );
        assert!(store.renew_lease("a", 1, ttl).await.unwrap());
        let a = store.fenced(Fence {
            holder: "a".into(),
            term: 1,
        });
        runnable_job(&store, "x").await;
        runnable_job(&store, "y").await;
        assert_eq!(
            a.apply_transitions(&[placed("x", 1)], 3).await.unwrap(),
            [true]
        );

        // `a` stops renewing (a pause, a partition): the lease expires and `b` takes term 2.
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert_eq!(store.try_acquire_lease("b", ttl).await.unwrap(), Some(2));
        assert!(
            !store.renew_lease("a", 1, ttl).await.unwrap(),
            "term 1 is over"
        );
        let holder = store.lease_holder().await.unwrap().unwrap();
        assert_eq!((holder.holder.as_str(), holder.term), ("b", 2));

        // `a` wakes up and tries to dispatch: fenced, and nothing is written.
        match a.apply_transitions(&[placed("y", 1)], 4).await {
            Err(StoreError::Fenced { term: 1 }) => {}
            other => panic!("a deposed leader wrote: {other:?}"),
        }
        let y = store.job(&JobId("y".into())).await.unwrap().unwrap();
        assert_eq!(y.status, JobStatus::Runnable);
        let b = store.fenced(Fence {
            holder: "b".into(),
            term: 2,
        });
        assert_eq!(
            b.apply_transitions(&[placed("y", 1)], 4).await.unwrap(),
            [true]
        );

        // A released lease is free at once.
        store.release_lease("b", 2).await.unwrap();
        assert_eq!(store.try_acquire_lease("a", ttl).await.unwrap(), Some(3));
    }
}
