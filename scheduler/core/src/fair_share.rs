//! Fair share, as AWS Batch's fair-share scheduling policy: each share's usage is the vCPU-seconds
//! its jobs used, decayed with a half-life of `shareDecaySeconds`; the next job comes from the
//! share with the least usage times its `weightFactor`, so a share of weight 1 gets twice the
//! vCPU-seconds of a busy share of weight 2. `computeReservation` keeps part of the queue's vCPUs
//! for shares that are not active yet. Pure: the dispatcher keeps the ledger and asks for an order.

use std::collections::{BTreeMap, HashMap};

use super::model::{FairSharePolicy, JobId, Resources};

/// A share's weight when no `shareDistribution` entry names it, as AWS Batch.
pub const DEFAULT_WEIGHT: f64 = 1.0;
/// The duration assumed for a share's next job until one of its jobs has finished.
const DEFAULT_EXPECTED_SECONDS: f64 = 1.0;

/// What the shares of one queue have used, decayed to `as_of`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShareLedger {
    /// Finished vCPU-seconds per share, decayed to `as_of`.
    pub used: BTreeMap<String, f64>,
    /// Mean duration of each share's finished attempts in seconds: what placing one more of its
    /// jobs is expected to cost.
    pub mean_seconds: BTreeMap<String, (f64, u64)>,
    pub as_of: i64,
}

impl ShareLedger {
    /// Records a finished attempt of `share` that held `vcpus` for `seconds`, ending at `now`.
    pub fn record(
        &mut self,
        policy: &FairSharePolicy,
        share: &str,
        vcpus: f64,
        seconds: f64,
        now: i64,
    ) {
        self.decay_to(policy, now);
        *self.used.entry(share.to_string()).or_insert(0.0) += vcpus * seconds;
        let (mean, count) = self
            .mean_seconds
            .entry(share.to_string())
            .or_insert((0.0, 0));
        *count += 1;
        *mean += (seconds - *mean) / *count as f64;
    }

    /// Halves usage every `shareDecaySeconds`; with 0, only what runs now counts.
    pub fn decay_to(&mut self, policy: &FairSharePolicy, now: i64) {
        let elapsed_seconds = (now - self.as_of).max(0) as f64 / 1000.0;
        let factor = match policy.share_decay_seconds {
            0 => 0.0,
            half_life => 0.5f64.powf(elapsed_seconds / half_life as f64),
        };
        for usage in self.used.values_mut() {
            *usage *= factor;
        }
        self.as_of = now;
    }

    fn expected_seconds(&self, share: &str) -> f64 {
        self.mean_seconds
            .get(share)
            .map_or(DEFAULT_EXPECTED_SECONDS, |(mean, _)| mean.max(0.001))
    }
}

/// A RUNNABLE job of a fair-share queue.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareCandidate {
    pub job_id: JobId,
    pub needs: Resources,
    pub share: String,
    /// Higher runs first within its share (`schedulingPriority`).
    pub priority: i64,
}

/// A STARTING or RUNNING job of the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningShareJob {
    pub share: String,
    pub vcpu_millis: u64,
    /// How long it has run so far, in seconds.
    pub seconds: f64,
}

/// Where one share stands, for `batchctl why`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareStanding {
    pub share: String,
    pub weight_factor: f64,
    /// Decayed vCPU-seconds, with what its running jobs used so far.
    pub usage_vcpu_seconds: f64,
}

/// The weight of a share: the first `shareDistribution` entry that names it exactly, else the
/// longest `prefix*` entry that matches, else `DEFAULT_WEIGHT`.
pub fn weight_of(policy: &FairSharePolicy, share: &str) -> f64 {
    if let Some(exact) = policy
        .share_distribution
        .iter()
        .find(|entry| entry.share_identifier == share)
    {
        return exact.weight_factor;
    }
    policy
        .share_distribution
        .iter()
        .filter_map(|entry| {
            let prefix = entry.share_identifier.strip_suffix('*')?;
            share
                .starts_with(prefix)
                .then_some((prefix.len(), entry.weight_factor))
        })
        .max_by_key(|(length, _)| *length)
        .map_or(DEFAULT_WEIGHT, |(_, weight)| weight)
}

