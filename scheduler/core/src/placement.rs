//! Placement: which runnable jobs start now, and where. A pure function of queues, environments and
//! the queue heads; the dispatcher carries the plan out.
//!
//! Queues are served by priority, highest first (ties by name), DISABLED ones too (they refuse new
//! jobs at submit; those already in them still run). Within a queue jobs are taken in
//! submission order, best effort: a job that fits nowhere now is passed over so that smaller jobs
//! behind it can use the room (Kueue's BestEffortFIFO). The first environment in the queue's order
//! that is ENABLED and has room wins.

use std::collections::HashMap;

use super::concurrency::{LimitBook, LimitKeys};
use super::consumable::{ConsumableBook, ConsumableRequest};
use super::model::{
    ComputeEnvironment, EnvironmentName, JobId, JobQueue, QueueName, ResourceState, Resources,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub job_id: JobId,
    pub needs: Resources,
    /// The concurrency limits it counts against (`LimitBook::keys_of`).
    pub limits: LimitKeys,
    /// The consumable resources it asks for.
    pub consumes: Vec<ConsumableRequest>,
}

/// What bounds placement beside capacity: concurrency limits and consumable resources, each
/// counted from what runs and added to as a pass places.
#[derive(Debug, Clone)]
pub struct Bounds<'a> {
    pub limits: LimitBook<'a>,
    pub consumables: ConsumableBook,
}

impl Bounds<'_> {
    /// No limit and no consumable resource: only capacity bounds placement.
    pub fn none() -> Bounds<'static> {
        Bounds {
            limits: LimitBook::new(&[], []),
            consumables: ConsumableBook::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub job_id: JobId,
    pub queue: QueueName,
    pub environment: EnvironmentName,
    pub reserved: Resources,
    /// NON_REPLENISHABLE consumable resources it uses up.
    pub used_up: Vec<ConsumableRequest>,
}

/// The order queues are served in: priority, highest first, ties by name. A DISABLED queue takes
/// no new jobs, but, as in AWS Batch, the jobs already in it can finish, so it is served too.
/// The queues placement serves, in order; a held queue (`stopPolicy: Hold`) is not served.
pub fn queue_order(queues: &[JobQueue]) -> Vec<&JobQueue> {
    let mut ordered: Vec<&JobQueue> = queues.iter().filter(|queue| !queue.held).collect();
    ordered.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    ordered
}

/// Whether an ENABLED environment of the queue has some vCPU and some memory free: without one,
/// no job of the queue can be placed and reading its head would be wasted work.
pub fn has_room(
    queue: &JobQueue,
    environments: &HashMap<EnvironmentName, ComputeEnvironment>,
    used: &HashMap<EnvironmentName, Resources>,
) -> bool {
    queue.compute_environments.iter().any(|name| {
        environments.get(name).is_some_and(|environment| {
            let in_use = used.get(name).copied().unwrap_or_default();
            let free = environment.capacity.saturating_minus(&in_use);
            environment.state == ResourceState::Enabled
                && free.vcpu_millis > 0
                && free.memory_mib > 0
        })
    })
}

/// One queue's part of the plan: `head` (or a page of it, pages taken in order) against what
/// `used` leaves free. Planning queues one after another in `queue_order`, each head page by page,
/// gives the plan of all heads at once (the tests' `plan_placements`).
/// How many more of `queue`'s jobs may start while `running` of them are STARTING or RUNNING:
/// what `maxRunningJobs` leaves, or no bound without one.
pub fn queue_slots(queue: &JobQueue, running: usize) -> usize {
    queue
        .max_running_jobs
        .map_or(usize::MAX, |max| (max as usize).saturating_sub(running))
}

