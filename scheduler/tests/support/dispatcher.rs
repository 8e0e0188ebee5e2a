//! The dispatcher test harness: the real dispatcher and submitter on a test store, with the
//! recording fake executor, and the resources most dispatcher tests start from.

use std::time::Duration;

use batchctl_executor::fake::FakeExecutor;
use batchctl_scheduler::core::model::{EnvironmentType, Job, JobId, JobStatus};
use batchctl_scheduler::dispatcher::{Dispatcher, DispatcherConfig, DispatcherHandle, Executors};
use batchctl_scheduler::manifest::{ContainerOverrides, SubmitJobRequest};
use batchctl_scheduler::store::{now_millis, Store};
use batchctl_scheduler::submitter::Submitter;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// `LOCAL_QUEUE` and a definition `d` echoing its parameter `word`, with two attempts.
pub const RESOURCES: &str = concat!(
    local_queue!(),
    r#"---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: d}
spec:
  parameters: {word: default}
  containerProperties:
    image: busybox
    command: ["echo", "Ref::word"]
    environment: [{name: GREETING, value: hi}]
    resourceRequirements: [{type: VCPU, value: "1"}, {type: MEMORY, value: "64"}]
  retryStrategy: {attempts: 2}
"#
);

pub struct Harness {
    pub store: Store,
    pub fake: FakeExecutor,
    pub handle: DispatcherHandle,
    pub submitter: Submitter,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A dispatcher whose fake executor serves process environments only.
    pub async fn start(store: Store, fake: FakeExecutor) -> Harness {
        Harness::start_serving(store, fake, &[EnvironmentType::Process]).await
    }

    /// A dispatcher whose fake executor serves environments of these types.
    pub async fn start_serving(
        store: Store,
        fake: FakeExecutor,
        types: &[EnvironmentType],
    ) -> Harness {
        let config = DispatcherConfig {
            kill_grace: Duration::from_millis(100),
            log_flush_interval: Duration::from_millis(20),
            poll_interval: Duration::from_millis(200),
            ..DispatcherConfig::default()
        };
        let executors = types.iter().fold(Executors::default(), |executors, kind| {
            executors.with(*kind, std::sync::Arc::new(fake.clone()))
        });
        let dispatcher = Dispatcher::new(store.clone(), executors, config);
        let handle = dispatcher.handle();
        let cancel = CancellationToken::new();
        let submitter = Submitter::start(store.clone(), handle.clone(), cancel.clone());
        let loop_cancel = cancel.clone();
        let task = tokio::spawn(async move { dispatcher.run(loop_cancel).await.unwrap() });
        Harness {
            store,
            fake,
            handle,
            submitter,
            cancel,
            task,
        }
    }

    pub async fn stop(self) -> (Store, FakeExecutor) {
        self.cancel.cancel();
        self.task.await.unwrap();
        (self.store, self.fake)
    }

    pub async fn submit(&self, command: &[&str], timeout_seconds: Option<i64>) -> JobId {
        self.submit_request(SubmitJobRequest {
            job_queue: "q".into(),
            job_definition: "d".into(),
            parameters: BTreeMap::from([("word".to_string(), "you".to_string())]),
            container_overrides: Some(ContainerOverrides {
                command: Some(command.iter().map(|w| w.to_string()).collect()),
                ..ContainerOverrides::default()
            }),
            timeout: timeout_seconds.map(|s| batchctl_scheduler::manifest::TimeoutSpec {
                attempt_duration_seconds: s,
            }),
            ..SubmitJobRequest::default()
        })
        .await
    }

    pub async fn submit_request(&self, request: SubmitJobRequest) -> JobId {
        let job = batchctl_scheduler::submission::build_from_store(
            &self.store,
            &request,
            None,
            now_millis(),
            "",
        )
        .await
        .unwrap()
        .unwrap();
        self.submitter.submit(job).await.unwrap().job_id
    }

    pub async fn wait_for(&self, job_id: &JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let job = self.store.job(job_id).await.unwrap().unwrap();
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {job:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for_status(&self, job_id: &JobId, status: JobStatus) -> Job {
        self.wait_for(job_id, status.as_str(), |job| job.status == status)
            .await
    }
}
