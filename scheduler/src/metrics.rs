//! What `/metrics` exposes, through `prometheus-client` (OpenMetrics text). Two kinds:
//! - kept as things happen on this server (its dispatcher, schedule and rule runners, notifier):
//!   queue wait and run time histograms per queue, attempts ended by queue and outcome, dispatch
//!   pass duration, executor errors per environment, schedule lateness, rule deliveries,
//!   notification retries and dead letters. On a follower they stay at zero: the leader does the
//!   work, so sum them over servers;
//! - read at each scrape from what the database already keeps up to date (jobs per queue and
//!   status, from the counters its triggers maintain; the lease), so every server reports the
//!   same and a scrape costs the same with a million jobs as with none.
//!
//! Names follow Kueue's: `batchctl_` then the thing, units last, counters end in `_total`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::core::retry::EndClass;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueStatusLabels {
    pub queue: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueOutcomeLabels {
    pub queue: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabels {
    pub environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleOutcomeLabels {
    pub rule: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub notification: String,
}

/// Every series `/metrics` can show, as a query names it (histograms by their `_bucket`, `_sum`
/// and `_count`, counters by `_total`). The dashboard in `charts/` may use only these.
pub const SERIES: &[&str] = &[
    "batchctl_jobs",
    "batchctl_queue_jobs",
    "batchctl_queue_wait_seconds_bucket",
    "batchctl_queue_wait_seconds_sum",
    "batchctl_queue_wait_seconds_count",
    "batchctl_job_run_seconds_bucket",
    "batchctl_job_run_seconds_sum",
    "batchctl_job_run_seconds_count",
    "batchctl_attempts_ended_total",
    "batchctl_dispatch_pass_seconds_bucket",
    "batchctl_dispatch_pass_seconds_sum",
    "batchctl_dispatch_pass_seconds_count",
    "batchctl_executor_errors_total",
    "batchctl_schedule_lateness_seconds_bucket",
    "batchctl_schedule_lateness_seconds_sum",
    "batchctl_schedule_lateness_seconds_count",
    "batchctl_rule_deliveries_total",
    "batchctl_notification_retries_total",
    "batchctl_notification_dead_letters_total",
    "batchctl_leader",
    "batchctl_leader_term",
    "batchctl_compute_environment_up",
];

/// Seconds from 10 ms to about 2.3 days, doubling: batch waits and runs span that.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 25))
}

/// Seconds from 1 ms to about 16 s, doubling: a dispatch pass.
fn pass_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The server's metrics; one per server, shared by what reports to it.
pub struct Metrics {
    registry: Registry,
    queue_wait: Family<QueueLabels, Histogram>,
    run_time: Family<QueueLabels, Histogram>,
    attempts_ended: Family<QueueOutcomeLabels, Counter>,
    dispatch_pass: Histogram,
    executor_errors: Family<EnvironmentLabels, Counter>,
    schedule_lateness: Family<ScheduleLabels, Histogram>,
    rule_deliveries: Family<RuleOutcomeLabels, Counter>,
    notification_retries: Family<NotificationLabels, Counter>,
    dead_letters: Family<NotificationLabels, Counter>,
    // Set from the database at each scrape.
    jobs: Family<StatusLabels, Gauge>,
    queue_jobs: Family<QueueStatusLabels, Gauge>,
    leader: Gauge,
    leader_term: Gauge,
    environment_up: Family<EnvironmentLabels, Gauge>,
    /// One scrape at a time: each clears and sets the gauges read from the database.
    scrape: Mutex<()>,
}

/// What a scrape reads from the database and the server's state.
pub struct Snapshot {
    /// Jobs per queue and status (pairs with none left out).
    pub queue_jobs: Vec<(String, String, i64)>,
    pub leader: bool,
    /// The lease term (0 as a follower or on SQLite).
    pub term: i64,
    /// Each compute environment and whether its executor answered last time.
    pub environments: Vec<(String, bool)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let seconds = seconds_histogram as fn() -> Histogram;
        let metrics = Metrics {
            registry: Registry::default(),
            queue_wait: Family::new_with_constructor(seconds),
            run_time: Family::new_with_constructor(seconds),
            attempts_ended: Family::default(),
            dispatch_pass: pass_histogram(),
            executor_errors: Family::default(),
            schedule_lateness: Family::new_with_constructor(seconds),
            rule_deliveries: Family::default(),
            notification_retries: Family::default(),
            dead_letters: Family::default(),
            jobs: Family::default(),
            queue_jobs: Family::default(),
            leader: Gauge::default(),
            leader_term: Gauge::default(),
            environment_up: Family::default(),
            scrape: Mutex::new(()),
        };
        let mut registry = Registry::default();
        registry.register(
            "batchctl_jobs",
            "Jobs in each status, all queues",
            metrics.jobs.clone(),
        );
        registry.register(
            "batchctl_queue_jobs",
            "Jobs of each queue in each status (pairs without jobs left out)",
            metrics.queue_jobs.clone(),
        );
        registry.register(
            "batchctl_queue_wait_seconds",
            "Seconds from submit to the first attempt's start, per queue, observed at the start",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "batchctl_job_run_seconds",
            "Seconds an attempt ran, from its start to its end, per queue",
            metrics.run_time.clone(),
        );
        registry.register(
            "batchctl_attempts_ended",
            "Attempts ended, per queue and outcome (succeeded, failed, out_of_memory, start_failed, stopped, lost, timeout, terminated, drained)",
            metrics.attempts_ended.clone(),
        );
        registry.register(
            "batchctl_dispatch_pass_seconds",
            "Seconds one dispatcher pass took (admission, dependencies, placement)",
            metrics.dispatch_pass.clone(),
        );
        registry.register(
            "batchctl_executor_errors",
            "Times an environment's executor could not be reached to start an attempt",
            metrics.executor_errors.clone(),
        );
        registry.register(
            "batchctl_schedule_lateness_seconds",
            "Seconds between a schedule's tick and when it fired, per schedule",
            metrics.schedule_lateness.clone(),
        );
        registry.register(
            "batchctl_rule_deliveries",
            "Events an event rule delivered, per rule and outcome",
            metrics.rule_deliveries.clone(),
        );
        registry.register(
            "batchctl_notification_retries",
            "Notification deliveries that failed and will be tried again",
            metrics.notification_retries.clone(),
        );
        registry.register(
            "batchctl_notification_dead_letters",
            "Notification deliveries whose retries are spent (now dead letters)",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "batchctl_leader",
            "Whether this server leads (runs the dispatcher)",
            metrics.leader.clone(),
        );
        registry.register(
            "batchctl_leader_term",
            "The lease term this server leads in (0: follower or SQLite)",
            metrics.leader_term.clone(),
        );
        registry.register(
            "batchctl_compute_environment_up",
            "Whether the environment's executor answered last time",
            metrics.environment_up.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn observe_queue_wait(&self, queue: &str, seconds: f64) {
        self.queue_wait
            .get_or_create(&QueueLabels {
                queue: queue.into(),
            })
            .observe(seconds.max(0.0));
    }

    pub fn observe_attempt_end(&self, queue: &str, class: EndClass, ran_seconds: Option<f64>) {
        self.attempts_ended
            .get_or_create(&QueueOutcomeLabels {
                queue: queue.into(),
                outcome: class.as_str().into(),
            })
            .inc();
        if let Some(seconds) = ran_seconds {
            self.run_time
                .get_or_create(&QueueLabels {
                    queue: queue.into(),
                })
                .observe(seconds.max(0.0));
        }
    }

    pub fn observe_dispatch_pass(&self, seconds: f64) {
        self.dispatch_pass.observe(seconds);
    }

    pub fn count_executor_error(&self, environment: &str) {
        self.executor_errors
            .get_or_create(&EnvironmentLabels {
                environment: environment.into(),
            })
            .inc();
    }

    pub fn observe_schedule_lateness(&self, schedule: &str, seconds: f64) {
        self.schedule_lateness
            .get_or_create(&ScheduleLabels {
                schedule: schedule.into(),
            })
            .observe(seconds.max(0.0));
    }

    pub fn count_rule_delivery(&self, rule: &str, outcome: &str) {
        self.rule_deliveries
            .get_or_create(&RuleOutcomeLabels {
                rule: rule.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn count_notification_retry(&self, notification: &str) {
        self.notification_retries
            .get_or_create(&NotificationLabels {
                notification: notification.into(),
            })
            .inc();
    }

    pub fn count_dead_letter(&self, notification: &str) {
        self.dead_letters
            .get_or_create(&NotificationLabels {
                notification: notification.into(),
            })
            .inc();
    }

    /// The OpenMetrics text of a scrape, with the database's figures of `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.jobs.clear();
        self.queue_jobs.clear();
        self.environment_up.clear();
        for status in crate::core::model::JobStatus::ALL {
            self.jobs
                .get_or_create(&StatusLabels {
                    status: status.as_str().into(),
                })
                .set(0);
        }
        for (queue, status, n) in &snapshot.queue_jobs {
            self.jobs
                .get_or_create(&StatusLabels {
                    status: status.clone(),
                })
                .inc_by(*n);
            self.queue_jobs
                .get_or_create(&QueueStatusLabels {
                    queue: queue.clone(),
                    status: status.clone(),
                })
                .set(*n);
        }
        self.leader.set(i64::from(snapshot.leader));
        self.leader_term.set(snapshot.term);
        for (environment, up) in &snapshot.environments {
            self.environment_up
                .get_or_create(&EnvironmentLabels {
                    environment: environment.clone(),
                })
                .set(i64::from(*up));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_shows_what_was_observed_and_what_the_database_says() {
        let metrics = Metrics::new();
        metrics.observe_queue_wait("q", 0.5);
        metrics.observe_attempt_end("q", EndClass::Succeeded, Some(3.0));
        metrics.observe_attempt_end("q", EndClass::Timeout, None);
        metrics.count_rule_delivery("r", "submitted");
        let snapshot = Snapshot {
            queue_jobs: vec![
                ("q".into(), "SUCCEEDED".into(), 2),
                ("p".into(), "SUCCEEDED".into(), 3),
            ],
            leader: true,
            term: 7,
            environments: vec![("local".into(), true)],
        };
        let text = metrics.encode(&snapshot);
        for line in [
            "batchctl_jobs{status=\"SUCCEEDED\"} 5",
            "batchctl_jobs{status=\"RUNNING\"} 0",
            "batchctl_queue_jobs{queue=\"q\",status=\"SUCCEEDED\"} 2",
            "batchctl_queue_wait_seconds_count{queue=\"q\"} 1",
            "batchctl_queue_wait_seconds_bucket{le=\"0.64\",queue=\"q\"} 1",
            "batchctl_queue_wait_seconds_bucket{le=\"0.32\",queue=\"q\"} 0",
            "batchctl_job_run_seconds_sum{queue=\"q\"} 3.0",
            "batchctl_attempts_ended_total{queue=\"q\",outcome=\"succeeded\"} 1",
            "batchctl_attempts_ended_total{queue=\"q\",outcome=\"timeout\"} 1",
            "batchctl_rule_deliveries_total{rule=\"r\",outcome=\"submitted\"} 1",
            "batchctl_leader 1",
            "batchctl_leader_term 7",
            "batchctl_compute_environment_up{environment=\"local\"} 1",
            "# TYPE batchctl_dispatch_pass_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // A second scrape replaces what the database said; it does not add to it.
        let text = metrics.encode(&Snapshot {
            queue_jobs: vec![("q".into(), "SUCCEEDED".into(), 1)],
            leader: false,
            term: 0,
            environments: Vec::new(),
        });
        assert!(
            text.contains("batchctl_jobs{status=\"SUCCEEDED\"} 1"),
            "{text}"
        );
        assert!(!text.contains("queue=\"p\",status"), "{text}");
        assert!(text.contains("batchctl_leader 0"), "{text}");
    }

    /// The series of a scrape after everything was observed once.
    fn all_series() -> std::collections::BTreeSet<String> {
        let metrics = Metrics::new();
        metrics.observe_queue_wait("q", 1.0);
        metrics.observe_attempt_end("q", EndClass::Failed, Some(1.0));
        metrics.observe_dispatch_pass(0.01);
        metrics.count_executor_error("e");
        metrics.observe_schedule_lateness("s", 0.2);
        metrics.count_rule_delivery("r", "failed");
        metrics.count_notification_retry("n");
        metrics.count_dead_letter("n");
        let text = metrics.encode(&Snapshot {
            queue_jobs: vec![("q".into(), "FAILED".into(), 1)],
            leader: true,
            term: 1,
            environments: vec![("e".into(), false)],
        });
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                line.split(['{', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn the_list_of_series_is_what_a_scrape_shows() {
        let listed: std::collections::BTreeSet<String> =
            SERIES.iter().map(|s| s.to_string()).collect();
        assert_eq!(all_series(), listed);
    }

    /// The Grafana dashboard of the chart queries only series that exist.
    #[test]
    fn the_dashboard_queries_only_series_that_exist() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/batchctl/dashboards/batchctl.json"
        );
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut expressions = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                expressions.push(target["expr"].as_str().unwrap().to_string());
            }
        }
        assert!(expressions.len() >= 8, "{expressions:?}");
        let mut used = std::collections::BTreeSet::new();
        for expression in &expressions {
            let mut rest = expression.as_str();
            while let Some(at) = rest.find("batchctl_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                assert!(
                    SERIES.contains(&name.as_str()),
                    "the dashboard queries {name}, which /metrics does not show: {expression}"
                );
                used.insert(name);
            }
        }
        for histogram in [
            "batchctl_queue_wait_seconds_bucket",
            "batchctl_job_run_seconds_bucket",
        ] {
            assert!(used.contains(histogram), "the dashboard charts {histogram}");
        }
    }
}
