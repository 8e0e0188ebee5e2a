//! `batchctl why JOB`: what holds a job that is not running, as a typed list with numbers.
//! A pure function of a snapshot the caller reads; it decides nothing.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

mod sentences;

use super::concurrency::{holders, ConcurrencyLimit, LimitBook, LimitSubject};
use super::consumable::{ConsumableBook, ConsumableStock};
use super::fair_share::{weight_of, ShareStanding};
use super::model::{
    ArrayRole, ComputeEnvironment, EnvironmentName, FairSharePolicy, Job, JobId, JobQueue,
    JobStatus, ResourceState, Resources,
};

/// What the explanation is computed from.
/// How many of the jobs holding a concurrency limit `why` names.
pub const HOLDERS_SHOWN: usize = 10;

/// How far `why` counts the jobs ahead of one in its queue.
pub const QUEUE_POSITION_COUNTED_TO: u64 = 10_000;

#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    pub job: &'a Job,
    pub queue: Option<&'a JobQueue>,
    pub environments: &'a HashMap<EnvironmentName, ComputeEnvironment>,
    /// What STARTING and RUNNING attempts hold, per environment.
    pub used: &'a HashMap<EnvironmentName, Resources>,
    /// RUNNABLE jobs of the same queue submitted before this one, counted up to
    /// `QUEUE_POSITION_COUNTED_TO + 1` (a larger count only says there are more).
    pub runnable_ahead: u64,
    /// Dependencies that have not SUCCEEDED, with their status.
    pub unfinished_dependencies: &'a [(JobId, JobStatus)],
    /// Environments whose executor was unreachable, with the reason.
    pub unhealthy: &'a BTreeMap<String, String>,
    /// For an array parent, how many of its children have not finished.
    pub unfinished_children: u64,
    /// For a child of an array with `maxConcurrency`, how many of the array's children are
    /// RUNNABLE, STARTING or RUNNING.
    pub array_in_flight: u64,
    /// How many of the job's queue's jobs are STARTING or RUNNING.
    pub queue_running: u64,
    /// For a job of a fair-share queue, where each share stands.
    pub shares: &'a [ShareStanding],
    /// The concurrency limits and the consumable resources.
    pub limits: &'a [ConcurrencyLimit],
    pub consumables: &'a [ConsumableStock],
    /// The STARTING and RUNNING jobs, which hold limits and consumable resources (read for a
    /// RUNNABLE job only).
    pub running: &'a [Job],
    pub now: i64,
}

