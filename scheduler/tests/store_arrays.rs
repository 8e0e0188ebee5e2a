//! The store's array jobs and their dependencies (N_TO_N, SEQUENTIAL), on SQLite and Postgres.

mod support;

use std::collections::BTreeMap;

use batchctl_scheduler::core::model::{ArrayRole, Dependency, DependencyKind, JobId, JobStatus};
use batchctl_scheduler::store::{JobFilter, Store};
use support::job;
use support::moves::{admit_and_resolve, array_job, ended, placed, statuses, succeed};

store_suite!(
    array_children_are_written_and_released_in_order,
    n_to_n_children_wait_for_their_partners,
    a_failed_sequential_child_fails_every_later_one_at_once,
);

async fn array_children_are_written_and_released_in_order(store: Store) {
    let sequential = Dependency {
        job_id: None,
        kind: DependencyKind::Sequential,
        condition: Default::default(),
    };
    let parent = array_job("p", 3, vec![sequential]);
    store
        .insert_jobs(std::slice::from_ref(&parent))
        .await
        .unwrap();
    // Children run the parent's spec and know their index.
    let child = store.job(&JobId("p:2".into())).await.unwrap().unwrap();
    assert_eq!(child.spec, parent.spec);
    assert_eq!(
        child.array,
        ArrayRole::Child {
            parent: JobId("p".into()),
            index: 2
        }
    );
    let summary = store
        .array_status_summaries(&[JobId("p".into())])
        .await
        .unwrap();
    assert_eq!(
        summary[&JobId("p".into())],
        BTreeMap::from([(JobStatus::Submitted, 3)])
    );
    let page = store
        .jobs(&JobFilter {
            limit: 10,
            array_parent: Some(JobId("p".into())),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.jobs.iter().map(|j| j.job_id.0.as_str()).collect();
    assert_eq!(ids, ["p:2", "p:1", "p:0"]);

    // SEQUENTIAL: only child 0 may run; the parent waits PENDING for its children.
    admit_and_resolve(&store).await;
    let all = ["p", "p:0", "p:1", "p:2"];
    use JobStatus::{Pending, Runnable, Succeeded};
    assert_eq!(
        statuses(&store, &all).await,
        [Pending, Runnable, Pending, Pending]
    );
    succeed(&store, "p:0").await;
    admit_and_resolve(&store).await;
    assert_eq!(
        statuses(&store, &all).await,
        [Pending, Succeeded, Runnable, Pending]
    );
    assert!(store.finished_arrays().await.unwrap().is_empty());
    succeed(&store, "p:1").await;
    admit_and_resolve(&store).await;
    succeed(&store, "p:2").await;
    let finished = store.finished_arrays().await.unwrap();
    assert_eq!(finished.len(), 1);
    assert_eq!((finished[0].size, finished[0].n_failed), (3, 0));
}

async fn n_to_n_children_wait_for_their_partners(store: Store) {
    // An array that waits for a single job: its children wait for it too.
    store.insert_jobs(&[job("gate", None)]).await.unwrap();
    let whole = Dependency {
        job_id: Some(JobId("gate".into())),
        kind: DependencyKind::Whole,
        condition: Default::default(),
    };
    store
        .insert_jobs(&[array_job("a", 2, vec![whole])])
        .await
        .unwrap();
    let n_to_n = Dependency {
        job_id: Some(JobId("a".into())),
        kind: DependencyKind::NToN,
        condition: Default::default(),
    };
    store
        .insert_jobs(&[array_job("b", 2, vec![n_to_n])])
        .await
        .unwrap();
    admit_and_resolve(&store).await;
    use JobStatus::{Failed, Pending, Runnable};
    let all = ["gate", "a:0", "a:1", "b:0", "b:1"];
    assert_eq!(
        statuses(&store, &all).await,
        [Runnable, Pending, Pending, Pending, Pending]
    );
    assert_eq!(
        store
            .unfinished_dependencies(&JobId("a:1".into()))
            .await
            .unwrap(),
        [(JobId("gate".into()), Runnable)]
    );
    succeed(&store, "gate").await;
    admit_and_resolve(&store).await;
    assert_eq!(
        statuses(&store, &all[1..]).await,
        [Runnable, Runnable, Pending, Pending]
    );
    // a:0 fails: its partner b:0 fails, naming it; b:1 still waits for a:1.
    let applied = store
        .apply_transitions(
            &[
                placed("a:0", 1),
                ended("a:0", 1, JobStatus::Starting, JobStatus::Failed),
            ],
            6,
        )
        .await
        .unwrap();
    assert_eq!(applied, [true, true]);
    admit_and_resolve(&store).await;
    assert_eq!(statuses(&store, &["b:0", "b:1"]).await, [Failed, Pending]);
    let b0 = store.job(&JobId("b:0".into())).await.unwrap().unwrap();
    assert_eq!(b0.status_reason.as_deref(), Some("Dependency a:0 failed"));
    let found = store
        .existing_jobs(&[
            JobId("a".into()),
            JobId("gate".into()),
            JobId("nope".into()),
        ])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[&JobId("a".into())], Some(2));
    assert_eq!(found[&JobId("gate".into())], None);
}

async fn a_failed_sequential_child_fails_every_later_one_at_once(store: Store) {
    let sequential = Dependency {
        job_id: None,
        kind: DependencyKind::Sequential,
        condition: Default::default(),
    };
    store
        .insert_jobs(&[array_job("p", 5, vec![sequential])])
        .await
        .unwrap();
    admit_and_resolve(&store).await;
    let applied = store
        .apply_transitions(
            &[
                placed("p:0", 1),
                ended("p:0", 1, JobStatus::Starting, JobStatus::Failed),
            ],
            6,
        )
        .await
        .unwrap();
    assert_eq!(applied, [true, true]);
    // One pass, not one per link of the chain.
    let moved = store
        .resolve_dependencies(JobStatus::Failed, JobStatus::Runnable, 7)
        .await
        .unwrap();
    assert_eq!(moved, 4);
    for index in 1..5 {
        let child = store
            .job(&JobId(format!("p:{index}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(child.status, JobStatus::Failed);
        assert_eq!(
            child.status_reason.as_deref(),
            Some(format!("Dependency p:{} failed", index - 1).as_str())
        );
    }
}
