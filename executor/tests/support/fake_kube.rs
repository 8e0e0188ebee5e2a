//! An in-process fake of the Kubernetes API server, for the Kubernetes executor's tests: there is
//! no cluster here and no server binary to install.
//!
//! It speaks the real wire format — k8s-openapi's `Job`, `Pod`, `List` and `WatchEvent` types as
//! JSON, `Status` errors, resource versions, label selectors, `?watch=true` streams and streaming
//! `pods/log` — for the requests the executor makes. Behind it, a small Job controller and kubelet:
//! a Job gets one pod, whose container's command really runs as a local process (so output and exit
//! codes are real), `activeDeadlineSeconds` is enforced, and deleting a Job deletes its pods
//! (SIGTERM, then SIGKILL after the grace period). Images whose names start with `unschedulable`,
//! `missing`, `oom` or `evicted` play those failures instead of running.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodSpec, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, OwnerReference, Time};
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

// Objects are cloned into the history and to watchers whole; boxing would only add noise here.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Object {
    Job(Job),
    Pod(Pod),
}

#[derive(Clone, Debug)]
struct Change {
    version: u64,
    kind: &'static str,
    object: Object,
}

#[derive(Default)]
struct LogBuffer {
    bytes: Mutex<(Vec<u8>, bool)>,
    grew: Notify,
}

impl LogBuffer {
    fn append(&self, data: &[u8]) {
        self.bytes.lock().unwrap().0.extend_from_slice(data);
        self.grew.notify_waiters();
    }
    fn close(&self) {
        self.bytes.lock().unwrap().1 = true;
        self.grew.notify_waiters();
    }
}

