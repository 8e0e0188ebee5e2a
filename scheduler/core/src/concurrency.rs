//! Keyed concurrency limits (`kind: ConcurrencyLimit`): at most `max` jobs with the same value of a
//! key — a parameter, the job definition, the share identifier — STARTING or RUNNING at once across
//! the limit's queues. "At most 3 jobs per customer" is `{key: "Ref::customer", max: 3}`.
//!
//! Limits are data: placement reads them with the queues at each pass, so a new `max` holds from
//! the next pass. They are counted from the attempts the leader holds (every STARTING and RUNNING
//! attempt, adopted again after a restart), like a queue's `maxRunningJobs`: a restart never
//! forgets what runs, and two leaders cannot both place (their writes are fenced by the lease).
//! A job over a limit stays RUNNABLE in its place; `why` names the limit, the key's value and the
//! jobs holding it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::{Job, JobId, QueueName};

/// A validated `kind: ConcurrencyLimit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyLimit {
    pub name: String,
    pub key: LimitKey,
    /// 0 holds every job with a value of the key until it is raised.
    pub max: u32,
    /// The queues whose jobs it counts and holds; every queue when empty.
    pub job_queues: Vec<QueueName>,
}

/// What a limit groups jobs by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum LimitKey {
    /// `Ref::NAME`: the job's parameter NAME (after the submit's overrides); a job without it is
    /// not limited.
    Parameter { name: String },
    /// `jobDefinition`: the definition's name.
    JobDefinition,
    /// `shareIdentifier`: the fair-share identifier; a job without one is not limited.
    ShareIdentifier,
    /// `tag:NAME`: the job's tag NAME; a job without it is not limited.
    Tag { name: String },
}

/// The largest `max` a limit may have.
pub const MAX_LIMIT: u32 = 1_000_000;

impl LimitKey {
    /// Reads a key as written in a manifest.
    pub fn parse(text: &str) -> Result<LimitKey, String> {
        match text {
            "jobDefinition" => Ok(LimitKey::JobDefinition),
            "shareIdentifier" => Ok(LimitKey::ShareIdentifier),
            _ => {
                let named = |prefix: &str| {
                    text.strip_prefix(prefix).filter(|name| {
                        !name.is_empty()
                            && name.len() <= 128
                            && name
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
                    })
                };
                match (named("Ref::"), named("tag:")) {
                    (Some(name), _) => Ok(LimitKey::Parameter {
                        name: name.to_string(),
                    }),
                    (None, Some(name)) => Ok(LimitKey::Tag {
                        name: name.to_string(),
                    }),
                    (None, None) => Err(format!(
                        "{text:?} is not a key; use Ref::PARAMETER (a job parameter), tag:NAME (a job tag), jobDefinition or shareIdentifier"
                    )),
                }
            }
        }
    }

    /// The key as a manifest writes it.
    pub fn text(&self) -> String {
        match self {
            LimitKey::Parameter { name } => format!("Ref::{name}"),
            LimitKey::JobDefinition => "jobDefinition".into(),
            LimitKey::ShareIdentifier => "shareIdentifier".into(),
            LimitKey::Tag { name } => format!("tag:{name}"),
        }
    }

    fn value_of(&self, subject: &LimitSubject) -> Option<String> {
        match self {
            LimitKey::Parameter { name } => subject.parameters.get(name).cloned(),
            LimitKey::JobDefinition => Some(subject.definition.clone()),
            LimitKey::ShareIdentifier => subject.share.clone(),
            LimitKey::Tag { name } => subject.tags.get(name).cloned(),
        }
    }
}

impl ConcurrencyLimit {
    fn applies_to(&self, queue: &QueueName) -> bool {
        self.job_queues.is_empty() || self.job_queues.contains(queue)
    }
}

/// What limits look at in a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSubject {
    pub queue: QueueName,
    pub definition: String,
    pub share: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl LimitSubject {
    pub fn of(job: &Job) -> LimitSubject {
        LimitSubject {
            queue: job.queue.clone(),
            definition: job.spec.definition.to_string(),
            share: job.spec.share_identifier.clone(),
            parameters: job.spec.parameters.clone(),
            tags: job.spec.tags.clone(),
        }
    }
}

/// Which (limit, value) pairs a job counts against: indexes into the book's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitKeys(Vec<(usize, String)>);

/// A limit that holds a job back now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<'a> {
    pub limit: &'a ConcurrencyLimit,
    pub value: String,
    pub running: u32,
}

/// How many jobs run per (limit, value), kept while a pass places jobs.
#[derive(Debug, Clone)]
pub struct LimitBook<'a> {
    limits: &'a [ConcurrencyLimit],
    running: HashMap<(usize, String), u32>,
}

