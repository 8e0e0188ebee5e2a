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

/// Prometheus text exposition: job counts by status, leadership, and compute environment health.
/// Open like `/healthz`: counts only, no job data.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    use crate::core::model::JobStatus;
    use crate::leadership::RoleState;
    use std::fmt::Write;
    let counts = state.store.job_counts().await?;
    let mut by_status: HashMap<&str, i64> = HashMap::new();
    for count in &counts {
        *by_status.entry(count.status.as_str()).or_default() += count.n;
    }
    let mut text =
        String::from("# HELP batchctl_jobs Jobs in each status.\n# TYPE batchctl_jobs gauge\n");
    for status in JobStatus::ALL {
        let n = by_status.get(status.as_str()).copied().unwrap_or(0);
        let _ = writeln!(text, "batchctl_jobs{{status=\"{}\"}} {n}", status.as_str());
    }
    text.push_str(
        "# HELP batchctl_queue_jobs Jobs of each queue in each status (pairs without jobs left out).\n\
         # TYPE batchctl_queue_jobs gauge\n",
    );
    for count in &counts {
        let _ = writeln!(
            text,
            "batchctl_queue_jobs{{queue=\"{}\",status=\"{}\"}} {}",
            count.queue, count.status, count.n
        );
    }
    let (leader, term) = match state.role.get() {
        RoleState::Leader { term } => (1, term.unwrap_or(0)),
        RoleState::Follower => (0, 0),
    };
    let _ = write!(
        text,
        "# HELP batchctl_leader Whether this server leads (runs the dispatcher).\n\
         # TYPE batchctl_leader gauge\nbatchctl_leader {leader}\n\
         # HELP batchctl_leader_term The lease term this server leads in (0: follower or SQLite).\n\
         # TYPE batchctl_leader_term gauge\nbatchctl_leader_term {term}\n\
         # HELP batchctl_compute_environment_up Whether the environment's executor answered last time.\n\
         # TYPE batchctl_compute_environment_up gauge\n"
    );
    let unhealthy = state.dispatcher.unhealthy_environments();
    for environment in state.store.compute_environments().await? {
        let name = environment.name.to_string();
        let up = u8::from(!unhealthy.contains_key(&name));
        let _ = writeln!(
            text,
            "batchctl_compute_environment_up{{environment=\"{name}\"}} {up}"
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
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
    let status = if unhealthy.is_empty() && storage.full.is_none() {
        "ok"
    } else {
        "degraded"
    };
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