#[derive(Default)]
struct Cluster {
    version: u64,
    jobs: BTreeMap<String, Job>,
    pods: BTreeMap<String, Pod>,
    /// Secrets, for the kubelet's `secretKeyRef`s; not watched.
    secrets: BTreeMap<String, Secret>,
    logs: HashMap<String, Arc<LogBuffer>>,
    /// Local process groups of running pods, to signal on deletion and deadlines.
    processes: HashMap<String, i32>,
    history: Vec<Change>,
    /// Every request, as `METHOD path`, for assertions.
    requests: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApiServer {
    cluster: Arc<Mutex<Cluster>>,
    changes: broadcast::Sender<Change>,
    pub url: String,
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let (changes, _) = broadcast::channel(4096);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = FakeApiServer {
            cluster: Arc::default(),
            changes,
            url: format!("http://{}", listener.local_addr().unwrap()),
        };
        let app = Router::new()
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs",
                get(list_jobs).post(create_job),
            )
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                get(get_job).delete(delete_job),
            )
            .route(
                "/api/v1/namespaces/{ns}/secrets",
                axum::routing::post(create_secret),
            )
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                get(get_secret).patch(patch_secret).delete(delete_secret),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    /// A kubeconfig file that points at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: tester\n  user: {{token: fake-token}}\ncontexts:\n- name: fake\n  \
             context: {{cluster: fake, user: tester, namespace: batch}}\ncurrent-context: fake\n",
            self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn job(&self, name: &str) -> Option<Job> {
        self.cluster.lock().unwrap().jobs.get(name).cloned()
    }

    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.cluster.lock().unwrap().secrets.get(name).cloned()
    }

    pub fn pods_of(&self, job: &str) -> Vec<Pod> {
        let cluster = self.cluster.lock().unwrap();
        cluster
            .pods
            .values()
            .filter(|pod| job_of(pod) == job)
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> Vec<String> {
        self.cluster.lock().unwrap().requests.clone()
    }

    fn record(&self, request: String) {
        self.cluster.lock().unwrap().requests.push(request);
    }

    /// Stores an object at the next resource version and tells watchers.
    fn commit(&self, cluster: &mut Cluster, kind: &'static str, mut object: Object) -> Object {
        cluster.version += 1;
        let version = cluster.version;
        let metadata = match &mut object {
            Object::Job(job) => &mut job.metadata,
            Object::Pod(pod) => &mut pod.metadata,
        };
        metadata.resource_version = Some(version.to_string());
        let name = metadata.name.clone().unwrap();
        match (&object, kind) {
            (Object::Job(_), "DELETED") => {
                cluster.jobs.remove(&name);
            }
            (Object::Pod(_), "DELETED") => {
                cluster.pods.remove(&name);
            }
            (Object::Job(job), _) => {
                cluster.jobs.insert(name, job.clone());
            }
            (Object::Pod(pod), _) => {
                cluster.pods.insert(name, pod.clone());
            }
        }
        let change = Change {
            version,
            kind,
            object: object.clone(),
        };
        cluster.history.push(change.clone());
        let _ = self.changes.send(change);
        object
    }

    fn update_pod(&self, name: &str, edit: impl FnOnce(&mut PodStatus)) {
        let mut cluster = self.cluster.lock().unwrap();
        let Some(mut pod) = cluster.pods.get(name).cloned() else {
            return;
        };
        edit(pod.status.get_or_insert_with(PodStatus::default));
        self.commit(&mut cluster, "MODIFIED", Object::Pod(pod));
    }

    fn update_job(&self, name: &str, edit: impl FnOnce(&mut JobStatus)) {
        let mut cluster = self.cluster.lock().unwrap();
        let Some(mut job) = cluster.jobs.get(name).cloned() else {
            return;
        };
        edit(job.status.get_or_insert_with(JobStatus::default));
        self.commit(&mut cluster, "MODIFIED", Object::Job(job));
    }

    /// The kubelet's part for one pod.
    async fn run_pod(self, job: Job, pod_name: String) {
        let spec = job.spec.clone().unwrap();
        let job_name = job.metadata.name.clone().unwrap();
        let container = spec.template.spec.clone().unwrap().containers[0].clone();
        let image = container.image.clone().unwrap_or_default();
        let set_waiting = |reason: &str, message: &str| {
            let (reason, message) = (reason.to_string(), message.to_string());
            move |status: &mut PodStatus| {
                status.container_statuses = Some(vec![container_status(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason),
                        message: Some(message),
                    }),
                    ..Default::default()
                })]);
            }
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        if image.starts_with("unschedulable") {
            self.update_pod(&pod_name, |status| {
                status.conditions = Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()),
                    ..Default::default()
                }]);
            });
            return;
        }
        self.update_pod(&pod_name, |status| {
            status.conditions = Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                ..Default::default()
            }]);
        });
        if image.starts_with("missing") {
            self.update_pod(
                &pod_name,
                set_waiting(
                    "ErrImagePull",
                    &format!("failed to pull image \"{image}\": not found"),
                ),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.update_pod(
                &pod_name,
                set_waiting(
                    "ImagePullBackOff",
                    &format!("Back-off pulling image \"{image}\""),
                ),
            );
            return;
        }
        if image.starts_with("evicted") {
            self.update_pod(&pod_name, |status| {
                status.phase = Some("Failed".into());
                status.reason = Some("Evicted".into());
                status.message = Some("The node was low on resource: memory.".into());
            });
            self.finish_job(&job_name, false, "BackoffLimitExceeded");
            return;
        }
        let logs = Arc::new(LogBuffer::default());
        self.cluster
            .lock()
            .unwrap()
            .logs
            .insert(pod_name.clone(), Arc::clone(&logs));
        if image.starts_with("oom") {
            self.update_pod(&pod_name, |status| {
                status.phase = Some("Running".into());
                status.container_statuses = Some(vec![container_status(running())]);
            });
            logs.append(b"allocating\n");
            tokio::time::sleep(Duration::from_millis(100)).await;
            logs.close();
            self.update_pod(&pod_name, terminated(137, "OOMKilled"));
            self.finish_job(&job_name, false, "BackoffLimitExceeded");
            return;
        }
        // The kubelet resolves `secretKeyRef`s; a missing Secret or key keeps the container from
        // being made, as CreateContainerConfigError.
        let mut environment = Vec::new();
        for variable in container.env.iter().flatten() {
            let value = match variable
                .value_from
                .as_ref()
                .and_then(|from| from.secret_key_ref.as_ref())
            {
                Some(reference) => {
                    let stored = self.secret(&reference.name).and_then(|secret| {
                        secret
                            .data?
                            .get(&reference.key)
                            .map(|bytes| bytes.0.clone())
                    });
                    match stored {
                        Some(bytes) => String::from_utf8(bytes).unwrap(),
                        None => {
                            self.update_pod(
                                &pod_name,
                                set_waiting(
                                    "CreateContainerConfigError",
                                    &format!("secret \"{}\" not found", reference.name),
                                ),
                            );
                            return;
                        }
                    }
                }
                None => variable.value.clone().unwrap_or_default(),
            };
            environment.push((variable.name.clone(), value));
        }
        // Everything else runs the container's command here, as a process group of its own.
        let command = container.command.clone().unwrap_or_default();
        let mut process = tokio::process::Command::new(&command[0]);
        process
            .args(&command[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(environment)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let mut child = match process.spawn() {
            Ok(child) => child,
            Err(error) => {
                self.update_pod(
                    &pod_name,
                    set_waiting("CreateContainerError", &error.to_string()),
                );
                return;
            }
        };
        let pid = child.id().unwrap() as i32;
        self.cluster
            .lock()
            .unwrap()
            .processes
            .insert(pod_name.clone(), pid);
        self.update_pod(&pod_name, |status| {
            status.phase = Some("Running".into());
            status.container_statuses = Some(vec![container_status(running())]);
        });
        if let Some(seconds) = spec.active_deadline_seconds {
            let server = self.clone();
            let job_name = job_name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(seconds as u64)).await;
                if server.job(&job_name).is_some_and(|job| {
                    job.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_none()
                }) {
                    server.finish_job(&job_name, false, "DeadlineExceeded");
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            });
        }
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let out = tokio::spawn(copy_into(stdout, Arc::clone(&logs)));
        let err = tokio::spawn(copy_into(stderr, Arc::clone(&logs)));
        let status = child.wait().await.unwrap();
        let _ = (out.await, err.await);
        logs.close();
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        self.update_pod(
            &pod_name,
            terminated(code, if code == 0 { "Completed" } else { "Error" }),
        );
        self.finish_job(&job_name, code == 0, "BackoffLimitExceeded");
    }

    fn finish_job(&self, name: &str, succeeded: bool, reason: &str) {
        let reason = reason.to_string();
        self.update_job(name, |status| {
            if status.conditions.is_some() {
                return;
            }
            let (type_, message) = if succeeded {
                ("Complete", String::new())
            } else if reason == "DeadlineExceeded" {
                (
                    "Failed",
                    "Job was active longer than specified deadline".to_string(),
                )
            } else {
                (
                    "Failed",
                    "Job has reached the specified backoff limit".to_string(),
                )
            };
            if succeeded {
                status.succeeded = Some(1);
            } else {
                status.failed = Some(1);
            }
            status.conditions = Some(vec![JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: (!succeeded).then(|| reason.clone()),
                message: (!message.is_empty()).then_some(message),
                ..Default::default()
            }]);
        });
    }
}