impl<'a> LimitBook<'a> {
    /// The book of `limits` with `running` (the subjects of the STARTING and RUNNING jobs)
    /// counted.
    pub fn new<'s>(
        limits: &'a [ConcurrencyLimit],
        running: impl IntoIterator<Item = &'s LimitSubject>,
    ) -> LimitBook<'a> {
        let mut book = LimitBook {
            limits,
            running: HashMap::new(),
        };
        if !limits.is_empty() {
            for subject in running {
                let keys = book.keys_of(subject);
                book.take(&keys);
            }
        }
        book
    }

    /// Whether any limit exists (a pass without limits skips the work of keying its jobs).
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    pub fn keys_of(&self, subject: &LimitSubject) -> LimitKeys {
        LimitKeys(
            self.limits
                .iter()
                .enumerate()
                .filter(|(_, limit)| limit.applies_to(&subject.queue))
                .filter_map(|(index, limit)| Some((index, limit.key.value_of(subject)?)))
                .collect(),
        )
    }

    /// The first limit a job with `keys` would go over, if any.
    pub fn held(&self, keys: &LimitKeys) -> Option<Held<'a>> {
        keys.0.iter().find_map(|(index, value)| {
            let limit = &self.limits[*index];
            let running = self
                .running
                .get(&(*index, value.clone()))
                .copied()
                .unwrap_or(0);
            (running >= limit.max).then(|| Held {
                limit,
                value: value.clone(),
                running,
            })
        })
    }

    /// Counts a job with `keys` as started.
    pub fn take(&mut self, keys: &LimitKeys) {
        for key in &keys.0 {
            *self.running.entry(key.clone()).or_default() += 1;
        }
    }
}

/// The running jobs holding the limit `held` names: those whose key has its value, among
/// `running` (job ids with their subjects), at most `most` of them.
pub fn holders(held: &Held<'_>, running: &[(JobId, LimitSubject)], most: usize) -> Vec<JobId> {
    running
        .iter()
        .filter(|(_, subject)| {
            held.limit.applies_to(&subject.queue)
                && held.limit.key.value_of(subject).as_deref() == Some(held.value.as_str())
        })
        .map(|(job_id, _)| job_id.clone())
        .take(most)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str) -> QueueName {
        QueueName::try_from(name.to_string()).unwrap()
    }

    fn subject(queue_name: &str, customer: Option<&str>) -> LimitSubject {
        LimitSubject {
            queue: queue(queue_name),
            definition: "d".into(),
            share: None,
            parameters: customer
                .map(|customer| BTreeMap::from([("customer".to_string(), customer.to_string())]))
                .unwrap_or_default(),
            tags: BTreeMap::from([("team".to_string(), queue_name.to_string())]),
        }
    }

    fn per_customer(max: u32, queues: &[&str]) -> ConcurrencyLimit {
        ConcurrencyLimit {
            name: "per-customer".into(),
            key: LimitKey::parse("Ref::customer").unwrap(),
            max,
            job_queues: queues.iter().map(|name| queue(name)).collect(),
        }
    }

    #[test]
    fn a_key_value_runs_at_most_max_jobs_across_the_limits_queues() {
        let limits = [per_customer(2, &["q1", "q2"])];
        let running = [subject("q1", Some("acme")), subject("q2", Some("acme"))];
        let mut book = LimitBook::new(&limits, &running);
        let acme = book.keys_of(&subject("q1", Some("acme")));
        let held = book.held(&acme).expect("acme has two running");
        assert_eq!(
            (held.limit.name.as_str(), held.value.as_str(), held.running),
            ("per-customer", "acme", 2)
        );
        let other = book.keys_of(&subject("q1", Some("globex")));
        assert_eq!(book.held(&other), None);
        book.take(&other);
        book.take(&other);
        assert!(
            book.held(&other).is_some(),
            "globex reached its max within the pass"
        );
        // A job of another queue, or without the parameter, is not limited.
        assert_eq!(book.held(&book.keys_of(&subject("q3", Some("acme")))), None);
        assert_eq!(book.held(&book.keys_of(&subject("q1", None))), None);
        let holding = holders(
            &held,
            &[
                (JobId("a".into()), subject("q1", Some("acme"))),
                (JobId("b".into()), subject("q1", Some("globex"))),
                (JobId("c".into()), subject("q2", Some("acme"))),
            ],
            10,
        );
        assert_eq!(holding, [JobId("a".into()), JobId("c".into())]);
    }

    #[test]
    fn keys_are_read_as_written_and_refused_with_the_forms_allowed() {
        for text in [
            "Ref::customer",
            "jobDefinition",
            "shareIdentifier",
            "tag:team",
        ] {
            assert_eq!(LimitKey::parse(text).unwrap().text(), text);
        }
        for text in ["customer", "Ref::", "Ref::a b", "tag:", "team"] {
            assert!(LimitKey::parse(text).unwrap_err().contains(
                "use Ref::PARAMETER (a job parameter), tag:NAME (a job tag), jobDefinition or shareIdentifier"
            ));
        }
        // A tag key counts jobs by the tag's value (here each test subject's queue name).
        let by_team = [ConcurrencyLimit {
            name: "per-team".into(),
            key: LimitKey::parse("tag:team").unwrap(),
            max: 1,
            job_queues: vec![],
        }];
        let book = LimitBook::new(&by_team, &[subject("q1", None)]);
        assert!(book.held(&book.keys_of(&subject("q1", None))).is_some());
        assert_eq!(book.held(&book.keys_of(&subject("q2", None))), None);
        let limits = [ConcurrencyLimit {
            name: "one-at-a-time".into(),
            key: LimitKey::JobDefinition,
            max: 0,
            job_queues: vec![],
        }];
        let book = LimitBook::new(&limits, &[]);
        assert!(
            book.held(&book.keys_of(&subject("any", None))).is_some(),
            "max 0 holds every job"
        );
    }
}
