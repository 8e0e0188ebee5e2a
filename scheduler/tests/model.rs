//! A property-based test: random sequences of submit, exit, timeout, cancel, terminate and
//! dispatcher restart, driven through the real dispatcher and store (SQLite) with a fake executor
//! whose work ends only when the test says, checked after every step against a small reference
//! model and against invariants:
//! - a job has one status and at most one attempt running, and what runs is what the store says;
//! - attempts never exceed the job's limit;
//! - a job never starts before every job it depends on ended as its condition asks (afterok,
//!   afterany, afternotok), fails once one can no longer be met, and waits no longer than needed;
//! - the vCPUs of running work never exceed the environment's, a queue's `maxRunningJobs` and a
//!   concurrency limit (one job per `customer` parameter) are never exceeded;
//! - the dispatcher is work-conserving: after it settles, no RUNNABLE job fits in the free room;
//! - outcomes the model can predict (an exit, a cancel, a failed dependency) are what the store shows.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use batchctl_executor::fake::FakeExecutor;
use batchctl_scheduler::control::{stop_job, StopMode};
use batchctl_scheduler::core::dependencies::{resolve, Resolution};
use batchctl_scheduler::core::model::{
    DependencyCondition, EnvironmentType, Job, JobId, JobStatus,
};
use batchctl_scheduler::dispatcher::{Dispatcher, DispatcherConfig, DispatcherHandle, Executors};
use batchctl_scheduler::manifest::{
    build_job, ContainerOverrides, JobDependencySpec, KeyValue, ResourceRequirement,
    RetryStrategySpec, SubmitContext, SubmitJobRequest, TimeoutSpec,
};
use batchctl_scheduler::store::{now_millis, Store};
use batchctl_scheduler::submitter::Submitter;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const CAPACITY_VCPUS: u64 = 3;

const RESOURCES: &str = r#"
apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: local}
spec: {type: process, maxVcpus: 3, maxMemoryMiB: 1024}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: q}
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: capped}
spec: {priority: 1, maxRunningJobs: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]}
---
apiVersion: batchctl/v1
kind: ConcurrencyLimit
metadata: {name: per-customer}
spec: {key: "Ref::customer", max: 1}
---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: d}
spec:
  containerProperties:
    image: none
    command: ["hang"]
    resourceRequirements: [{type: VCPU, value: "1"}, {type: MEMORY, value: "1"}]
"#;

#[derive(Debug, Clone)]
enum Op {
    /// Submit a job needing `vcpus`, with `attempts` in all, depending on earlier jobs (indices
    /// taken modulo how many exist, each with a condition), with a 1 s attempt timeout when
    /// `timeout`.
    Submit {
        vcpus: u64,
        attempts: u32,
        depends_on: Vec<(usize, DependencyCondition)>,
        timeout: bool,
        /// Into the queue whose `maxRunningJobs` is 1.
        capped: bool,
        /// With parameter `customer` set to this: at most one job per customer runs.
        customer: Option<u8>,
    },
    /// The running work of a job exits.
    Exit {
        job: usize,
        code: i32,
    },
    Cancel {
        job: usize,
    },
    Terminate {
        job: usize,
    },
    /// Stop the dispatcher and start a new one on the same store and executor.
    Restart,
    /// Let time pass, so attempt timeouts fire.
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..=2, 1u32..=3, prop::collection::vec((0usize..8, condition()), 0..3), prop::bool::weighted(0.15), prop::bool::weighted(0.3), prop::option::weighted(0.4, 0u8..2))
            .prop_map(|(vcpus, attempts, depends_on, timeout, capped, customer)| Op::Submit { vcpus, attempts, depends_on, timeout, capped, customer }),
        4 => (0usize..8, prop_oneof![Just(0), Just(1), Just(3)]).prop_map(|(job, code)| Op::Exit { job, code }),
        1 => (0usize..8).prop_map(|job| Op::Cancel { job }),
        1 => (0usize..8).prop_map(|job| Op::Terminate { job }),
        1 => Just(Op::Restart),
        1 => Just(Op::Wait),
    ]
}

fn condition() -> impl Strategy<Value = DependencyCondition> {
    prop_oneof![
        2 => Just(DependencyCondition::AfterOk),
        1 => Just(DependencyCondition::AfterAny),
        1 => Just(DependencyCondition::AfterNotOk),
    ]
}