/// Places `head` in order where it fits, at most `slots` of it (`queue_slots`), passing over
/// jobs a concurrency limit holds or whose consumable resources are short (each placement counts
/// in `bounds` for the ones after it).
pub fn plan_queue(
    queue: &JobQueue,
    environments: &HashMap<EnvironmentName, ComputeEnvironment>,
    used: &mut HashMap<EnvironmentName, Resources>,
    head: &[Candidate],
    slots: usize,
    bounds: &mut Bounds<'_>,
) -> Vec<Placement> {
    let mut plan = Vec::new();
    for candidate in head {
        if plan.len() >= slots {
            break;
        }
        if bounds.limits.held(&candidate.limits).is_some()
            || bounds.consumables.short(&candidate.consumes).is_some()
        {
            continue;
        }
        let room = queue.compute_environments.iter().find(|name| {
            environments.get(*name).is_some_and(|environment| {
                let in_use = used.get(*name).copied().unwrap_or_default();
                environment.state == ResourceState::Enabled
                    && in_use
                        .plus(&candidate.needs)
                        .fits_within(&environment.capacity)
            })
        });
        if let Some(environment) = room {
            let in_use = used.entry(environment.clone()).or_default();
            *in_use = in_use.plus(&candidate.needs);
            bounds.limits.take(&candidate.limits);
            let used_up = bounds.consumables.take(&candidate.consumes);
            plan.push(Placement {
                job_id: candidate.job_id.clone(),
                queue: queue.name.clone(),
                environment: environment.clone(),
                reserved: candidate.needs,
                used_up,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole plan, all heads at once: what the dispatcher's queue-by-queue, page-by-page
    /// planning must equal. `used` holds what each environment's STARTING and RUNNING attempts hold; it is updated with what
    /// the plan reserves. `heads` holds each queue's runnable jobs in submission order.
    fn plan_placements(
        queues: &[JobQueue],
        environments: &HashMap<EnvironmentName, ComputeEnvironment>,
        used: &mut HashMap<EnvironmentName, Resources>,
        heads: &HashMap<QueueName, Vec<Candidate>>,
    ) -> Vec<Placement> {
        let mut plan = Vec::new();
        for queue in queue_order(queues) {
            let head = heads.get(&queue.name).map_or(&[][..], Vec::as_slice);
            plan.extend(plan_queue(
                queue,
                environments,
                used,
                head,
                usize::MAX,
                &mut Bounds::none(),
            ));
        }
        plan
    }
    use crate::model::Backend;

    fn env(name: &str, vcpus: u64, state: ResourceState) -> ComputeEnvironment {
        ComputeEnvironment {
            name: EnvironmentName::try_from(name.to_string()).unwrap(),
            backend: Backend::Process,
            state,
            capacity: Resources {
                vcpu_millis: vcpus * 1000,
                memory_mib: 1024,
                gpus: 0,
            },
        }
    }

    fn queue(name: &str, priority: i64, envs: &[&str]) -> JobQueue {
        JobQueue {
            name: QueueName::try_from(name.to_string()).unwrap(),
            priority,
            state: ResourceState::Enabled,
            compute_environments: envs
                .iter()
                .map(|e| EnvironmentName::try_from(e.to_string()).unwrap())
                .collect(),
            runnable_time_limits: vec![],
            fair_share: None,
            job_retention: Default::default(),
            held: false,
            drain: false,
            max_running_jobs: None,
        }
    }

    fn job(id: &str, vcpus: u64) -> Candidate {
        Candidate {
            limits: LimitKeys::default(),
            consumes: Vec::new(),
            job_id: JobId(id.into()),
            needs: Resources {
                vcpu_millis: vcpus * 1000,
                memory_mib: 64,
                gpus: 0,
            },
        }
    }

    /// Runs one plan and returns "job@environment" for each placement, in plan order.
    fn check(
        queues: &[JobQueue],
        envs: &[ComputeEnvironment],
        heads: &[(&str, Vec<Candidate>)],
    ) -> Vec<String> {
        let environments = envs.iter().map(|e| (e.name.clone(), e.clone())).collect();
        let heads = heads
            .iter()
            .map(|(q, jobs)| (QueueName::try_from(q.to_string()).unwrap(), jobs.clone()))
            .collect();
        plan_placements(queues, &environments, &mut HashMap::new(), &heads)
            .into_iter()
            .map(|p| format!("{}@{}", p.job_id, p.environment))
            .collect()
    }

    #[test]
    fn fifo_within_a_queue_until_capacity_runs_out() {
        let placed = check(
            &[queue("q", 1, &["a"])],
            &[env("a", 2, ResourceState::Enabled)],
            &[("q", vec![job("1", 1), job("2", 1), job("3", 1)])],
        );
        assert_eq!(placed, ["1@a", "2@a"]);
    }

    #[test]
    fn planning_queue_by_queue_and_page_by_page_gives_the_whole_plan() {
        let queues = [
            queue("low", 1, &["a", "b"]),
            queue("high", 9, &["a"]),
            queue("mid", 5, &["b"]),
        ];
        let envs = [
            env("a", 5, ResourceState::Enabled),
            env("b", 3, ResourceState::Enabled),
        ];
        let sizes = [2, 3, 1, 1, 2, 1, 1];
        let head = |prefix: &str| -> Vec<Candidate> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, size)| job(&format!("{prefix}{i}"), *size))
                .collect()
        };
        let heads: HashMap<QueueName, Vec<Candidate>> = ["low", "high", "mid"]
            .iter()
            .map(|q| (QueueName::try_from(q.to_string()).unwrap(), head(q)))
            .collect();
        let environments: HashMap<_, _> =
            envs.iter().map(|e| (e.name.clone(), e.clone())).collect();
        let whole = plan_placements(&queues, &environments, &mut HashMap::new(), &heads);
        for page in 1..=sizes.len() {
            let mut used = HashMap::new();
            let mut paged = Vec::new();
            for queue in queue_order(&queues) {
                for chunk in heads[&queue.name].chunks(page) {
                    paged.extend(plan_queue(
                        queue,
                        &environments,
                        &mut used,
                        chunk,
                        usize::MAX,
                        &mut Bounds::none(),
                    ));
                }
            }
            assert_eq!(paged, whole, "pages of {page}");
        }
        assert_eq!(whole.len(), 4, "{whole:?}");
    }

    /// A queue's head is read only while one of its environments could take a job: never for
    /// a DISABLED environment, however empty (a disabled queue's backlog would be read each pass).
    #[test]
    fn room_needs_an_enabled_environment_with_vcpu_and_memory_free() {
        let environments: HashMap<_, _> = [
            env("off", 4, ResourceState::Disabled),
            env("on", 2, ResourceState::Enabled),
        ]
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
        let mut used = HashMap::new();
        assert!(!has_room(&queue("q", 1, &["off"]), &environments, &used));
        assert!(has_room(
            &queue("q", 1, &["off", "on"]),
            &environments,
            &used
        ));
        used.insert(
            EnvironmentName::try_from("on".to_string()).unwrap(),
            Resources {
                vcpu_millis: 2000,
                memory_mib: 64,
                gpus: 0,
            },
        );
        assert!(!has_room(
            &queue("q", 1, &["off", "on"]),
            &environments,
            &used
        ));
    }

    #[test]
    fn higher_priority_queues_are_served_first() {
        let placed = check(
            &[queue("low", 1, &["a"]), queue("high", 9, &["a"])],
            &[env("a", 1, ResourceState::Enabled)],
            &[("low", vec![job("l", 1)]), ("high", vec![job("h", 1)])],
        );
        assert_eq!(placed, ["h@a"]);
    }

    #[test]
    fn a_held_queue_places_nothing_and_leaves_room_to_others() {
        let mut held = queue("high", 9, &["a"]);
        held.held = true;
        let placed = check(
            &[queue("low", 1, &["a"]), held],
            &[env("a", 1, ResourceState::Enabled)],
            &[("low", vec![job("l", 1)]), ("high", vec![job("h", 1)])],
        );
        assert_eq!(placed, ["l@a"]);
    }

    #[test]
    fn first_environment_with_room_wins_and_disabled_ones_get_nothing() {
        let placed = check(
            &[queue("q", 1, &["off", "small", "big"])],
            &[
                env("off", 8, ResourceState::Disabled),
                env("small", 1, ResourceState::Enabled),
                env("big", 4, ResourceState::Enabled),
            ],
            &[("q", vec![job("1", 1), job("2", 1), job("3", 4)])],
        );
        assert_eq!(placed, ["1@small", "2@big"]);
    }

    #[test]
    fn a_job_that_does_not_fit_is_passed_over_for_smaller_ones() {
        let placed = check(
            &[queue("q", 1, &["a"])],
            &[env("a", 2, ResourceState::Enabled)],
            &[("q", vec![job("big", 3), job("small", 1)])],
        );
        assert_eq!(placed, ["small@a"]);
    }

    #[test]
    fn disabled_queues_still_run_their_jobs_and_unknown_environments_are_skipped() {
        let mut disabled = queue("q", 1, &["a"]);
        disabled.state = ResourceState::Disabled;
        let placed = check(
            &[disabled, queue("r", 1, &["missing", "a"])],
            &[env("a", 2, ResourceState::Enabled)],
            &[("q", vec![job("1", 1)]), ("r", vec![job("2", 1)])],
        );
        assert_eq!(placed, ["1@a", "2@a"]);
    }

    #[test]
    fn gpus_are_accounted_like_vcpus() {
        let mut gpu_env = env("g", 8, ResourceState::Enabled);
        gpu_env.capacity.gpus = 1;
        let gpu_job = |id: &str| Candidate {
            limits: LimitKeys::default(),
            consumes: Vec::new(),
            job_id: JobId(id.into()),
            needs: Resources {
                vcpu_millis: 1000,
                memory_mib: 64,
                gpus: 1,
            },
        };
        let placed = check(
            &[queue("q", 1, &["g"])],
            &[gpu_env],
            &[("q", vec![gpu_job("1"), gpu_job("2"), job("cpu", 1)])],
        );
        assert_eq!(placed, ["1@g", "cpu@g"]);
    }

    #[test]
    fn capacity_already_in_use_counts() {
        let environments: HashMap<_, _> = [env("a", 2, ResourceState::Enabled)]
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let mut used = HashMap::from([(
            EnvironmentName::try_from("a".to_string()).unwrap(),
            Resources {
                vcpu_millis: 1500,
                memory_mib: 0,
                gpus: 0,
            },
        )]);
        let heads = HashMap::from([(
            QueueName::try_from("q".to_string()).unwrap(),
            vec![job("1", 1)],
        )]);
        let plan = plan_placements(&[queue("q", 1, &["a"])], &environments, &mut used, &heads);
        assert!(plan.is_empty());
    }

    /// `maxRunningJobs` caps what a queue places: the slots left after what runs, and never
    /// more in a plan than those, whatever room the environments have.
    #[test]
    fn a_queue_cap_bounds_what_it_places() {
        let environments: HashMap<_, _> = [env("a", 8, ResourceState::Enabled)]
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let capped = JobQueue {
            max_running_jobs: Some(3),
            ..queue("q", 1, &["a"])
        };
        assert_eq!(queue_slots(&capped, 0), 3);
        assert_eq!(queue_slots(&capped, 2), 1);
        assert_eq!(queue_slots(&capped, 5), 0);
        assert_eq!(queue_slots(&queue("q", 1, &["a"]), 1_000), usize::MAX);
        let head: Vec<Candidate> = (0..6).map(|i| job(&format!("j{i}"), 1)).collect();
        let plan = plan_queue(
            &capped,
            &environments,
            &mut HashMap::new(),
            &head,
            queue_slots(&capped, 1),
            &mut Bounds::none(),
        );
        let placed: Vec<&str> = plan.iter().map(|p| p.job_id.0.as_str()).collect();
        assert_eq!(placed, ["j0", "j1"], "two slots left of three, in order");
    }

    /// A job a concurrency limit holds, or whose consumable resources are short, is passed over,
    /// the jobs behind it placed, and each placement counts for the rest of the head.
    #[test]
    fn jobs_over_a_limit_or_short_of_a_consumable_are_passed_over() {
        use crate::concurrency::{ConcurrencyLimit, LimitKey, LimitSubject};
        let environments: HashMap<_, _> = [env("a", 8, ResourceState::Enabled)]
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let q = queue("q", 1, &["a"]);
        let limits = [ConcurrencyLimit {
            name: "per-customer".into(),
            key: LimitKey::Parameter {
                name: "customer".into(),
            },
            max: 2,
            job_queues: vec![],
        }];
        let subject = |customer: &str| LimitSubject {
            queue: q.name.clone(),
            definition: "d".into(),
            share: None,
            parameters: [("customer".to_string(), customer.to_string())].into(),
            tags: Default::default(),
        };
        let book = LimitBook::new(&limits, &[subject("acme")]);
        let head: Vec<Candidate> = [
            ("a1", "acme"),
            ("a2", "acme"),
            ("g1", "globex"),
            ("a3", "acme"),
        ]
        .iter()
        .map(|(id, customer)| Candidate {
            limits: book.keys_of(&subject(customer)),
            ..job(id, 1)
        })
        .collect();
        // Seats: a consumable resource of 2, used up as placed.
        let seats = |quantity| {
            vec![ConsumableRequest {
                consumable_resource: "seats".into(),
                quantity,
            }]
        };
        let stock = [crate::consumable::ConsumableStock {
            resource: crate::consumable::ConsumableResource {
                name: "seats".into(),
                total_quantity: 2,
                resource_type: crate::consumable::ConsumableType::NonReplenishable,
            },
            consumed: 0,
        }];
        let mut head = head;
        for (id, quantity) in [("s1", 3), ("s2", 2), ("s3", 1)] {
            head.push(Candidate {
                consumes: seats(quantity),
                ..job(id, 1)
            });
        }
        let mut bounds = Bounds {
            limits: book,
            consumables: ConsumableBook::new(&stock, []),
        };
        let plan = plan_queue(
            &q,
            &environments,
            &mut HashMap::new(),
            &head,
            usize::MAX,
            &mut bounds,
        );
        let placed: Vec<&str> = plan.iter().map(|p| p.job_id.0.as_str()).collect();
        assert_eq!(
            placed,
            ["a1", "g1", "s2"],
            "acme had one running of two; s1 asks more seats than exist, s3 finds none left"
        );
        assert_eq!(
            plan[2].used_up,
            seats(2),
            "used up, to be recorded with the placement"
        );
    }
}
