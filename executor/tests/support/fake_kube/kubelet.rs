//! The fake's Job controller and kubelet: each pod's command runs as a local process group, and
//! its end ends the Job (for an Indexed Job, as its success policy and backoff limit say).

use super::*;

impl FakeApiServer {
    /// The kubelet's part for one pod.
    pub(super) async fn run_pod(self, job: Job, pod_name: String) {
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
                None => match variable
                    .value_from
                    .as_ref()
                    .and_then(|from| from.field_ref.as_ref())
                {
                    // The downward API, for what the executor reads of its own pod.
                    Some(field) => self.pod_field(&pod_name, &field.field_path),
                    None => expand(&variable.value.clone().unwrap_or_default(), &environment),
                },
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
        self.pod_finished(&job_name, &pod_name, code == 0).await;
    }

    /// `metadata.annotations['KEY']` of a pod, as the downward API gives it ("" when absent).
    fn pod_field(&self, pod: &str, path: &str) -> String {
        let key = path
            .strip_prefix("metadata.annotations['")
            .and_then(|rest| rest.strip_suffix("']"));
        let cluster = self.cluster.lock().unwrap();
        key.and_then(|key| {
            cluster
                .pods
                .get(pod)?
                .metadata
                .annotations
                .as_ref()?
                .get(key)
                .cloned()
        })
        .unwrap_or_default()
    }

    /// The Job controller on a pod's end: a Job of one pod ends with it; an Indexed Job fails
    /// when any pod fails (`backoffLimit: 0`), succeeds when its `successPolicy` indexes (or all)
    /// have succeeded, and then stops and deletes its other pods.
    async fn pod_finished(&self, job_name: &str, pod_name: &str, succeeded: bool) {
        let Some(job) = self.job(job_name) else {
            return;
        };
        let spec = job.spec.clone().unwrap_or_default();
        if spec.completion_mode.as_deref() != Some("Indexed") {
            self.finish_job(job_name, succeeded, "BackoffLimitExceeded");
            return;
        }
        let succeeded_indexes: Vec<String> = self
            .pods_of(job_name)
            .iter()
            .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .filter_map(|pod| {
                pod.metadata
                    .annotations
                    .as_ref()?
                    .get(COMPLETION_INDEX)
                    .cloned()
            })
            .collect();
        let policy_met = spec
            .success_policy
            .iter()
            .flat_map(|policy| &policy.rules)
            .filter_map(|rule| rule.succeeded_indexes.as_deref())
            .any(|indexes| {
                indexes
                    .split(',')
                    .all(|index| succeeded_indexes.iter().any(|s| s == index))
            });
        let all = succeeded_indexes.len() as i32 == spec.completions.unwrap_or(1);
        let ended = match (succeeded, policy_met || all) {
            (false, _) => Some((false, "BackoffLimitExceeded")),
            (true, true) => Some((true, "SuccessCriteriaMet")),
            (true, false) => None,
        };
        let Some((job_succeeded, reason)) = ended else {
            return;
        };
        self.finish_job(job_name, job_succeeded, reason);
        let others: Vec<(String, Option<i32>)> = {
            let cluster = self.cluster.lock().unwrap();
            cluster
                .pods
                .values()
                .filter(|pod| {
                    job_of(pod) == job_name && pod.metadata.name.as_deref() != Some(pod_name)
                })
                .filter(|pod| {
                    !matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .map(|pod| {
                    let name = pod.metadata.name.clone().unwrap();
                    let pid = cluster.processes.get(&name).copied();
                    (name, pid)
                })
                .collect()
        };
        for (pod, pid) in others {
            tokio::spawn(self.clone().stop_pod(pod, pid, 2));
        }
    }

    /// Stops a pod's process group (SIGTERM, then SIGKILL after `grace` seconds) and deletes the
    /// pod.
    pub(super) async fn stop_pod(self, pod: String, pid: Option<i32>, grace: u64) {
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
        let mut cluster = self.cluster.lock().unwrap();
        if let Some(pod) = cluster.pods.get(&pod).cloned() {
            self.commit(&mut cluster, "DELETED", Object::Pod(pod));
        }
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
                reason: (!succeeded || reason == "SuccessCriteriaMet").then(|| reason.clone()),
                message: (!message.is_empty()).then_some(message),
                ..Default::default()
            }]);
        });
    }
}

pub(super) async fn copy_into(mut from: impl tokio::io::AsyncRead + Unpin, logs: Arc<LogBuffer>) {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 8192];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        logs.append(&buffer[..n]);
    }
}

pub(super) fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        }),
        ..Default::default()
    }
}

pub(super) fn terminated(code: i32, reason: &str) -> impl FnOnce(&mut PodStatus) {
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

pub(super) fn container_status(state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: "main".into(),
        state: Some(state),
        ..Default::default()
    }
}

/// Kubernetes' `$(NAME)` expansion of a variable's value by the variables before it; an unknown
/// name is left as written.
fn expand(value: &str, earlier: &[(String, String)]) -> String {
    let mut result = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        result.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match earlier.iter().rev().find(|(n, _)| n == name) {
                    Some((_, found)) => result.push_str(found),
                    None => result.push_str(&rest[start..start + 2 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            None => {
                result.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    result.push_str(rest);
    result
}
