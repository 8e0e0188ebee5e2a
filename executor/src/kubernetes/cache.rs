//! One shared view of an executor's Jobs and their pods, kept current by kube-runtime's `watcher`
//! (list, then watch; relist on 410 Gone or a broken stream, with backoff) feeding a `reflector`
//! store per kind, as Kubernetes controllers keep an informer. A thousand running attempts cost
//! the API server two watches, not thousands.
//!
//! Invariants:
//! - The cache is an optimisation only. What it lacks (a Job created a moment ago, or one whose
//!   events have not arrived yet, or anything before the first list) is read from the API server
//!   directly, so a cache behind the server makes a caller wait a little, never conclude that an
//!   attempt is gone.
//! - The reflector stores swap in a relist whole (at `InitDone`), and so does the index of pods
//!   by Job kept beside them (reflector stores have no secondary index; scanning every pod for
//!   each attempt's read would cost attempts × pods per change).
//! - Every change bumps a generation that waiters watch, so a change is never missed between a
//!   read and a wait (waiters compare generations, not events).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;

use super::JOB_NAME_LABEL;

/// How long one watch request lasts before the watcher renews it.
const WATCH_SECONDS: u32 = 290;

pub struct Cache {
    namespace: String,
    jobs: Store<Job>,
    pods: Store<Pod>,
    pods_by_job: Mutex<PodIndex>,
    generation: watch::Sender<u64>,
    /// Stops the watching task when the cache (its executor) is dropped.
    _stop: tokio_util::sync::DropGuard,
}

/// Names of pods by the name of their Job, as the pod watcher's events say.
#[derive(Default)]
struct PodIndex {
    current: HashMap<String, HashSet<String>>,
    /// Filled during a relist, then swapped in whole.
    relisting: Option<HashMap<String, HashSet<String>>>,
}

impl PodIndex {
    fn apply(&mut self, event: &Event<Pod>) {
        match event {
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(pod) => {
                if let (Some(index), Some((job, name))) = (&mut self.relisting, names(pod)) {
                    index.entry(job).or_default().insert(name);
                }
            }
            Event::InitDone => {
                if let Some(index) = self.relisting.take() {
                    self.current = index;
                }
            }
            Event::Apply(pod) => {
                if let Some((job, name)) = names(pod) {
                    self.current.entry(job).or_default().insert(name);
                }
            }
            Event::Delete(pod) => {
                if let Some((job, name)) = names(pod) {
                    if let Some(pods) = self.current.get_mut(&job) {
                        pods.remove(&name);
                        if pods.is_empty() {
                            self.current.remove(&job);
                        }
                    }
                }
            }
        }
    }
}

impl Cache {
    /// Starts keeping the Jobs and pods of `namespace` that `selector` matches; the task ends when
    /// the cache is dropped.
    pub fn start(jobs: Api<Job>, pods: Api<Pod>, namespace: &str, selector: String) -> Arc<Cache> {
        let config = watcher::Config::default()
            .labels(&selector)
            .timeout(WATCH_SECONDS);
        let (job_store, job_writer) = reflector::store();
        let (pod_store, pod_writer) = reflector::store();
        let job_events = reflector::reflector(job_writer, watcher::watcher(jobs, config.clone()))
            .default_backoff()
            .map(|event| event.map(|_| ()));
        let pod_events =
            reflector::reflector(pod_writer, watcher::watcher(pods, config)).default_backoff();
        let (generation, _) = watch::channel(0);
        let stop = tokio_util::sync::CancellationToken::new();
        let cache = Arc::new(Cache {
            namespace: namespace.to_string(),
            jobs: job_store,
            pods: pod_store,
            pods_by_job: Mutex::new(PodIndex::default()),
            generation,
            _stop: stop.clone().drop_guard(),
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            let mut job_events = std::pin::pin!(job_events);
            let mut pod_events = std::pin::pin!(pod_events);
            loop {
                let outcome = tokio::select! {
                    () = stop.cancelled() => return,
                    Some(event) = job_events.next() => event,
                    Some(event) = pod_events.next() => match event {
                        Ok(event) => {
                            let Some(cache) = weak.upgrade() else { return };
                            cache.index().apply(&event);
                            Ok(())
                        }
                        Err(error) => Err(error),
                    },
                    else => return,
                };
                match outcome {
                    Ok(()) => match weak.upgrade() {
                        Some(cache) => cache.bump(),
                        None => return,
                    },
                    // The stores keep what they had; the watcher relists after its backoff.
                    Err(error) => tracing::debug!(%error, "Kubernetes watch failed; relisting"),
                }
            }
        });
        cache
    }

    fn index(&self) -> std::sync::MutexGuard<'_, PodIndex> {
        self.pods_by_job.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached Job named `name` and its pods, if the cache has the Job.
    pub fn get(&self, name: &str) -> Option<(Job, Vec<Pod>)> {
        let job = self
            .jobs
            .get(&ObjectRef::new(name).within(&self.namespace))?;
        let pod_names: Vec<String> = self
            .index()
            .current
            .get(name)
            .map(|pods| pods.iter().cloned().collect())
            .unwrap_or_default();
        let pods = pod_names
            .iter()
            .filter_map(|pod| self.pods.get(&ObjectRef::new(pod).within(&self.namespace)))
            .map(|pod| (*pod).clone())
            .collect();
        Some(((*job).clone(), pods))
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

/// A pod's Job (by its label) and its own name.
fn names(pod: &Pod) -> Option<(String, String)> {
    let job = pod.metadata.labels.as_ref()?.get(JOB_NAME_LABEL)?.clone();
    Some((job, pod.metadata.name.clone()?))
}