async fn copy_into(mut from: impl tokio::io::AsyncRead + Unpin, logs: Arc<LogBuffer>) {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 8192];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        logs.append(&buffer[..n]);
    }
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        }),
        ..Default::default()
    }
}

fn terminated(code: i32, reason: &str) -> impl FnOnce(&mut PodStatus) {
    let reason = reason.to_string();
    move |status: &mut PodStatus| {
        status.phase = Some(if code == 0 { "Succeeded" } else { "Failed" }.into());
        status.container_statuses = Some(vec![container_status(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason),
                ..Default::default()
            }),
            ..Default::default()
        })]);
    }
}

fn container_status(state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: "main".into(),
        state: Some(state),
        ..Default::default()
    }
}

fn job_of(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get("batch.kubernetes.io/job-name").cloned())
        .unwrap_or_default()
}

fn status_error(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

/// `a=b,c` (equality and existence), as the executor uses selectors.
fn matches(selector: Option<&String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector.split(',').all(|term| match term.split_once('=') {
        Some((key, value)) => labels.get(key.trim()).map(String::as_str) == Some(value.trim()),
        None => labels.contains_key(term.trim()),
    })
}

fn labels_of(object: &Object) -> Option<&BTreeMap<String, String>> {
    match object {
        Object::Job(job) => job.metadata.labels.as_ref(),
        Object::Pod(pod) => pod.metadata.labels.as_ref(),
    }
}

fn to_json(object: &Object) -> Value {
    match object {
        Object::Job(job) => serde_json::to_value(job).unwrap(),
        Object::Pod(pod) => serde_json::to_value(pod).unwrap(),
    }
}

/// A list, or with `watch=true` a stream of watch events after `resourceVersion`.
fn list_or_watch(
    server: &FakeApiServer,
    namespace: &str,
    query: &HashMap<String, String>,
    pods: bool,
) -> Response {
    let watching = query.contains_key("watch");
    server.record(format!(
        "GET {} in {namespace}{}",
        if pods { "pods" } else { "jobs" },
        if watching { " (watch)" } else { "" }
    ));
    let selector = query.get("labelSelector");
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout: u64 = query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let receiver = server.changes.subscribe();
        let backlog: Vec<Change> = server
            .cluster
            .lock()
            .unwrap()
            .history
            .iter()
            .filter(|c| c.version > from)
            .cloned()
            .collect();
        let selector = selector.cloned();
        let keep = move |change: &Change| {
            matches!(
                (&change.object, pods),
                (Object::Pod(_), true) | (Object::Job(_), false)
            ) && matches(selector.as_ref(), labels_of(&change.object))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let state = (backlog.into_iter(), receiver, from);
        let stream =
            futures::stream::unfold(state, move |(mut backlog, mut receiver, mut seen)| {
                let keep = keep.clone();
                async move {
                    loop {
                        let change = match backlog.next() {
                            Some(change) => change,
                            None => {
                                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                                    Ok(Ok(change)) => change,
                                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                                    _ => return None,
                                }
                            }
                        };
                        if change.version <= seen || !keep(&change) {
                            continue;
                        }
                        seen = change.version;
                        let line = json!({"type": change.kind, "object": to_json(&change.object)})
                            .to_string()
                            + "\n";
                        return Some((
                            Ok::<_, Infallible>(Bytes::from(line)),
                            (backlog, receiver, seen),
                        ));
                    }
                }
            });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let cluster = server.cluster.lock().unwrap();
    let metadata = ListMeta {
        resource_version: Some(cluster.version.to_string()),
        ..Default::default()
    };
    let body = if pods {
        let items: Vec<Pod> = cluster
            .pods
            .values()
            .filter(|p| matches(selector, p.metadata.labels.as_ref()))
            .cloned()
            .collect();
        serde_json::to_value(k8s_openapi::List { items, metadata }).unwrap()
    } else {
        let items: Vec<Job> = cluster
            .jobs
            .values()
            .filter(|j| matches(selector, j.metadata.labels.as_ref()))
            .cloned()
            .collect();
        serde_json::to_value(k8s_openapi::List { items, metadata }).unwrap()
    };
    Json(body).into_response()
}

async fn list_jobs(
    State(server): State<FakeApiServer>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(&server, &ns, &query, false)
}

async fn list_pods(
    State(server): State<FakeApiServer>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(&server, &ns, &query, true)
}

/// What a real API server's validation refuses in object metadata, as its 422 `Invalid` Status:
/// a name that is not a DNS-1123 subdomain, label keys that are not qualified names, label values
/// that are not label values, annotation keys that are not qualified names.
fn invalid_metadata(kind: &str, metadata: &ObjectMeta) -> Option<Response> {
    let name = metadata.name.clone().unwrap_or_default();
    let mut causes = Vec::new();
    if !is_dns_subdomain(&name) {
        causes.push(format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"));
    }
    causes.extend(invalid_labels(metadata));
    (!causes.is_empty()).then(|| {
        status_error(
            422,
            "Invalid",
            format!("{kind} {name:?} is invalid: {}", causes.join(", ")),
        )
    })
}

/// What is wrong with the label and annotation keys and values of `metadata` (a pod template's
/// has no name to check).
fn invalid_labels(metadata: &ObjectMeta) -> Vec<String> {
    let mut causes = Vec::new();
    for (key, value) in metadata.labels.iter().flatten() {
        if !is_qualified_name(key) {
            causes.push(format!("metadata.labels: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"));
        }
        if !(value.is_empty() || is_label_name(value)) {
            causes.push(format!("metadata.labels: Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"));
        }
    }
    for key in metadata.annotations.iter().flatten().map(|(key, _)| key) {
        if !is_qualified_name(key) {
            causes.push(format!("metadata.annotations: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"));
        }
    }
    causes
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_label_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

async fn create_job(
    State(server): State<FakeApiServer>,
    Path(ns): Path<String>,
    Json(mut job): Json<Job>,
) -> Response {
    server.record(format!("POST job in {ns}"));
    let template_causes = job
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .map(invalid_labels)
        .unwrap_or_default();
    if let Some(refusal) = invalid_metadata("Job.batch", &job.metadata) {
        return refusal;
    }
    if !template_causes.is_empty() {
        return status_error(
            422,
            "Invalid",
            format!(
                "Job.batch is invalid: spec.template.{}",
                template_causes.join(", ")
            ),
        );
    }
    let name = job.metadata.name.clone().unwrap_or_default();
    let pod = {
        let mut cluster = server.cluster.lock().unwrap();
        if cluster.jobs.contains_key(&name) {
            return status_error(
                409,
                "AlreadyExists",
                format!("jobs.batch \"{name}\" already exists"),
            );
        }
        let uid = format!("uid-{name}");
        job.metadata.namespace = Some(ns.clone());
        job.metadata.uid = Some(uid.clone());
        job.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        job.status = Some(JobStatus {
            active: Some(1),
            ..Default::default()
        });
        let Object::Job(job) = server.commit(&mut cluster, "ADDED", Object::Job(job)) else {
            unreachable!()
        };
        // The Job controller's pod.
        let template = job.spec.as_ref().unwrap().template.clone();
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
        labels.insert("job-name".into(), name.clone());
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("{name}-x7k2p")),
                namespace: Some(ns),
                labels: Some(labels),
                creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: name.clone(),
                    uid,
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(template.spec.clone().unwrap_or_else(PodSpec::default)),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }),
        };
        server.commit(&mut cluster, "ADDED", Object::Pod(pod.clone()));
        (job, pod.metadata.name.unwrap())
    };
    let (job, pod_name) = pod;
    tokio::spawn(server.clone().run_pod(job.clone(), pod_name));
    (StatusCode::CREATED, Json(job)).into_response()
}