/// Each share's usage now: its decayed finished usage plus what its running jobs used so far.
pub fn standings(
    policy: &FairSharePolicy,
    ledger: &ShareLedger,
    running: &[RunningShareJob],
) -> Vec<ShareStanding> {
    let mut usage: BTreeMap<&str, f64> = ledger
        .used
        .iter()
        .map(|(share, used)| (share.as_str(), *used))
        .collect();
    for job in running {
        *usage.entry(job.share.as_str()).or_insert(0.0) +=
            job.vcpu_millis as f64 / 1000.0 * job.seconds;
    }
    usage
        .into_iter()
        .map(|(share, usage_vcpu_seconds)| ShareStanding {
            share: share.to_string(),
            weight_factor: weight_of(policy, share),
            usage_vcpu_seconds,
        })
        .collect()
}

/// The order in which to try a fair-share queue's RUNNABLE jobs, and how many vCPUs (in
/// thousandths) the queue may newly place in all, after `computeReservation`.
///
/// Shares take turns by least weighted usage; each job taken charges its share what it is expected
/// to use (its vCPUs times the mean duration of the share's finished jobs), so one pass does not
/// hand every free slot to the share that was behind. Within a share, higher `priority` first, then
/// the order given (submission order).
pub fn fair_share_order(
    policy: &FairSharePolicy,
    ledger: &ShareLedger,
    running: &[RunningShareJob],
    candidates: Vec<ShareCandidate>,
    queue_capacity_vcpu_millis: u64,
) -> (Vec<ShareCandidate>, u64) {
    let mut usage: HashMap<String, f64> = standings(policy, ledger, running)
        .into_iter()
        .map(|standing| (standing.share, standing.usage_vcpu_seconds))
        .collect();
    let mut by_share: BTreeMap<String, Vec<ShareCandidate>> = BTreeMap::new();
    for candidate in candidates {
        by_share
            .entry(candidate.share.clone())
            .or_default()
            .push(candidate);
    }
    for jobs in by_share.values_mut() {
        // Stable: equal priorities keep submission order.
        jobs.sort_by_key(|job| std::cmp::Reverse(job.priority));
        jobs.reverse();
    }
    let active_shares: std::collections::BTreeSet<&str> = running
        .iter()
        .map(|job| job.share.as_str())
        .chain(by_share.keys().map(String::as_str))
        .collect();
    let reserved_fraction =
        (policy.compute_reservation as f64 / 100.0).powi(active_shares.len() as i32);
    let running_vcpu_millis: u64 = running.iter().map(|job| job.vcpu_millis).sum();
    let allowed = (queue_capacity_vcpu_millis as f64 * (1.0 - reserved_fraction)) as u64;
    let budget = allowed.saturating_sub(running_vcpu_millis);

    let mut order = Vec::new();
    loop {
        let next = by_share
            .iter()
            .filter(|(_, jobs)| !jobs.is_empty())
            .map(|(share, _)| {
                let weighted = weight_of(policy, share) * usage.get(share).copied().unwrap_or(0.0);
                (share.clone(), weighted)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let Some((share, _)) = next else {
            break;
        };
        let job = by_share
            .get_mut(&share)
            .and_then(Vec::pop)
            .expect("a share with jobs");
        *usage.entry(share.clone()).or_insert(0.0) +=
            job.needs.vcpu_millis as f64 / 1000.0 * ledger.expected_seconds(&share);
        order.push(job);
    }
    (order, budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ShareWeight;

    fn policy(weights: &[(&str, f64)], decay: u64, reservation: u32) -> FairSharePolicy {
        FairSharePolicy {
            share_decay_seconds: decay,
            compute_reservation: reservation,
            share_distribution: weights
                .iter()
                .map(|(share, weight)| ShareWeight {
                    share_identifier: share.to_string(),
                    weight_factor: *weight,
                })
                .collect(),
        }
    }

    fn candidate(id: &str, share: &str, priority: i64) -> ShareCandidate {
        ShareCandidate {
            job_id: JobId(id.into()),
            needs: Resources {
                vcpu_millis: 1000,
                memory_mib: 1,
                gpus: 0,
            },
            share: share.into(),
            priority,
        }
    }

    fn ids(order: &[ShareCandidate]) -> Vec<&str> {
        order.iter().map(|c| c.job_id.0.as_str()).collect()
    }

    #[test]
    fn weights_match_exactly_then_by_longest_prefix() {
        let policy = policy(&[("team*", 3.0), ("team-a*", 2.0), ("team-ab", 0.5)], 0, 0);
        let cases = [
            ("team-ab", 0.5),
            ("team-abc", 2.0),
            ("team-b", 3.0),
            ("other", DEFAULT_WEIGHT),
        ];
        for (share, weight) in cases {
            assert_eq!(weight_of(&policy, share), weight, "{share}");
        }
    }

    #[test]
    fn usage_halves_every_decay_period_and_zero_keeps_none() {
        let halving = policy(&[], 10, 0);
        let mut ledger = ShareLedger::default();
        ledger.record(&halving, "a", 2.0, 50.0, 0);
        ledger.decay_to(&halving, 10_000);
        assert!((ledger.used["a"] - 50.0).abs() < 1e-9);
        ledger.decay_to(&halving, 30_000);
        assert!((ledger.used["a"] - 12.5).abs() < 1e-9);
        let instant = policy(&[], 0, 0);
        ledger.decay_to(&instant, 30_001);
        assert_eq!(ledger.used["a"], 0.0);
    }

    #[test]
    fn the_lighter_weighted_share_gets_two_turns_for_one() {
        // Equal history; weight 1 vs 2: after each job of b, a takes two.
        let policy = policy(&[("a", 1.0), ("b", 2.0)], 3600, 0);
        let candidates: Vec<_> = (0..6)
            .map(|i| candidate(&format!("a{i}"), "a", 0))
            .chain((0..6).map(|i| candidate(&format!("b{i}"), "b", 0)))
            .collect();
        let (order, _) =
            fair_share_order(&policy, &ShareLedger::default(), &[], candidates, 100_000);
        assert_eq!(
            &ids(&order)[..9],
            ["a0", "b0", "a1", "a2", "b1", "a3", "a4", "b2", "a5"]
        );
    }

    #[test]
    fn a_share_behind_in_usage_goes_first_and_priority_orders_within_a_share() {
        let policy = policy(&[], 3600, 0);
        let mut ledger = ShareLedger::default();
        ledger.record(&policy, "heavy", 1.0, 100.0, 0);
        let candidates = vec![
            candidate("h0", "heavy", 0),
            candidate("l-low", "light", 1),
            candidate("l-high", "light", 9),
            candidate("l-low2", "light", 1),
        ];
        let (order, _) = fair_share_order(&policy, &ledger, &[], candidates, 100_000);
        assert_eq!(ids(&order), ["l-high", "l-low", "l-low2", "h0"]);
        // What runs now counts as usage too.
        let running = vec![RunningShareJob {
            share: "light".into(),
            vcpu_millis: 4000,
            seconds: 50.0,
        }];
        let candidates = vec![candidate("h0", "heavy", 0), candidate("l0", "light", 0)];
        let (order, _) = fair_share_order(&policy, &ledger, &running, candidates, 100_000);
        assert_eq!(ids(&order), ["h0", "l0"]);
    }

    #[test]
    fn compute_reservation_keeps_vcpus_for_shares_not_yet_active() {
        // 50% reservation with one active share keeps half of 8 vCPUs back; with two, a quarter.
        let policy = policy(&[], 3600, 50);
        let one = vec![candidate("a0", "a", 0)];
        assert_eq!(
            fair_share_order(&policy, &ShareLedger::default(), &[], one, 8000).1,
            4000
        );
        let running = vec![RunningShareJob {
            share: "b".into(),
            vcpu_millis: 1000,
            seconds: 1.0,
        }];
        let two = vec![candidate("a0", "a", 0)];
        assert_eq!(
            fair_share_order(&policy, &ShareLedger::default(), &running, two, 8000).1,
            6000 - 1000
        );
    }
}
