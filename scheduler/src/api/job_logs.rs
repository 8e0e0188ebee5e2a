//! `GET /v1/jobs/{id}/logs`: an attempt's output, or one node's of a multi-node job, read or
//! followed from the store.

use super::*;
use crate::core::model::Job;
use crate::core::multinode::split_node_job_id;

/// An attempt's output as raw bytes (stdout and stderr interleaved as they were read, or one of
/// them). With `follow=true` the response streams until the attempt has ended and all is sent.
#[utoipa::path(get, path = "/v1/jobs/{job_id}/logs", tag = "jobs", params(("job_id" = String, Path), ("attempt" = Option<u32>, Query, description = "1, 2, …; the latest by default"), ("follow" = Option<bool>, Query, description = "Stream until the attempt ends"), ("stream" = Option<String>, Query, description = "stdout or stderr"), ("node" = Option<u32>, Query, description = "A multi-node job's node (also `JOB#N` as the id); its main node by default")), responses((status = 200, description = "The output bytes", body = String, content_type = "application/octet-stream"), (status = 400, description = "Invalid input: `errors` names each field", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Too many open streams for this caller or server", body = Problem, content_type = "application/problem+json")))]
pub(super) async fn logs(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut query = QueryParameters(query);
    let (attempt, follow, stream, node) = (
        query.take("attempt"),
        query.take("follow"),
        query.take("stream"),
        query.take("node"),
    );
    query.finish("attempt, follow, stream or node")?;
    // A node's own id (`JOB#2`, as AWS Batch names nodes) reads that node's output.
    let (job_id, node) = match (split_node_job_id(&job_id), node) {
        (Some((job, index)), None) => (JobId(job.to_string()), Some(index.to_string())),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(FieldError::new(
                "node",
                "is given twice: by the job id's #N and by node=; give one",
            )))
        }
        (None, node) => (JobId(job_id), node),
    };
    let job = state
        .store
        .job(&job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    let node = output_node(&job, node.as_deref())?;
    let attempt = match attempt.as_deref() {
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::invalid(FieldError::new(
                    "attempt",
                    format!("{text:?} is not an attempt number (1, 2, …)"),
                ))
            })?,
        None => job
            .current_attempt
            .as_ref()
            .map_or(job.n_attempts.max(1), |attempt| attempt.number),
    };
    let follow = matches!(follow.as_deref(), Some("true" | "1"));
    // Following holds a slot while the attempt runs; a plain read ends at once.
    let slot = if follow {
        Some(stream_slot(&state, &headers)?)
    } else {
        None
    };
    let stream = match stream.as_deref() {
        None => None,
        Some("stdout") => Some(OutputStream::Stdout),
        Some("stderr") => Some(OutputStream::Stderr),
        Some(other) => {
            return Err(ApiError::invalid(FieldError::new(
                "stream",
                format!("{other:?} is not a stream; use stdout or stderr"),
            )))
        }
    };
    let follower = LogFollower {
        store: state.store.clone(),
        job_id,
        attempt,
        node,
        after: 0,
        stream,
        follow,
        done: false,
        shutdown: state.shutdown.clone(),
    };
    let body = futures::stream::unfold((follower, slot), |(mut follower, slot)| async move {
        follower.next().await.map(|item| (item, (follower, slot)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Which node's output a read is for: the one asked (a multi-node job's, from 0), else the main
/// node's (whose outcome is the job's), or 0 for a job of one container.
fn output_node(job: &Job, asked: Option<&str>) -> Result<u32, ApiError> {
    let nodes = job.spec.nodes.as_ref();
    let Some(text) = asked else {
        return Ok(nodes.map_or(0, |nodes| nodes.main_node));
    };
    let Some(nodes) = nodes else {
        return Err(ApiError::invalid(FieldError::new(
            "node",
            format!(
                "job {} is not a multi-node job; read its output without a node",
                job.job_id
            ),
        )));
    };
    text.parse::<u32>()
        .ok()
        .filter(|node| *node < nodes.num_nodes)
        .ok_or_else(|| {
            ApiError::invalid(FieldError::new(
                "node",
                format!(
                    "{text:?} is not a node of job {}, which has nodes 0 to {}",
                    job.job_id,
                    nodes.num_nodes - 1
                ),
            ))
        })
}

pub(super) struct LogFollower {
    store: Store,
    job_id: JobId,
    attempt: u32,
    node: u32,
    after: i64,
    stream: Option<OutputStream>,
    follow: bool,
    done: bool,
    shutdown: CancellationToken,
}

impl LogFollower {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        while !self.done {
            // Whether the attempt was over is read before its chunks, so the chunks read after it
            // include everything the attempt wrote.
            let over = !self.follow || self.attempt_over().await;
            let lines = match self
                .store
                .logs((&self.job_id, self.attempt, self.node), self.after, 256)
                .await
            {
                Ok(lines) => lines,
                Err(error) => return Some(Err(std::io::Error::other(error.to_string()))),
            };
            if let Some(last) = lines.last() {
                self.after = last.id;
                let data: Vec<u8> = lines
                    .into_iter()
                    .filter(|line| self.stream.is_none_or(|stream| stream == line.stream))
                    .flat_map(|line| line.data)
                    .collect();
                if !data.is_empty() {
                    return Some(Ok(Bytes::from(data)));
                }
                continue;
            }
            if over {
                self.done = true;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(LOG_FOLLOW_INTERVAL) => {}
                    () = self.shutdown.cancelled() => self.done = true,
                }
            }
        }
        None
    }

    async fn attempt_over(&self) -> bool {
        match self.store.job(&self.job_id).await {
            Ok(Some(job)) => job.status.is_terminal() || job.n_attempts >= self.attempt,
            Ok(None) | Err(_) => true,
        }
    }
}
