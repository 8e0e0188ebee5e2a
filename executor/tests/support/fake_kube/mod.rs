//! An in-process fake of the Kubernetes API server, for the Kubernetes executor's tests: there is
//! no cluster here and no server binary to install.
//!
//! It speaks the real wire format — k8s-openapi's `Job`, `Pod`, `List` and `WatchEvent` types as
//! JSON, `Status` errors, resource versions, label selectors, `?watch=true` streams and streaming
//! `pods/log` — for the requests the executor makes. Behind it, a small Job controller and kubelet:
//! a Job gets one pod (an Indexed Job one per index, with its completion index, host name and
//! subdomain), whose container's command really runs as a local process (so output and exit codes
//! are real), `activeDeadlineSeconds` is enforced, an Indexed Job ends as its `successPolicy` and
//! `backoffLimit: 0` say (stopping and deleting its other pods), and deleting a Job deletes its
//! pods (SIGTERM, then SIGKILL after the grace period) and what it owns (Secrets, Services). Images whose names start with `unschedulable`,
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
    ContainerStatus, Pod, PodCondition, PodSpec, PodStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, OwnerReference, Time};
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

mod handlers;
mod kubelet;

use handlers::*;

/// The annotation and label of each pod of an Indexed Job.
const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

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
    /// Services (the headless ones of multi-node attempts); not watched.
    services: BTreeMap<String, Service>,
    /// What `/version` reports: `1.<minor>`.
    minor_version: u32,
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
            cluster: Arc::new(Mutex::new(Cluster {
                minor_version: 33,
                ..Cluster::default()
            })),
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
            .route(
                "/api/v1/namespaces/{ns}/services",
                axum::routing::post(create_service),
            )
            .route(
                "/api/v1/namespaces/{ns}/services/{name}",
                get(get_service).delete(delete_service),
            )
            .route("/version", get(version))
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

    pub fn service(&self, name: &str) -> Option<Service> {
        self.cluster.lock().unwrap().services.get(name).cloned()
    }

    /// Makes `/version` report Kubernetes `1.<minor>`.
    pub fn set_minor_version(&self, minor: u32) {
        self.cluster.lock().unwrap().minor_version = minor;
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