/// One thing that keeps the job from running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum Hold {
    /// The job is not waiting: it runs or has ended.
    NotWaiting {
        status: JobStatus,
    },
    /// Held by `batchctl suspend`: it keeps its place but is not placed until resumed.
    Suspended,
    /// Its queue's `stopPolicy` is `Hold` or `HoldAndDrain`: nothing is placed from it until the
    /// policy is lifted.
    QueueHeld {
        job_queue: String,
        stop_policy: String,
    },
    /// A `ConcurrencyLimit` holds it: `max` jobs with its value of the limit's key run already.
    ConcurrencyLimited {
        concurrency_limit: String,
        key: String,
        value: String,
        max: u32,
        /// Some of the jobs holding it (at most `HOLDERS_SHOWN`).
        holding: Vec<String>,
    },
    /// A consumable resource it asks for has too little left now (`available` is absent when
    /// no such resource exists).
    ConsumableResourceShort {
        consumable_resource: String,
        needs: u64,
        available: Option<u64>,
    },
    /// Its queue's `maxRunningJobs` are all STARTING or RUNNING.
    QueueAtMaxRunning {
        job_queue: String,
        max_running_jobs: u32,
        running: u64,
    },
    /// Accepted, not yet admitted by the dispatcher.
    NotYetAdmitted,
    WaitingForDependencies {
        jobs: Vec<DependencyHold>,
    },
    /// An array parent stays PENDING until every child has finished.
    WaitingForArrayChildren {
        size: u32,
        unfinished: u64,
    },
    /// A child of an array with `maxConcurrency` waits PENDING for a slot: at most that many of
    /// the array's children are RUNNABLE, STARTING or RUNNING at once.
    ArrayAtMaxConcurrency {
        array_job_id: String,
        max_concurrency: u32,
        in_flight: u64,
    },
    BackingOff {
        runnable_after: i64,
        seconds_left: i64,
    },
    /// Jobs of the same queue that were submitted earlier and are also waiting. Counted up to
    /// `QUEUE_POSITION_COUNTED_TO`, so that `why` costs the same behind a million jobs; `at_least`
    /// says there are more.
    QueuePosition {
        runnable_ahead: u64,
        at_least: bool,
    },
    /// In a fair-share queue, shares take turns by weighted usage: the job's share and the shares
    /// whose weighted usage is lower, which go first.
    FairShare {
        share_identifier: String,
        weight_factor: f64,
        usage_vcpu_seconds: f64,
        shares_ahead: Vec<ShareHold>,
    },
    EnvironmentDisabled {
        compute_environment: String,
    },
    EnvironmentUnavailable {
        compute_environment: String,
        reason: String,
    },
    EnvironmentTooSmall {
        compute_environment: String,
        needs: Amounts,
        capacity: Amounts,
    },
    EnvironmentFull {
        compute_environment: String,
        needs: Amounts,
        free: Amounts,
    },
    UnknownEnvironment {
        compute_environment: String,
    },
    UnknownQueue {
        job_queue: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareHold {
    pub share_identifier: String,
    pub weight_factor: f64,
    pub usage_vcpu_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyHold {
    pub job_id: String,
    pub status: JobStatus,
}

/// Resources as a person reads them: vCPUs may be fractional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Amounts {
    pub vcpus: String,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    pub gpus: u64,
}

impl std::fmt::Display for Amounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} vCPU, {} MiB, {} GPU",
            self.vcpus, self.memory_mib, self.gpus
        )
    }
}

impl From<Resources> for Amounts {
    fn from(resources: Resources) -> Amounts {
        Amounts {
            vcpus: (resources.vcpu_millis as f64 / 1000.0).to_string(),
            memory_mib: resources.memory_mib,
            gpus: resources.gpus,
        }
    }
}

pub fn why(snapshot: &Snapshot<'_>) -> Vec<Hold> {
    let job = snapshot.job;
    let mut holds = waiting_holds(snapshot);
    let waiting = matches!(
        job.status,
        JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable
    );
    if job.suspended && waiting {
        holds.insert(0, Hold::Suspended);
    }
    holds
}

fn waiting_holds(snapshot: &Snapshot<'_>) -> Vec<Hold> {
    let job = snapshot.job;
    match job.status {
        JobStatus::Submitted => vec![Hold::NotYetAdmitted],
        JobStatus::Pending => {
            let mut holds = Vec::new();
            if !snapshot.unfinished_dependencies.is_empty() || job.array == ArrayRole::Single {
                holds.push(Hold::WaitingForDependencies {
                    jobs: snapshot
                        .unfinished_dependencies
                        .iter()
                        .map(|(job_id, status)| DependencyHold {
                            job_id: job_id.0.clone(),
                            status: *status,
                        })
                        .collect(),
                });
            }
            match (&job.array, job.spec.array_max_concurrency) {
                (ArrayRole::Parent { size }, _) => holds.push(Hold::WaitingForArrayChildren {
                    size: *size,
                    unfinished: snapshot.unfinished_children,
                }),
                // Waiting on dependencies first, a child waits for a slot only once they are met
                // or while its array is at its cap.
                (ArrayRole::Child { parent, .. }, Some(max))
                    if snapshot.unfinished_dependencies.is_empty()
                        || snapshot.array_in_flight >= u64::from(max) =>
                {
                    holds.push(Hold::ArrayAtMaxConcurrency {
                        array_job_id: parent.0.clone(),
                        max_concurrency: max,
                        in_flight: snapshot.array_in_flight,
                    })
                }
                (ArrayRole::Child { .. } | ArrayRole::Single, _) => {}
            }
            holds
        }
        JobStatus::Runnable => runnable_holds(snapshot),
        JobStatus::Starting | JobStatus::Running | JobStatus::Succeeded | JobStatus::Failed => {
            vec![Hold::NotWaiting { status: job.status }]
        }
    }
}