async fn create_secret(
    State(server): State<FakeApiServer>,
    Path(ns): Path<String>,
    Json(mut secret): Json<Secret>,
) -> Response {
    server.record(format!("POST secret in {ns}"));
    if let Some(refusal) = invalid_metadata("Secret", &secret.metadata) {
        return refusal;
    }
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut cluster = server.cluster.lock().unwrap();
    if cluster.secrets.contains_key(&name) {
        return status_error(
            409,
            "AlreadyExists",
            format!("secrets \"{name}\" already exists"),
        );
    }
    secret.metadata.namespace = Some(ns);
    secret.metadata.uid = Some(format!("uid-secret-{name}"));
    cluster.secrets.insert(name, secret.clone());
    Json(secret).into_response()
}

async fn get_secret(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    server.record(format!("GET secret {name} in {ns}"));
    match server.secret(&name) {
        Some(secret) => Json(secret).into_response(),
        None => status_error(404, "NotFound", format!("secrets \"{name}\" not found")),
    }
}

/// A merge patch of metadata only (what the executor sends: its owner references).
async fn patch_secret(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
    Json(patch): Json<Value>,
) -> Response {
    server.record(format!("PATCH secret {name} in {ns}"));
    let mut cluster = server.cluster.lock().unwrap();
    let Some(secret) = cluster.secrets.get_mut(&name) else {
        return status_error(404, "NotFound", format!("secrets \"{name}\" not found"));
    };
    if let Some(owners) = patch["metadata"].get("ownerReferences") {
        secret.metadata.owner_references = Some(serde_json::from_value(owners.clone()).unwrap());
    }
    Json(secret.clone()).into_response()
}