/// What the model knows of a job.
#[derive(Debug, Clone)]
struct ModelJob {
    id: JobId,
    vcpus: u64,
    attempts: u32,
    depends_on: Vec<(usize, DependencyCondition)>,
    /// The status the store must show once the dispatcher settles, where the model can tell.
    expected: Option<JobStatus>,
    capped: bool,
    customer: Option<u8>,
}

struct World {
    store: Store,
    fake: FakeExecutor,
    handle: DispatcherHandle,
    submitter: Submitter,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    jobs: Vec<ModelJob>,
}

fn start_dispatcher(
    store: &Store,
    fake: &FakeExecutor,
) -> (
    DispatcherHandle,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let config = DispatcherConfig {
        kill_grace: Duration::from_millis(50),
        log_flush_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(100),
        ..DispatcherConfig::default()
    };
    let executors = Executors::default().with(EnvironmentType::Process, Arc::new(fake.clone()));
    let dispatcher = Dispatcher::new(store.clone(), executors, config);
    let handle = dispatcher.handle();
    let cancel = CancellationToken::new();
    let loop_cancel = cancel.clone();
    let task = tokio::spawn(async move { dispatcher.run(loop_cancel).await.unwrap() });
    (handle, cancel, task)
}

impl World {
    async fn new(store: Store) -> World {
        support::apply(&store, RESOURCES).await;
        let fake = FakeExecutor::new();
        let (handle, cancel, task) = start_dispatcher(&store, &fake);
        let submitter = Submitter::start(store.clone(), handle.clone(), cancel.clone());
        World {
            store,
            fake,
            handle,
            submitter,
            cancel,
            task,
            jobs: Vec::new(),
        }
    }

    async fn restart(&mut self) {
        self.cancel.cancel();
        (&mut self.task).await.unwrap();
        let (handle, cancel, task) = start_dispatcher(&self.store, &self.fake);
        self.submitter = Submitter::start(self.store.clone(), handle.clone(), cancel.clone());
        (self.handle, self.cancel, self.task) = (handle, cancel, task);
    }

