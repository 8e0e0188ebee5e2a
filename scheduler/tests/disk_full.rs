//! A full disk under a SQLite store: every insert the store reports as done must be a row that
//! exists (read through another connection, and after the store is reopened), and the store must
//! work again once space returns.
//!
//! The data directory is a small tmpfs, which needs root (CI runs as root). Elsewhere the test is
//! skipped, saying so loudly; with `CI=true` it must run.

mod support;

use support::small_filesystem::SmallFilesystem;

use std::collections::BTreeMap;

use batchctl_scheduler::core::model::{Job, JobId};
use batchctl_scheduler::store::{Store, StoreLocation};

/// A job carrying `payload` as a parameter, to fill the disk with.
fn job(id: &str, payload: &str) -> Job {
    let mut job = support::job(id, None);
    job.spec.parameters = BTreeMap::from([("payload".to_string(), payload.to_string())]);
    job
}

#[tokio::test]
async fn every_acknowledged_insert_survives_a_full_disk() {
    let Some(filesystem) = SmallFilesystem::mount("3m") else {
        return;
    };
    // Ballast to delete later: "the filesystem grows again". (With only 512 KiB freed, the
    // first insert after the disk filled still failed: SQLite needed more than that, here.)
    let ballast = filesystem.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 1024 * 1024]).unwrap();
    let location = StoreLocation::Sqlite {
        path: filesystem.path().join("batchctl.db"),
    };
    let store = Store::open(&location).await.unwrap();
    let payload = "x".repeat(2048);
    let mut acknowledged = Vec::new();
    let mut full_errors = 0;
    for n in 0..3000 {
        let id = format!("job-{n}");
        match store.insert_jobs(&[job(&id, &payload)]).await {
            Ok(_) => acknowledged.push(id),
            Err(error) => {
                assert!(
                    error.is_storage_full(),
                    "a full disk is reported as such, not as {error:?}"
                );
                full_errors += 1;
            }
        }
        if full_errors == 50 {
            break;
        }
    }
    assert!(full_errors > 0, "the filesystem never filled up");
    let before_space_returns = acknowledged.len();
    std::fs::remove_file(&ballast).unwrap();
    for n in 0..20 {
        let id = format!("after-{n}");
        store
            .insert_jobs(&[job(&id, "small")])
            .await
            .expect("inserts work again once space returns");
        acknowledged.push(id);
    }
    for id in &acknowledged {
        assert!(
            store.job(&JobId(id.clone())).await.unwrap().is_some(),
            "acknowledged {id} is not readable ({before_space_returns} acknowledged while the disk filled)"
        );
    }
    store.close().await;
    let reopened = Store::open(&location).await.unwrap();
    for id in &acknowledged {
        assert!(
            reopened.job(&JobId(id.clone())).await.unwrap().is_some(),
            "acknowledged {id} is gone after reopening"
        );
    }
    let check: String = reopened.integrity_check().await.unwrap();
    assert_eq!(check, "ok");
    reopened.close().await;
}