async fn delete_secret(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    server.record(format!("DELETE secret {name} in {ns}"));
    match server.cluster.lock().unwrap().secrets.remove(&name) {
        Some(_) => {
            Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})).into_response()
        }
        None => status_error(404, "NotFound", format!("secrets \"{name}\" not found")),
    }
}

async fn get_job(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    server.record(format!("GET job {name} in {ns}"));
    match server.job(&name) {
        Some(job) => Json(job).into_response(),
        None => status_error(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
    }
}

async fn delete_job(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let propagation = options["propagationPolicy"]
        .as_str()
        .unwrap_or("Orphan")
        .to_string();
    let grace = options["gracePeriodSeconds"].as_u64().unwrap_or(30);
    server.record(format!(
        "DELETE job {name} in {ns} propagation={propagation} grace={grace}"
    ));
    let (job, pods) = {
        let mut cluster = server.cluster.lock().unwrap();
        let Some(job) = cluster.jobs.get(&name).cloned() else {
            return status_error(404, "NotFound", format!("jobs.batch \"{name}\" not found"));
        };
        server.commit(&mut cluster, "DELETED", Object::Job(job.clone()));
        // The garbage collector's part: what the Job owns goes with it.
        let uid = job.metadata.uid.clone();
        cluster.secrets.retain(|_, secret| {
            !secret
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| Some(&owner.uid) == uid.as_ref())
        });
        let pods: Vec<(String, Option<i32>)> = cluster
            .pods
            .values()
            .filter(|p| job_of(p) == name)
            .map(|p| {
                let n = p.metadata.name.clone().unwrap();
                let pid = cluster.processes.get(&n).copied();
                (n, pid)
            })
            .collect();
        (job, pods)
    };
    if propagation != "Orphan" {
        for (pod, pid) in pods {
            let server = server.clone();
            tokio::spawn(async move {
                if let Some(pid) = pid {
                    use nix::sys::signal::{killpg, Signal};
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = killpg(pid, Signal::SIGTERM);
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
                    while tokio::time::Instant::now() < deadline && killpg(pid, None).is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let _ = killpg(pid, Signal::SIGKILL);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let mut cluster = server.cluster.lock().unwrap();
                if let Some(pod) = cluster.pods.get(&pod).cloned() {
                    server.commit(&mut cluster, "DELETED", Object::Pod(pod));
                }
            });
        }
    }
    Json(job).into_response()
}

async fn pod_log(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    server.record(format!("GET log {name} in {ns}"));
    let follow = query.get("follow").is_some_and(|f| f == "true");
    let Some(logs) = server.cluster.lock().unwrap().logs.get(&name).cloned() else {
        return status_error(
            400,
            "BadRequest",
            format!("container \"main\" in pod \"{name}\" is waiting to start: ContainerCreating"),
        );
    };
    let stream = futures::stream::unfold(
        (logs, 0usize, false),
        move |(logs, sent, done)| async move {
            if done {
                return None;
            }
            loop {
                let (chunk, closed) = {
                    let bytes = logs.bytes.lock().unwrap();
                    (bytes.0[sent..].to_vec(), bytes.1)
                };
                if !chunk.is_empty() {
                    let next = sent + chunk.len();
                    return Some((Ok::<_, Infallible>(Bytes::from(chunk)), (logs, next, false)));
                }
                if closed || !follow {
                    return None;
                }
                // Short waits, so an append between the read and the wait is seen soon anyway.
                let _ = tokio::time::timeout(Duration::from_millis(50), logs.grew.notified()).await;
            }
        },
    );
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap()
}
