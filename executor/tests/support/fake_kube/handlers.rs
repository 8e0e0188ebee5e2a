//! The fake's HTTP handlers for single objects: create, get, patch and delete of Jobs, Secrets
//! and Services, with the API server's name and label validation, and streaming `pods/log`.

use super::*;

/// What a real API server's validation refuses in object metadata, as its 422 `Invalid` Status:
/// a name that is not a DNS-1123 subdomain, label keys that are not qualified names, label values
/// that are not label values, annotation keys that are not qualified names.
pub(super) fn invalid_metadata(kind: &str, metadata: &ObjectMeta) -> Option<Response> {
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
pub(super) fn invalid_labels(metadata: &ObjectMeta) -> Vec<String> {
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

pub(super) fn is_dns_subdomain(name: &str) -> bool {
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

pub(super) fn is_label_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub(super) fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

pub(super) async fn create_job(
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
        // The Job controller's pods: one, or one per index of an Indexed Job.
        let spec = job.spec.as_ref().unwrap();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let indexes: Vec<Option<i32>> = match indexed {
            true => (0..spec.completions.unwrap_or(1)).map(Some).collect(),
            false => vec![None],
        };
        let template = spec.template.clone();
        let mut pods = Vec::new();
        for index in indexes {
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
            labels.insert("job-name".into(), name.clone());
            let mut annotations = template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            let mut pod_spec = template.spec.clone().unwrap_or_else(PodSpec::default);
            let pod_name = match index {
                Some(index) => {
                    labels.insert(COMPLETION_INDEX.into(), index.to_string());
                    annotations.insert(COMPLETION_INDEX.into(), index.to_string());
                    pod_spec.hostname = Some(format!("{name}-{index}"));
                    format!("{name}-{index}-x7k2p")
                }
                None => format!("{name}-x7k2p"),
            };
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(pod_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "batch/v1".into(),
                        kind: "Job".into(),
                        name: name.clone(),
                        uid: uid.clone(),
                        controller: Some(true),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(pod_spec),
                status: Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..Default::default()
                }),
            };
            server.commit(&mut cluster, "ADDED", Object::Pod(pod));
            pods.push(pod_name);
        }
        (job, pods)
    };
    let (job, pods) = pod;
    for pod_name in pods {
        tokio::spawn(server.clone().run_pod(job.clone(), pod_name));
    }
    (StatusCode::CREATED, Json(job)).into_response()
}

pub(super) async fn create_secret(
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

pub(super) async fn get_secret(
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
pub(super) async fn patch_secret(
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

pub(super) async fn delete_secret(
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

pub(super) async fn get_job(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    server.record(format!("GET job {name} in {ns}"));
    match server.job(&name) {
        Some(job) => Json(job).into_response(),
        None => status_error(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
    }
}

pub(super) async fn delete_job(
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
        let owned = |metadata: &ObjectMeta| {
            metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| Some(&owner.uid) == uid.as_ref())
        };
        cluster.secrets.retain(|_, secret| !owned(&secret.metadata));
        cluster
            .services
            .retain(|_, service| !owned(&service.metadata));
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
            tokio::spawn(server.clone().stop_pod(pod, pid, grace));
        }
    }
    Json(job).into_response()
}

pub(super) async fn pod_log(
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

/// A Service: a name that is a DNS-1035 label (the API server refuses others), kept for the
/// garbage collector to delete with its owner.
pub(super) async fn create_service(
    State(server): State<FakeApiServer>,
    Path(ns): Path<String>,
    Json(mut service): Json<Service>,
) -> Response {
    server.record(format!("POST service in {ns}"));
    let name = service.metadata.name.clone().unwrap_or_default();
    let dns_1035 = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && is_dns_subdomain(&name)
        && !name.contains('.');
    if !dns_1035 {
        return status_error(
            422,
            "Invalid",
            format!("Service {name:?} is invalid: metadata.name: Invalid value: {name:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"),
        );
    }
    if let Some(refusal) = invalid_metadata("Service", &service.metadata) {
        return refusal;
    }
    let mut cluster = server.cluster.lock().unwrap();
    if cluster.services.contains_key(&name) {
        return status_error(
            409,
            "AlreadyExists",
            format!("services \"{name}\" already exists"),
        );
    }
    service.metadata.namespace = Some(ns);
    service.metadata.uid = Some(format!("uid-service-{name}"));
    cluster.services.insert(name, service.clone());
    (StatusCode::CREATED, Json(service)).into_response()
}

pub(super) async fn get_service(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    server.record(format!("GET service {name} in {ns}"));
    match server.service(&name) {
        Some(service) => Json(service).into_response(),
        None => status_error(404, "NotFound", format!("services \"{name}\" not found")),
    }
}

pub(super) async fn delete_service(
    State(server): State<FakeApiServer>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    server.record(format!("DELETE service {name} in {ns}"));
    match server.cluster.lock().unwrap().services.remove(&name) {
        Some(service) => Json(service).into_response(),
        None => status_error(404, "NotFound", format!("services \"{name}\" not found")),
    }
}

/// The API server's version, as `kubectl version` reads it.
pub(super) async fn version(State(server): State<FakeApiServer>) -> Response {
    let minor = server.cluster.lock().unwrap().minor_version;
    Json(json!({
        "major": "1", "minor": minor.to_string(), "gitVersion": format!("v1.{minor}.0"),
        "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}
