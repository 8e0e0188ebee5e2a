//! One shared view of an executor's Jobs and their pods, kept current by one list and two watches
//! (an informer, as Kubernetes controllers keep), instead of a GET, a LIST and a watch per attempt
//! for every change: a thousand running attempts cost the API server two watches, not thousands.
//!
//! Invariants:
//! - The cache is an optimisation only. What it lacks (a Job created a moment ago, or one whose
//!   events have not arrived yet) is read from the API server directly, so a cache behind the
//!   server makes a caller wait a little, never conclude that an attempt is gone.
//! - After a watch ends it resumes from the last resource version seen; when the server says that
//!   version is too old (410 Gone) or the stream fails, everything is listed again.
//! - Every change bumps a generation that waiters watch, so a change is never missed between a
//!   read and a wait (waiters compare generations, not events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;

use super::JOB_NAME_LABEL;

/// How long one watch request lasts before it is renewed.
const WATCH_SECONDS: u32 = 290;

#[derive(Default)]
struct Objects {
    jobs: HashMap<String, Job>,
    /// Pods by the name of their Job.
    pods: HashMap<String, HashMap<String, Pod>>,
}

pub struct Cache {
    objects: Mutex<Objects>,
    generation: watch::Sender<u64>,
    /// Stops the watching task when the cache (its executor) is dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl Cache {
    /// Starts keeping the Jobs and pods `selector` matches; the task ends when the cache is dropped.
    pub fn start(jobs: Api<Job>, pods: Api<Pod>, selector: String) -> Arc<Cache> {
        let (generation, _) = watch::channel(0);
        let stop = tokio_util::sync::CancellationToken::new();
        let cache = Arc::new(Cache {
            objects: Mutex::new(Objects::default()),
            generation,
            _stop: stop.clone().drop_guard(),
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    watched = list_and_watch(&weak, &jobs, &pods, &selector) => {
                        if let Err(error) = watched {
                            tracing::debug!(%error, "Kubernetes watch ended; listing again");
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        cache
    }

    /// The cached Job named `name` and its pods, if the cache has the Job.
    pub fn get(&self, name: &str) -> Option<(Job, Vec<Pod>)> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let job = objects.jobs.get(name)?.clone();
        let pods = objects
            .pods
            .get(name)
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default();
        Some((job, pods))
    }

    /// The current generation, to wait for a change after.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Resolves once the generation moved past `seen`, or after `within`.
    pub async fn changed_after(&self, seen: u64, within: Duration) {
        let mut receiver = self.generation.subscribe();
        let _ = tokio::time::timeout(within, receiver.wait_for(|now| *now > seen)).await;
    }

    fn bump(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }
}

/// Lists, then follows both watches, holding the cache only while applying a change.
async fn list_and_watch(
    cache: &std::sync::Weak<Cache>,
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    selector: &str,
) -> Result<(), kube::Error> {
    let listed_jobs = jobs.list(&ListParams::default().labels(selector)).await?;
    let listed_pods = pods.list(&ListParams::default().labels(selector)).await?;
    let mut job_version = listed_jobs.metadata.resource_version.unwrap_or_default();
    let mut pod_version = listed_pods.metadata.resource_version.unwrap_or_default();
    let Some(this) = cache.upgrade() else {
        return Ok(());
    };
    {
        let mut objects = this.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.jobs = listed_jobs
            .items
            .into_iter()
            .filter_map(|job| Some((job.metadata.name.clone()?, job)))
            .collect();
        objects.pods.clear();
        for pod in listed_pods.items {
            insert_pod(&mut objects, pod);
        }
    }
    this.bump();
    drop(this);
    let params = WatchParams::default()
        .labels(selector)
        .timeout(WATCH_SECONDS);
    loop {
        let job_events = jobs.watch(&params, &job_version).await?.boxed();
        let pod_events = pods.watch(&params, &pod_version).await?.boxed();
        let mut events = futures::stream::select(
            job_events.map(|event| event.map(|e| Change::Job(Box::new(e)))),
            pod_events.map(|event| event.map(|e| Change::Pod(Box::new(e)))),
        );
        while let Some(event) = events.next().await {
            let event = event?;
            let Some(this) = cache.upgrade() else {
                return Ok(());
            };
            match event {
                Change::Job(event) => match *event {
                    WatchEvent::Added(job) | WatchEvent::Modified(job) => {
                        job_version = version_of(&job.metadata).unwrap_or(job_version);
                        let mut objects = this.objects.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(name) = job.metadata.name.clone() {
                            objects.jobs.insert(name, job);
                        }
                    }
                    WatchEvent::Deleted(job) => {
                        job_version = version_of(&job.metadata).unwrap_or(job_version);
                        let mut objects = this.objects.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(name) = &job.metadata.name {
                            objects.jobs.remove(name);
                        }
                    }
                    WatchEvent::Bookmark(bookmark) => {
                        job_version = bookmark.metadata.resource_version;
                        continue;
                    }
                    // 410 Gone (the version is too old) or another error: list again.
                    WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
                },
                Change::Pod(event) => match *event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        pod_version = version_of(&pod.metadata).unwrap_or(pod_version);
                        let mut objects = this.objects.lock().unwrap_or_else(|p| p.into_inner());
                        insert_pod(&mut objects, pod);
                    }
                    WatchEvent::Deleted(pod) => {
                        pod_version = version_of(&pod.metadata).unwrap_or(pod_version);
                        let mut objects = this.objects.lock().unwrap_or_else(|p| p.into_inner());
                        if let (Some(job), Some(name)) = (job_name(&pod), &pod.metadata.name) {
                            if let Some(pods) = objects.pods.get_mut(&job) {
                                pods.remove(name);
                                if pods.is_empty() {
                                    objects.pods.remove(&job);
                                }
                            }
                        }
                    }
                    WatchEvent::Bookmark(bookmark) => {
                        pod_version = bookmark.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
                },
            }
            this.bump();
        }
        // Both watches ran their time: resume from what was seen.
    }
}

enum Change {
    Job(Box<WatchEvent<Job>>),
    Pod(Box<WatchEvent<Pod>>),
}

fn version_of(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    metadata.resource_version.clone()
}

fn job_name(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(JOB_NAME_LABEL).cloned()
}

fn insert_pod(objects: &mut Objects, pod: Pod) {
    if let (Some(job), Some(name)) = (job_name(&pod), pod.metadata.name.clone()) {
        objects.pods.entry(job).or_default().insert(name, pod);
    }
}
