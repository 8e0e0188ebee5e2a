//! `/healthz` and `/metrics`: open, counts and states only.

use super::*;

/// Whether this server leads, for `/healthz`.
fn leader_view(role: crate::leadership::RoleState) -> answers::LeaderView {
    use crate::leadership::RoleState;
    match role {
        RoleState::Follower => answers::LeaderView {
            role: "follower".into(),
            term: None,
        },
        RoleState::Leader { term } => answers::LeaderView {
            role: "leader".into(),
            term: Some(term),
        },
    }
}

/// `/metrics` (`crate::metrics`): what this server observed, and the job counts, leadership and
/// environment health read now. Open like `/healthz`: counts only, no job data.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "OpenMetrics text exposition", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    use crate::leadership::RoleState;
    let queue_jobs = state
        .store
        .job_counts()
        .await?
        .into_iter()
        .map(|count| (count.queue, count.status, count.n))
        .collect();
    let (leader, term) = match state.role.get() {
        RoleState::Leader { term } => (true, term.unwrap_or(0)),
        RoleState::Follower => (false, 0),
    };
    let unhealthy = state.dispatcher.unhealthy_environments();
    let environments = state
        .store
        .compute_environments()
        .await?
        .into_iter()
        .map(|environment| {
            let name = environment.name.to_string();
            let up = !unhealthy.contains_key(&name);
            (name, up)
        })
        .collect();
    let text = state
        .dispatcher
        .metrics()
        .encode(&crate::metrics::Snapshot {
            queue_jobs,
            leader,
            term,
            environments,
        });
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The server, its database, and each compute environment (`ok`, or why its executor could not
/// be reached the last time it was used). 503 only when the database does not answer.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The server, its database, storage and environments", body = answers::HealthAnswer), (status = 503, description = "The database does not answer", body = answers::UnavailableAnswer)))]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    let unhealthy = state.dispatcher.unhealthy_environments();
    let environments = match state.store.compute_environments().await {
        Ok(environments) => environments,
        Err(error) => {
            let body = answers::UnavailableAnswer {
                status: "unavailable".into(),
                database: error.to_string(),
            };
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, error::UNAVAILABLE_RETRY_AFTER_SECONDS)],
                Json(body),
            )
                .into_response();
        }
    };
    let compute_environments = environments
        .iter()
        .map(|environment| {
            let name = environment.name.to_string();
            let problem = unhealthy.get(&name).cloned().unwrap_or_else(|| "ok".into());
            (name, problem)
        })
        .collect();
    let storage = storage_health(state.sqlite_data_dir.as_deref());
    let status = overall_status(&unhealthy, &storage);
    Json(answers::HealthAnswer {
        status: status.into(),
        database: "ok".into(),
        storage: storage.view(),
        installation: state.installation.clone(),
        leader: leader_view(state.role.get()),
        compute_environments,
    })
    .into_response()
}

/// `ok`, or `degraded` while an environment's executor is unreachable or the disk is full.
pub(super) fn overall_status(
    unhealthy: &std::collections::BTreeMap<String, String>,
    storage: &StorageHealth,
) -> &'static str {
    if unhealthy.is_empty() && storage.full.is_none() {
        "ok"
    } else {
        "degraded"
    }
}

/// Below this many free bytes in the SQLite data directory, writes are about to fail.
pub(super) const LOW_SPACE_BYTES: u64 = 1024 * 1024;

pub(super) struct StorageHealth {
    /// Why writes fail or are about to, if they do.
    pub(super) full: Option<String>,
    data_dir: Option<String>,
    free_bytes: Option<u64>,
}

impl StorageHealth {
    /// One line for the console.
    pub(super) fn summary(&self) -> String {
        match (&self.full, self.free_bytes) {
            (Some(reason), _) => reason.clone(),
            (None, Some(free)) => format!("ok, {} MiB free", free / (1024 * 1024)),
            (None, None) => "ok".into(),
        }
    }

    fn view(&self) -> answers::StorageView {
        answers::StorageView {
            status: if self.full.is_some() { "full" } else { "ok" }.into(),
            reason: self.full.clone(),
            data_directory: self.data_dir.clone(),
            free_bytes: self.free_bytes,
        }
    }
}

/// Whether the database has room to write: a write refused for space in the last few seconds,
/// or (on SQLite) less than `LOW_SPACE_BYTES` free in the data directory, says it has not.
pub(super) fn storage_health(sqlite_data_dir: Option<&std::path::Path>) -> StorageHealth {
    let free_bytes = sqlite_data_dir.and_then(|dir| {
        nix::sys::statvfs::statvfs(dir)
            .ok()
            .map(|stat| stat.blocks_available() * stat.fragment_size())
    });
    let place = sqlite_data_dir.map_or("the database's disk".to_string(), |dir| {
        format!("the data directory {}", dir.display())
    });
    let full = if crate::store::storage_full_recently() {
        Some(format!("{place} is full: writes fail; free space there"))
    } else if free_bytes.is_some_and(|free| free < LOW_SPACE_BYTES) {
        Some(format!(
            "{place} has less than {} KiB free: writes are about to fail; free space there",
            LOW_SPACE_BYTES / 1024
        ))
    } else {
        None
    };
    StorageHealth {
        full,
        data_dir: sqlite_data_dir.map(|dir| dir.display().to_string()),
        free_bytes,
    }
}