fn fair_share_hold(share: &str, policy: &FairSharePolicy, standings: &[ShareStanding]) -> Hold {
    let weighted = |standing: &ShareStanding| standing.weight_factor * standing.usage_vcpu_seconds;
    let own = standings.iter().find(|standing| standing.share == share);
    let own_weighted = own.map_or(0.0, weighted);
    Hold::FairShare {
        share_identifier: share.to_string(),
        weight_factor: weight_of(policy, share),
        usage_vcpu_seconds: own.map_or(0.0, |standing| standing.usage_vcpu_seconds),
        shares_ahead: standings
            .iter()
            .filter(|standing| standing.share != share && weighted(standing) < own_weighted)
            .map(|standing| ShareHold {
                share_identifier: standing.share.clone(),
                weight_factor: standing.weight_factor,
                usage_vcpu_seconds: standing.usage_vcpu_seconds,
            })
            .collect(),
    }
}

fn runnable_holds(snapshot: &Snapshot<'_>) -> Vec<Hold> {
    let job = snapshot.job;
    let mut holds = Vec::new();
    if let Some(after) = job.runnable_after.filter(|after| *after > snapshot.now) {
        holds.push(Hold::BackingOff {
            runnable_after: after,
            seconds_left: (after - snapshot.now + 999) / 1000,
        });
    }
    if snapshot.runnable_ahead > 0 {
        holds.push(Hold::QueuePosition {
            runnable_ahead: snapshot.runnable_ahead.min(QUEUE_POSITION_COUNTED_TO),
            at_least: snapshot.runnable_ahead > QUEUE_POSITION_COUNTED_TO,
        });
    }
    let policy = snapshot.queue.and_then(|queue| queue.fair_share.as_ref());
    if let (Some(share), Some(policy)) = (&job.spec.share_identifier, policy) {
        holds.push(fair_share_hold(share, policy, snapshot.shares));
    }
    let Some(queue) = snapshot.queue else {
        holds.push(Hold::UnknownQueue {
            job_queue: job.queue.to_string(),
        });
        return holds;
    };
    if queue.held {
        holds.push(Hold::QueueHeld {
            job_queue: queue.name.to_string(),
            stop_policy: if queue.drain { "HoldAndDrain" } else { "Hold" }.into(),
        });
    }
    if let Some(max) = queue.max_running_jobs {
        if snapshot.queue_running >= u64::from(max) {
            holds.push(Hold::QueueAtMaxRunning {
                job_queue: queue.name.to_string(),
                max_running_jobs: max,
                running: snapshot.queue_running,
            });
        }
    }
    if !snapshot.limits.is_empty() {
        let running: Vec<(JobId, LimitSubject)> = snapshot
            .running
            .iter()
            .map(|other| (other.job_id.clone(), LimitSubject::of(other)))
            .collect();
        let book = LimitBook::new(snapshot.limits, running.iter().map(|(_, subject)| subject));
        if let Some(held) = book.held(&book.keys_of(&LimitSubject::of(job))) {
            holds.push(Hold::ConcurrencyLimited {
                concurrency_limit: held.limit.name.clone(),
                key: held.limit.key.text(),
                value: held.value.clone(),
                max: held.limit.max,
                holding: holders(&held, &running, HOLDERS_SHOWN)
                    .into_iter()
                    .map(|job_id| job_id.0)
                    .collect(),
            });
        }
    }
    let consumables = ConsumableBook::new(
        snapshot.consumables,
        snapshot
            .running
            .iter()
            .map(|other| other.spec.consumable_resources.as_slice()),
    );
    if let Some(short) = consumables.short(&job.spec.consumable_resources) {
        holds.push(Hold::ConsumableResourceShort {
            consumable_resource: short.consumable_resource,
            needs: short.needs,
            available: short.available,
        });
    }
    let needs = job.spec.container.resources;
    for name in &queue.compute_environments {
        let compute_environment = name.to_string();
        let Some(environment) = snapshot.environments.get(name) else {
            holds.push(Hold::UnknownEnvironment {
                compute_environment,
            });
            continue;
        };
        if environment.state == ResourceState::Disabled {
            holds.push(Hold::EnvironmentDisabled {
                compute_environment,
            });
        } else if let Some(reason) = snapshot.unhealthy.get(name.as_str()) {
            holds.push(Hold::EnvironmentUnavailable {
                compute_environment,
                reason: reason.clone(),
            });
        } else if !needs.fits_within(&environment.capacity) {
            holds.push(Hold::EnvironmentTooSmall {
                compute_environment,
                needs: needs.into(),
                capacity: environment.capacity.into(),
            });
        } else {
            let in_use = snapshot.used.get(name).copied().unwrap_or_default();
            let free = environment.capacity.saturating_minus(&in_use);
            if !needs.fits_within(&free) {
                holds.push(Hold::EnvironmentFull {
                    compute_environment,
                    needs: needs.into(),
                    free: free.into(),
                });
            }
        }
    }
    holds
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{
        Backend, ContainerProperties, DefinitionName, JobName, JobSpec, QueueName, RetryPolicy,
    };

    /// A snapshot with nothing but the job and the tables: each test sets what it is about.
    fn bare<'a>(
        job: &'a Job,
        environments: &'a HashMap<EnvironmentName, ComputeEnvironment>,
        used: &'a HashMap<EnvironmentName, Resources>,
        unhealthy: &'a BTreeMap<String, String>,
    ) -> Snapshot<'a> {
        Snapshot {
            job,
            queue: None,
            environments,
            used,
            runnable_ahead: 0,
            unfinished_dependencies: &[],
            unhealthy,
            unfinished_children: 0,
            array_in_flight: 0,
            queue_running: 0,
            shares: &[],
            limits: &[],
            running: &[],
            consumables: &[],
            now: 0,
        }
    }

    fn resources(vcpus: u64, memory_mib: u64) -> Resources {
        Resources {
            vcpu_millis: vcpus * 1000,
            memory_mib,
            gpus: 0,
        }
    }

    pub(crate) fn job(status: JobStatus, needs: Resources) -> Job {
        Job {
            job_id: JobId("j".into()),
            job_name: JobName::try_from("j".to_string()).unwrap(),
            queue: QueueName::try_from("q".to_string()).unwrap(),
            status,
            status_reason: None,
            spec: JobSpec {
                definition: DefinitionName::try_from("d".to_string()).unwrap(),
                definition_revision: 1,
                parameters: Default::default(),
                container: ContainerProperties {
                    image: "i".into(),
                    command: vec!["true".into()],
                    environment: vec![],
                    resources: needs,
                    working_dir: None,
                    user: None,
                    image_pull_policy: Default::default(),
                    privileged: false,
                    capabilities: vec![],
                    secrets: vec![],
                    linux: Default::default(),
                    storage: Default::default(),
                },
                retry: RetryPolicy::attempts(1),
                timeout_seconds: None,
                depends_on: vec![],
                array_size: None,
                array_success_policy: Default::default(),
                array_max_concurrency: None,
                share_identifier: None,
                scheduling_priority: 0,
                max_log_bytes: None,
                chain_depth: 0,
                consumable_resources: Vec::new(),
                tags: Default::default(),
                propagate_tags: false,
                pod: Default::default(),
                nodes: None,
            },
            created_at: 0,
            started_at: None,
            stopped_at: None,
            n_attempts: 0,
            disruptions: 0,
            attempts: vec![],
            current_attempt: None,
            stop_requested: None,
            idempotency_key: None,
            runnable_after: None,
            suspended: false,
            array: crate::model::ArrayRole::Single,
        }
    }

    fn environment(name: &str, capacity: Resources, state: ResourceState) -> ComputeEnvironment {
        ComputeEnvironment {
            name: EnvironmentName::try_from(name.to_string()).unwrap(),
            backend: Backend::Process,
            state,
            capacity,
        }
    }

    #[test]
    fn a_runnable_job_is_held_by_position_and_capacity_with_numbers() {
        let job = job(JobStatus::Runnable, resources(2, 512));
        let names = ["off", "small", "busy", "down"]
            .map(|n| EnvironmentName::try_from(n.to_string()).unwrap());
        let queue = JobQueue {
            name: job.queue.clone(),
            priority: 1,
            state: ResourceState::Enabled,
            compute_environments: names.to_vec(),
            runnable_time_limits: vec![],
            fair_share: None,
            job_retention: Default::default(),
            held: false,
            drain: false,
            max_running_jobs: None,
        };
        let environments: HashMap<_, _> = [
            environment("off", resources(8, 8192), ResourceState::Disabled),
            environment("small", resources(1, 8192), ResourceState::Enabled),
            environment("busy", resources(4, 8192), ResourceState::Enabled),
            environment("down", resources(4, 8192), ResourceState::Enabled),
        ]
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
        let used = HashMap::from([(names[2].clone(), resources(3, 100))]);
        let unhealthy = BTreeMap::from([("down".to_string(), "engine is down".to_string())]);
        let snapshot = Snapshot {
            queue: Some(&queue),
            runnable_ahead: 7,
            ..bare(&job, &environments, &used, &unhealthy)
        };
        let holds = why(&snapshot);
        assert_eq!(
            holds,
            vec![
                Hold::QueuePosition {
                    runnable_ahead: 7,
                    at_least: false
                },
                Hold::EnvironmentDisabled {
                    compute_environment: "off".into()
                },
                Hold::EnvironmentTooSmall {
                    compute_environment: "small".into(),
                    needs: resources(2, 512).into(),
                    capacity: resources(1, 8192).into(),
                },
                Hold::EnvironmentFull {
                    compute_environment: "busy".into(),
                    needs: resources(2, 512).into(),
                    free: resources(1, 8092).into(),
                },
                Hold::EnvironmentUnavailable {
                    compute_environment: "down".into(),
                    reason: "engine is down".into(),
                },
            ]
        );
        // A queue whose maxRunningJobs all run says so, with the numbers.
        let capped = JobQueue {
            max_running_jobs: Some(2),
            ..queue.clone()
        };
        let holds = why(&Snapshot {
            queue: Some(&capped),
            queue_running: 2,
            ..snapshot
        });
        let hold = Hold::QueueAtMaxRunning {
            job_queue: queue.name.to_string(),
            max_running_jobs: 2,
            running: 2,
        };
        assert!(holds.contains(&hold), "{holds:?}");
        assert!(hold
            .to_string()
            .ends_with("its maxRunningJobs is 2: the next starts when one ends"));
        let holds = why(&Snapshot {
            queue: Some(&capped),
            queue_running: 1,
            ..snapshot
        });
        assert!(!holds
            .iter()
            .any(|h| matches!(h, Hold::QueueAtMaxRunning { .. })));
    }

    #[test]
    fn other_states_say_what_they_wait_for() {
        let environments = HashMap::new();
        let used = HashMap::new();
        let unhealthy = BTreeMap::new();
        let dependencies = [(JobId("a".into()), JobStatus::Running)];
        let snapshot = |job: &Job| {
            why(&Snapshot {
                unfinished_dependencies: &dependencies,
                now: 1_000,
                ..bare(job, &environments, &used, &unhealthy)
            })
        };
        assert_eq!(
            snapshot(&job(JobStatus::Submitted, resources(1, 1))),
            vec![Hold::NotYetAdmitted]
        );
        assert_eq!(
            snapshot(&job(JobStatus::Pending, resources(1, 1))),
            vec![Hold::WaitingForDependencies {
                jobs: vec![DependencyHold {
                    job_id: "a".into(),
                    status: JobStatus::Running
                }]
            }]
        );
        assert_eq!(
            snapshot(&job(JobStatus::Running, resources(1, 1))),
            vec![Hold::NotWaiting {
                status: JobStatus::Running
            }]
        );
        let mut held = job(JobStatus::Submitted, resources(1, 1));
        held.suspended = true;
        assert_eq!(
            snapshot(&held),
            vec![Hold::Suspended, Hold::NotYetAdmitted],
            "a suspended job says so first"
        );
        held.status = JobStatus::Running;
        assert_eq!(
            snapshot(&held),
            vec![Hold::NotWaiting {
                status: JobStatus::Running
            }],
            "once it runs, a hold no longer matters"
        );
        let mut backing_off = job(JobStatus::Runnable, resources(1, 1));
        backing_off.runnable_after = Some(5_500);
        assert_eq!(
            snapshot(&backing_off),
            vec![
                Hold::BackingOff {
                    runnable_after: 5_500,
                    seconds_left: 5
                },
                Hold::UnknownQueue {
                    job_queue: "q".into()
                },
            ]
        );
    }

    /// A capped array's child waits for a slot once its dependencies are met; while they are
    /// not, it waits for them, and for a slot too only if the array is at its cap.
    #[test]
    fn a_capped_arrays_child_waits_for_a_slot() {
        let (environments, used, unhealthy) = (HashMap::new(), HashMap::new(), BTreeMap::new());
        let mut child = job(JobStatus::Pending, resources(1, 1));
        child.array = ArrayRole::Child {
            parent: JobId("p".into()),
            index: 4,
        };
        child.spec.array_max_concurrency = Some(3);
        let dependency = [(JobId("a".into()), JobStatus::Running)];
        let holds = |dependencies: &[(JobId, JobStatus)], in_flight| {
            why(&Snapshot {
                unfinished_dependencies: dependencies,
                array_in_flight: in_flight,
                ..bare(&child, &environments, &used, &unhealthy)
            })
        };
        let at_cap = Hold::ArrayAtMaxConcurrency {
            array_job_id: "p".into(),
            max_concurrency: 3,
            in_flight: 3,
        };
        assert_eq!(holds(&[], 3), vec![at_cap.clone()]);
        assert_eq!(
            at_cap.to_string(),
            "its array job p runs at most 3 children at once (maxConcurrency); 3 are RUNNABLE, STARTING or RUNNING: the next is released when one ends"
        );
        let waiting_for_a = Hold::WaitingForDependencies {
            jobs: vec![DependencyHold {
                job_id: "a".into(),
                status: JobStatus::Running,
            }],
        };
        assert_eq!(holds(&dependency, 1), vec![waiting_for_a.clone()]);
        assert_eq!(holds(&dependency, 3), vec![waiting_for_a, at_cap]);
    }

    #[test]
    fn a_long_queue_is_counted_only_so_far() {
        let job = job(JobStatus::Runnable, resources(1, 64));
        let (environments, used, unhealthy) = (HashMap::new(), HashMap::new(), BTreeMap::new());
        let holds = |runnable_ahead| {
            why(&Snapshot {
                runnable_ahead,
                ..bare(&job, &environments, &used, &unhealthy)
            })
        };
        let position = |runnable_ahead, at_least| Hold::QueuePosition {
            runnable_ahead,
            at_least,
        };
        let counted_to = QUEUE_POSITION_COUNTED_TO;
        assert_eq!(holds(counted_to)[0], position(counted_to, false));
        assert_eq!(holds(counted_to + 1)[0], position(counted_to, true));
    }
}
