//! An attempt's output: its pod's log (`pods/log`, stdout and stderr merged, as Kubernetes keeps
//! them) from a byte offset, followed while the pod runs.

use super::*;

impl KubernetesExecutor {
    /// Sends the pod's log after byte `from`: following while it runs, then one full read once it
    /// ended, for what a follow cut short. `node` picks one pod of a multi-node attempt; without
    /// it, the attempt's pod (a multi-node attempt's main node's).
    pub(super) async fn copy_logs(
        &self,
        (name, node): (&str, Option<u32>),
        from: LogCursor,
        sender: &tokio::sync::mpsc::Sender<Result<LogChunk, ExecutorError>>,
    ) -> Result<(), ExecutorError> {
        let mut sent = from.0;
        loop {
            let (observation, version) = self.observe(name).await?;
            let attempt_finished = match observation {
                None => return Ok(()),
                Some(Observation::Waiting { recheck_in, .. }) if node.is_none() => {
                    self.next_change(version, recheck_in).await;
                    continue;
                }
                Some(Observation::Waiting { .. } | Observation::Running) => false,
                Some(Observation::Finished(_)) => true,
            };
            let (job, pods, _) = self.read(name).await?;
            let wanted = node.or_else(|| job.as_ref().and_then(nodes::main_node_of));
            let pod = pods
                .iter()
                .rfind(|pod| wanted.is_none() || nodes::node_of(pod) == wanted);
            let Some(pod) = pod else {
                if attempt_finished {
                    return Ok(());
                }
                // A node's pod not made yet.
                self.next_change(version, None).await;
                continue;
            };
            let state = pod_container_state(pod);
            let finished =
                attempt_finished || state.is_some_and(|state| state.terminated.is_some());
            if !finished && state.is_none_or(|state| state.running.is_none()) {
                // A node's container that has not started: no log yet.
                self.next_change(version, None).await;
                continue;
            }
            let Some(pod) = pod.metadata.name.clone() else {
                return Ok(());
            };
            let (_, pod_api) = self.apis().await?;
            let params = LogParams {
                container: Some(spec::CONTAINER.to_string()),
                follow: !finished,
                ..LogParams::default()
            };
            let reader = match pod_api.log_stream(&pod, &params).await {
                Ok(reader) => reader,
                // A container that never started has no log.
                Err(kube::Error::Api(status)) if finished && status.code == 400 => return Ok(()),
                Err(error) => return Err(classify(error)),
            };
            let mut reader = Box::pin(reader);
            let mut offset = 0u64;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = reader.read(&mut buffer).await.map_err(|error| {
                    unavailable(format!("reading the log of pod {pod}: {error}"))
                })?;
                if read == 0 {
                    break;
                }
                let (start, end) = (offset, offset + read as u64);
                offset = end;
                if end > sent {
                    let skip = sent.saturating_sub(start) as usize;
                    let chunk = LogChunk {
                        stream: OutputStream::Stdout,
                        data: Bytes::copy_from_slice(&buffer[skip..read]),
                        next: LogCursor(end),
                    };
                    sent = end;
                    if sender.send(Ok(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if finished {
                return Ok(());
            }
            // The follow ended: the container stopped (read everything once more), or the
            // connection dropped (follow again); both skip what was sent.
        }
    }
}

/// The state of a pod's work container, when the pod reports one.
fn pod_container_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|status| status.name == spec::CONTAINER)?
        .state
        .as_ref()
}