    async fn job(&self, index: usize) -> Job {
        self.store
            .job(&self.jobs[index].id)
            .await
            .unwrap()
            .expect("submitted jobs exist")
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Submit {
                vcpus,
                attempts,
                depends_on,
                timeout,
                capped,
                customer,
            } => {
                self.submit(*vcpus, *attempts, depends_on, *timeout, *capped, *customer)
                    .await
            }
            Op::Exit { job, code } if !self.jobs.is_empty() => {
                let index = job % self.jobs.len();
                let before = self.job(index).await;
                if before.status == JobStatus::Running
                    && self.fake.exit_job(&before.job_id.0, *code)
                {
                    let ended = before.attempts.len() as u32 + 1;
                    self.jobs[index].expected = match (*code, ended >= self.jobs[index].attempts) {
                        (0, _) => Some(JobStatus::Succeeded),
                        (_, true) => Some(JobStatus::Failed),
                        (_, false) => None,
                    };
                }
            }
            Op::Cancel { job } | Op::Terminate { job } if !self.jobs.is_empty() => {
                let index = job % self.jobs.len();
                let mode = match op {
                    Op::Cancel { .. } => StopMode::Cancel,
                    _ => StopMode::Terminate,
                };
                let id = self.jobs[index].id.clone();
                let stopped =
                    stop_job(&self.store, &self.handle, &id, "stopped by the model", mode).await;
                if stopped.is_ok() {
                    // Whatever it was doing, a cancelled or terminated job ends FAILED, unless
                    // its work's own exit was recorded first.
                    let job = self.job(index).await;
                    if job.status != JobStatus::Succeeded {
                        self.jobs[index].expected = Some(JobStatus::Failed);
                    }
                }
            }
            Op::Restart => self.restart().await,
            Op::Wait => tokio::time::sleep(Duration::from_millis(1200)).await,
            Op::Exit { .. } | Op::Cancel { .. } | Op::Terminate { .. } => {}
        }
    }

    async fn submit(
        &mut self,
        vcpus: u64,
        attempts: u32,
        depends_on: &[(usize, DependencyCondition)],
        timeout: bool,
        capped: bool,
        customer: Option<u8>,
    ) {
        let mut parents: Vec<(usize, DependencyCondition)> = if self.jobs.is_empty() {
            Vec::new()
        } else {
            depends_on
                .iter()
                .map(|(i, condition)| (i % self.jobs.len(), *condition))
                .collect()
        };
        // One dependency per job depended on (the API keeps the first of repeats).
        parents.sort_by_key(|(parent, _)| *parent);
        parents.dedup_by_key(|(parent, _)| *parent);
        let request = SubmitJobRequest {
            job_queue: if capped { "capped" } else { "q" }.into(),
            job_definition: "d".into(),
            parameters: customer
                .map(|customer| BTreeMap::from([("customer".to_string(), format!("c{customer}"))]))
                .unwrap_or_default(),
            container_overrides: Some(ContainerOverrides {
                resource_requirements: vec![ResourceRequirement {
                    resource_type: "VCPU".into(),
                    value: vcpus.to_string(),
                }],
                environment: vec![KeyValue {
                    name: "MODEL".into(),
                    value: "1".into(),
                }],
                ..ContainerOverrides::default()
            }),
            retry_strategy: Some(RetryStrategySpec {
                attempts: Some(i64::from(attempts)),
                ..RetryStrategySpec::default()
            }),
            timeout: timeout.then_some(TimeoutSpec {
                attempt_duration_seconds: 1,
            }),
            depends_on: parents
                .iter()
                .map(|&(parent, condition)| JobDependencySpec {
                    job_id: Some(self.jobs[parent].id.0.clone()),
                    dependency_type: None,
                    condition: Some(condition.as_str().to_string()),
                })
                .collect(),
            ..SubmitJobRequest::default()
        };
        let definition = self
            .store
            .job_definition(&batchctl_scheduler::core::model::DefinitionRef::parse("d").unwrap())
            .await
            .unwrap()
            .unwrap()
            .definition;
        let queue = self
            .store
            .job_queue(
                &batchctl_scheduler::core::model::QueueName::try_from("q".to_string()).unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        let environments = self.store.compute_environments().await.unwrap();
        let context = SubmitContext {
            definition: &definition,
            queue: &queue,
            environments: &environments,
        };
        let id = JobId(uuid::Uuid::new_v4().to_string());
        let job = build_job(&request, &context, id.clone(), None, now_millis()).unwrap();
        self.submitter.submit(job).await.unwrap();
        self.jobs.push(ModelJob {
            id,
            vcpus,
            attempts,
            depends_on: parents,
            expected: None,
            capped,
            customer,
        });
    }

    /// Waits until the store stops changing (the dispatcher has done all it can).
    async fn settle(&self) -> Vec<Job> {
        let mut last: Option<Vec<(JobId, JobStatus, usize)>> = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let jobs = self.all_jobs().await;
            let shape: Vec<_> = jobs
                .iter()
                .map(|job| (job.job_id.clone(), job.status, job.attempts.len()))
                .collect();
            if last.as_ref() == Some(&shape) {
                return jobs;
            }
            last = Some(shape);
        }
        panic!("the dispatcher never settled");
    }

    async fn all_jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for model in &self.jobs {
            jobs.push(self.store.job(&model.id).await.unwrap().unwrap());
        }
        jobs
    }

    fn check(&self, jobs: &[Job]) {
        let by_id: HashMap<&JobId, &Job> = jobs.iter().map(|job| (&job.job_id, job)).collect();
        // What runs is what the store says runs, once per job, within capacity.
        let running = self.fake.running();
        let mut running_per_job: BTreeMap<&str, usize> = BTreeMap::new();
        for spec in &running {
            *running_per_job.entry(spec.job_id.as_str()).or_default() += 1;
        }
        for (job_id, count) in &running_per_job {
            assert_eq!(*count, 1, "job {job_id} has {count} attempts running");
            let job = by_id[&JobId(job_id.to_string())];
            assert!(
                matches!(job.status, JobStatus::Starting | JobStatus::Running),
                "job {job_id} runs but the store says {}",
                job.status
            );
        }
        // The capped queue's maxRunningJobs (1) holds whatever capacity is free.
        let capped_running = jobs
            .iter()
            .filter(|job| {
                job.queue.as_str() == "capped"
                    && running_per_job.contains_key(job.job_id.0.as_str())
            })
            .count();
        assert!(
            capped_running <= 1,
            "{capped_running} jobs of the capped queue run at once"
        );
        // The concurrency limit: one running job per customer, whatever queue.
        let mut customers_running: BTreeMap<u8, usize> = BTreeMap::new();
        for model in &self.jobs {
            if let Some(customer) = model.customer {
                if running_per_job.contains_key(model.id.0.as_str()) {
                    *customers_running.entry(customer).or_default() += 1;
                }
            }
        }
        for (customer, running) in &customers_running {
            assert!(
                *running <= 1,
                "{running} jobs of customer c{customer} run at once, over its limit of 1"
            );
        }
        let running_vcpus: u64 = running.iter().map(|spec| spec.resources.vcpu_millis).sum();
        assert!(
            running_vcpus <= CAPACITY_VCPUS * 1000,
            "{running_vcpus} vCPU-thousandths run in a {CAPACITY_VCPUS}-vCPU environment"
        );
        let mut free = CAPACITY_VCPUS * 1000;
        for job in jobs {
            if matches!(job.status, JobStatus::Starting | JobStatus::Running) {
                assert!(
                    running_per_job.contains_key(job.job_id.0.as_str()),
                    "job {} is {} but nothing runs for it",
                    job.job_id,
                    job.status
                );
                free -= job.spec.container.resources.vcpu_millis;
            }
        }
        for (model, job) in self.jobs.iter().zip(jobs) {
            let started = job.attempts.len() as u32 + u32::from(job.current_attempt.is_some());
            assert!(
                started <= model.attempts,
                "job {} had {started} attempts; its limit is {}",
                job.job_id,
                model.attempts
            );
            let first_start = job
                .attempts
                .first()
                .and_then(|a| a.started_at)
                .or(job.current_attempt.as_ref().and_then(|a| a.started_at));
            // Dependencies as core decides them (`core::dependencies::resolve`): a job started
            // only once every condition was met, fails once one can no longer be, and waits for
            // nothing once all are met.
            for &(parent, condition) in &model.depends_on {
                let parent = &jobs[parent];
                if let Some(started_at) = first_start {
                    assert!(
                        condition.met_by().contains(&parent.status),
                        "job {} ran while its dependency {} ({condition:?}) is {}",
                        job.job_id,
                        parent.job_id,
                        parent.status
                    );
                    assert!(started_at >= parent.stopped_at.unwrap());
                }
            }
            let resolution = resolve(
                &model
                    .depends_on
                    .iter()
                    .map(|&(parent, condition)| {
                        (jobs[parent].job_id.clone(), condition, jobs[parent].status)
                    })
                    .collect::<Vec<_>>(),
            );
            match resolution {
                Resolution::Failed(reason) => {
                    assert_eq!(
                        job.status,
                        JobStatus::Failed,
                        "job {} should have failed: {reason}",
                        job.job_id
                    );
                }
                Resolution::Ready => assert_ne!(
                    job.status,
                    JobStatus::Pending,
                    "job {} waits for nothing",
                    job.job_id
                ),
                Resolution::Waiting => {}
            }
            if let Some(expected) = model.expected {
                assert_eq!(job.status, expected, "job {}: {job:?}", job.job_id);
            }
            // Work-conserving: nothing that fits is left waiting (backoff is not used here),
            // unless its queue's cap is reached.
            let customer_held = model
                .customer
                .is_some_and(|customer| customers_running.contains_key(&customer));
            if job.status == JobStatus::Runnable
                && !(model.capped && capped_running >= 1)
                && !customer_held
            {
                assert!(
                    job.spec.container.resources.vcpu_millis > free,
                    "job {} needs {} and {free} is free, yet it waits",
                    job.job_id,
                    job.spec.container.resources.vcpu_millis
                );
            }
            assert_eq!(job.spec.container.resources.vcpu_millis, model.vcpus * 1000);
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_scheduler_keeps_its_invariants(ops in prop::collection::vec(op(), 1..24)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let test_store = support::sqlite().await;
            let mut world = World::new(test_store.store.clone()).await;
            for op in &ops {
                world.apply(op).await;
                let jobs = world.settle().await;
                world.check(&jobs);
            }
            world.stop().await;
        });
    }
}
