//! The HTTP client side of every command but `server`.

use std::io::Write;

use anyhow::{anyhow, Context};
use batchctl_scheduler::api::views::JobView;
use futures::StreamExt;
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Which jobs `get jobs` lists.
#[derive(Debug, Clone, Default)]
pub struct JobListFilter {
    pub queue: Option<String>,
    pub status: Option<String>,
    pub array_job_id: Option<String>,
    /// kubectl's `-l`: `key=value,key!=value,key,!key` over the jobs' tags.
    pub tag_selector: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(server: &str) -> anyhow::Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(anyhow!(
                "--server {server:?} must be an http:// or https:// URL"
            ));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(token) = std::env::var("BATCHCTL_TOKEN") {
            let value = format!("Bearer {token}")
                .parse()
                .context("BATCHCTL_TOKEN is not a valid header value")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()?;
        Ok(Client { http, base })
    }

    /// `GET path`, read as the API's type `T` too.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer<T>> {
        Answer::read(self.get(path).await?)
    }

    /// `POST path`, read as the API's type `T` too.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<Answer<T>> {
        Answer::read(self.post(path, body).await?)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.send(self.http.get(self.url(path))).await?;
        Ok(response.json().await?)
    }

    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<Value> {
        let response = self.send(self.http.post(self.url(path)).json(body)).await?;
        Ok(response.json().await?)
    }

    /// `DELETE path` (no body).
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(self.http.delete(self.url(path)))
            .await?
            .json()
            .await?)
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .send(self.http.patch(self.url(path)).json(body))
            .await?;
        Ok(response.json().await?)
    }

    /// Submits a job. A server that cannot be reached or answers 503 (its database restarting,
    /// say) is asked again, with a bounded backoff for up to `SUBMIT_RETRY_BUDGET`, under one
    /// `Idempotency-Key` (the caller's, or one made up for this invocation), so a submit whose
    /// first answer was lost cannot create a second job.
    pub async fn submit(
        &self,
        request: &batchctl_scheduler::manifest::SubmitJobRequest,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Answer<JobView>> {
        let key = idempotency_key.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let give_up_at = std::time::Instant::now() + SUBMIT_RETRY_BUDGET;
        let mut delay = std::time::Duration::from_millis(200);
        let mut told = false;
        loop {
            let builder = self
                .http
                .post(self.url("/v1/jobs"))
                .json(request)
                .header("Idempotency-Key", &key);
            let error = match self.send_once(builder).await {
                Ok(response) => return Answer::read(response.json().await?),
                Err(Failure::Unreachable(error)) => error,
                Err(Failure::Answered {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after,
                    error,
                }) => {
                    if let Some(seconds) = retry_after {
                        delay = delay.max(std::time::Duration::from_secs(seconds.min(10)));
                    }
                    error
                }
                Err(Failure::Answered { error, .. }) => return Err(error),
            };
            if std::time::Instant::now() + delay > give_up_at {
                return Err(error);
            }
            if !told {
                told = true;
                eprintln!("{error:#}; retrying the submit (Idempotency-Key {key})");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// Up to `limit` jobs, newest first, following the server's page cursors.
    pub async fn list_jobs(&self, filter: &JobListFilter, limit: u32) -> anyhow::Result<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![(
                "limit",
                (limit as usize - items.len()).min(1000).to_string(),
            )];
            query.extend(filter.queue.clone().map(|q| ("queue", q)));
            query.extend(filter.status.clone().map(|s| ("status", s)));
            query.extend(filter.array_job_id.clone().map(|id| ("arrayJobId", id)));
            query.extend(filter.tag_selector.clone().map(|s| ("tagSelector", s)));
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let page: Value = self
                .send(self.http.get(self.url("/v1/jobs")).query(&query))
                .await?
                .json()
                .await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["nextCursor"].as_str() {
                Some(next) if items.len() < limit as usize => cursor = Some(next.to_string()),
                _ => return Ok(serde_json::json!({ "items": items })),
            }
        }
    }

    /// Copies an attempt's output to standard output as it arrives.
    pub async fn copy_logs(
        &self,
        job_id: &str,
        attempt: Option<u32>,
        follow: bool,
    ) -> anyhow::Result<()> {
        let mut query = vec![("follow", follow.to_string())];
        query.extend(attempt.map(|a| ("attempt", a.to_string())));
        // A node of a multi-node job, as AWS Batch names it (`JOB#2`): the server checks the number.
        let job_id = match job_id.rsplit_once('#') {
            Some((job, node)) => {
                query.push(("node", node.to_string()));
                job
            }
            None => job_id,
        };
        let response = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/jobs/{job_id}/logs")))
                    .query(&query),
            )
            .await?;
        let mut body = response.bytes_stream();
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = body.next().await {
            stdout.write_all(&chunk.context("the log stream broke off")?)?;
            stdout.flush()?;
        }
        Ok(())
    }

    /// Follows `GET /v1/events/stream`, printing each event's JSON on a line of its own.
    pub async fn watch_events(
        &self,
        pattern: Option<&str>,
        after: Option<i64>,
    ) -> anyhow::Result<()> {
        self.follow_events(pattern, after, |event| {
            println!("{event}");
            Ok(())
        })
        .await
    }

    /// Follows `GET /v1/events/stream` (server-sent events), handing each event's JSON to `each`
    /// as it arrives, until the stream ends.
    pub async fn follow_events(
        &self,
        pattern: Option<&str>,
        after: Option<i64>,
        mut each: impl FnMut(Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut query = Vec::new();
        query.extend(pattern.map(|p| ("pattern", p.to_string())));
        query.extend(after.map(|a| ("after", a.to_string())));
        let response = self
            .send(self.http.get(self.url("/v1/events/stream")).query(&query))
            .await?;
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk.context("the event stream broke off")?);
            // Server-sent events: lines; an event's JSON is on its `data:` line.
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if let Some(data) = line.strip_prefix(b"data:") {
                    let event: Value = serde_json::from_slice(data.trim_ascii())
                        .context("the server sent an event that is not JSON")?;
                    each(event)?;
                    std::io::stdout().flush()?;
                }
            }
        }
        Ok(())
    }

    /// A text answer (`/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let response = self.send(self.http.get(self.url(path))).await?;
        Ok(response.text().await?)
    }

    /// The job once it has finished (SUCCEEDED or FAILED). The server answers as soon as the job
    /// has ended, or after a timeout with the job as it is; this asks again until it has ended. A
    /// caller holding all its stream slots (429) is not refused: it looks every half second
    /// instead, as a client without the wait route would.
    pub async fn wait_for_job(&self, job_id: &str) -> anyhow::Result<Answer<JobView>> {
        loop {
            let wait = self
                .http
                .get(self.url(&format!("/v1/jobs/{job_id}/wait?timeoutSeconds=30")));
            let job: Value = match self.send_once(wait).await {
                Ok(response) => response.json().await?,
                Err(Failure::Answered {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    ..
                }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    self.get(&format!("/v1/jobs/{job_id}")).await?
                }
                Err(Failure::Unreachable(error) | Failure::Answered { error, .. }) => {
                    return Err(error)
                }
            };
            let job: Answer<JobView> = Answer::read(job)?;
            if job.typed.status.is_terminal() {
                return Ok(job);
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Response> {
        match self.send_once(request).await {
            Ok(response) => Ok(response),
            Err(Failure::Unreachable(error) | Failure::Answered { error, .. }) => Err(error),
        }
    }

    async fn send_once(&self, request: reqwest::RequestBuilder) -> Result<Response, Failure> {
        let response = request.send().await.map_err(|error| {
            Failure::Unreachable(anyhow!("cannot reach the batchctl server at {}: {error}; start one with `batchctl server` or pass --server", self.base))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let body = response.text().await.unwrap_or_default();
        let problem: Option<Value> = serde_json::from_str(&body).ok();
        let detail = problem
            .as_ref()
            .and_then(|p| p["detail"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                if body.is_empty() {
                    status.to_string()
                } else {
                    body.clone()
                }
            });
        let error = match status {
            StatusCode::UNAUTHORIZED => anyhow!("{detail} (set BATCHCTL_TOKEN)"),
            _ => anyhow!("{detail}"),
        };
        Err(Failure::Answered {
            status,
            retry_after,
            error,
        })
    }
}

/// How long `submit` keeps asking a server that is unreachable or unavailable.
const SUBMIT_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a request got no successful answer.
enum Failure {
    /// No answer at all: the server is down, or the connection broke.
    Unreachable(anyhow::Error),
    /// An answer that is not a success, with its `Retry-After` in seconds.
    Answered {
        status: StatusCode,
        retry_after: Option<u64>,
        error: anyhow::Error,
    },
}

/// An answer as the server sent it — what `-o json|yaml` prints, unchanged, so fields of a newer
/// server pass through — and read as the API's own type, which is what the CLI acts on.
pub struct Answer<T> {
    pub raw: Value,
    pub typed: T,
}

impl<T: DeserializeOwned> Answer<T> {
    pub fn read(raw: Value) -> anyhow::Result<Answer<T>> {
        let typed = serde_json::from_value(raw.clone()).map_err(|error| {
            anyhow!("the server's answer is not what this batchctl expects ({error}); use a batchctl of the server's version")
        })?;
        Ok(Answer { raw, typed })
    }
}
