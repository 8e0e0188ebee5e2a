//! The console's markup: the page shell and the overview and job fragments, as pure functions of
//! what `console::mod` read. maud escapes every value it prints, so job names, reasons and output
//! cannot inject markup. Sections marked `data-live` are swapped by id when the page refreshes;
//! the rest (a job's output as it streams, an open form) stays as it is.

use maud::{html, Markup, DOCTYPE};

use super::chart::{self, QueueSeries};
use crate::api::views::{ChildView, JobView};
use crate::core::model::{JobStatus, Resources};
use crate::core::why::Hold;

/// What the caller's token may do: buttons that would be refused are not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abilities {
    /// Cancel and terminate jobs.
    pub submit: bool,
    /// Redrive dead letters.
    pub admin: bool,
}

/// The page every console address serves: navigation, the token form, and an empty `main` the
/// script fills with the fragment for the address (fetched with the token in a header, so the
/// token is never in a URL and a page without it shows no data).
pub fn shell() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "batchctl" }
                link rel="stylesheet" href="/console-assets/console.css";
                script src="/console-assets/console.js" defer {}
            }
            body {
                a class="skip" href="#view" { "Skip to content" }
                header {
                    span class="brand" { "batchctl" }
                    nav aria-label="Sections" {
                        a href="/" { "Overview" }
                        a href="/console/jobs" { "Jobs" }
                        a href="/console/schedules" { "Schedules" }
                        a href="/console/rules" { "Rules" }
                        a href="/console/notifications" { "Notifications" }
                        a href="/console/events" { "Events" }
                    }
                    button type="button" id="forget" hidden { "Forget token" }
                }
                form id="login" hidden {
                    h1 { "Sign in" }
                    p id="login-reason" {}
                    label for="token" { "API token" }
                    input id="token" name="token" type="password" autocomplete="off" required;
                    button type="submit" { "Use this token" }
                    p class="hint" {
                        "The token stays in this browser tab (session storage) and is sent in the "
                        code { "Authorization" } " header; it is never put in an address."
                    }
                }
                p id="status" role="status" aria-live="polite" {}
                main id="view" tabindex="-1" aria-busy="true" { p { "Loading…" } }
                dialog id="confirm" aria-labelledby="confirm-title" {
                    form method="dialog" {
                        h2 id="confirm-title" {}
                        label for="confirm-reason" { "Reason" }
                        input id="confirm-reason" name="reason" type="text" maxlength="1024"
                            value="Stopped from the console";
                        div class="buttons" {
                            button type="submit" value="keep" { "Keep it" }
                            button type="submit" value="confirm" id="confirm-ok" class="danger" { "Confirm" }
                        }
                    }
                }
                noscript {
                    p { "The console needs JavaScript to send your API token with its requests. The CLI (" code { "batchctl get jobs" } ") shows the same." }
                }
            }
        }
    }
}

/// A queue's row on the overview.
pub struct QueueRow {
    pub name: String,
    pub state: &'static str,
    pub priority: i64,
    pub stop_policy: &'static str,
    /// SUBMITTED, PENDING and RUNNABLE.
    pub waiting: i64,
    /// STARTING and RUNNING.
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// A compute environment's row on the overview.
pub struct EnvironmentRow {
    pub name: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub health: String,
    pub capacity: Resources,
    pub used: Resources,
}

pub struct Overview {
    pub status: String,
    pub leader: String,
    pub storage: String,
    pub queues: Vec<QueueRow>,
    pub environments: Vec<EnvironmentRow>,
    pub failures: Vec<JobView>,
    pub charts: Vec<QueueSeries>,
}

pub fn overview(overview: &Overview) -> Markup {
    html! {
        h1 { "Overview" }
        section id="health" data-live aria-labelledby="health-title" {
            h2 id="health-title" { "Server" }
            dl class="facts" {
                dt { "Health" } dd data-health=(overview.status) { (overview.status) }
                dt { "Role" } dd { (overview.leader) }
                dt { "Storage" } dd { (overview.storage) }
            }
        }
        section id="queues" data-live aria-labelledby="queues-title" {
            h2 id="queues-title" { "Job queues" }
            @if overview.queues.is_empty() {
                p { "No job queues yet: " code { "batchctl apply -f examples/hello.yaml" } "." }
            } @else {
                div class="scroll" {
                    table {
                        thead { tr {
                            th scope="col" { "Queue" } th scope="col" { "State" }
                            th scope="col" { "Priority" } th scope="col" { "Stop policy" }
                            th scope="col" class="number" { "Waiting" } th scope="col" class="number" { "Running" }
                            th scope="col" class="number" { "Succeeded" } th scope="col" class="number" { "Failed" }
                        } }
                        tbody {
                            @for queue in &overview.queues {
                                tr data-queue=(queue.name) {
                                    th scope="row" { a href={ "/console/jobs?queue=" (queue.name) } { (queue.name) } }
                                    td { (queue.state) } td { (queue.priority) } td { (queue.stop_policy) }
                                    td class="number" data-count="waiting" { (queue.waiting) }
                                    td class="number" data-count="running" { (queue.running) }
                                    td class="number" data-count="succeeded" { (queue.succeeded) }
                                    td class="number" data-count="failed" { (queue.failed) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section id="environments" data-live aria-labelledby="environments-title" {
            h2 id="environments-title" { "Compute environments" }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "Environment" } th scope="col" { "Type" } th scope="col" { "State" }
                        th scope="col" { "Health" } th scope="col" { "vCPU" } th scope="col" { "Memory (MiB)" }
                        th scope="col" { "GPU" }
                    } }
                    tbody {
                        @for environment in &overview.environments {
                            tr {
                                th scope="row" { (environment.name) }
                                td { (environment.kind) } td { (environment.state) } td { (environment.health) }
                                td { (usage(environment.used.vcpu_millis as f64 / 1000.0, environment.capacity.vcpu_millis as f64 / 1000.0, "vCPU")) }
                                td { (usage(environment.used.memory_mib as f64, environment.capacity.memory_mib as f64, "MiB")) }
                                td { (usage(environment.used.gpus as f64, environment.capacity.gpus as f64, "GPU")) }
                            }
                        }
                    }
                }
            }
        }
        section id="failures" data-live aria-labelledby="failures-title" {
            h2 id="failures-title" { "Recent failures" }
            @if overview.failures.is_empty() {
                p { "No failed jobs." }
            } @else {
                ul class="failures" {
                    @for job in &overview.failures {
                        li {
                            a href={ "/console/jobs/" (job.job_id) } { (job.job_name) }
                            " in " (job.job_queue) ", " (time(job.stopped_at)) ": "
                            span class="reason" { (job.status_reason.as_deref().unwrap_or("no reason given")) }
                        }
                    }
                }
            }
        }
        section id="activity" data-live aria-labelledby="activity-title" {
            h2 id="activity-title" { "Activity, last " (chart::WINDOW_MINUTES / 60) " hours" }
            p class="hint" { "Top-level jobs finished per minute (an array counts once), and their mean wait from submit to start." }
            @for series in &overview.charts {
                figure data-chart-queue=(series.queue) {
                    figcaption { "Queue " (series.queue) }
                    p class="chart-label" { "Jobs finished per minute" }
                    (chart::bar_chart(&format!("Jobs finished per minute in {}", series.queue), "jobs", &series.finished))
                    p class="chart-label" { "Mean wait from submit to start (seconds)" }
                    (chart::bar_chart(&format!("Mean queue wait in {}", series.queue), "seconds", &series.mean_wait_seconds))
                }
            }
        }
    }
}

fn usage(used: f64, capacity: f64, unit: &str) -> Markup {
    let label = format!("{} of {} {unit} in use", trim(used), trim(capacity));
    html! {
        meter min="0" max=(capacity.max(0.0)) value=(used) aria-label=(label) {}
        " " span { (trim(used)) " / " (trim(capacity)) }
    }
}

fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// When an epoch-millisecond instant was, in UTC, as a `<time>` a script may localise.
pub fn time(millis: Option<i64>) -> Markup {
    match millis.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(at) => html! {
            time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
                (at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        },
        None => html! { "—" },
    }
}

/// The job list's filters and where the page stands.
pub struct JobFilters {
    pub queue: Option<String>,
    pub status: Option<JobStatus>,
    pub name: Option<String>,
    pub array_job_id: Option<String>,
}

impl JobFilters {
    /// The console address of this list from `cursor` on.
    fn address(&self, cursor: Option<&str>) -> String {
        let mut query = url_query::Builder::default();
        query.push("queue", self.queue.as_deref());
        query.push("status", self.status.map(|s| s.as_str()));
        query.push("name", self.name.as_deref());
        query.push("arrayJobId", self.array_job_id.as_deref());
        query.push("cursor", cursor);
        format!("/console/jobs{}", query.finish())
    }
}

/// A page of jobs: top-level jobs, or one array's children.
pub enum JobRows {
    Jobs(Vec<JobView>),
    Children(Vec<ChildView>),
}

pub fn jobs(
    filters: &JobFilters,
    queues: &[String],
    rows: &JobRows,
    next: Option<&str>,
    paged: bool,
) -> Markup {
    html! {
        h1 {
            @if let Some(parent) = &filters.array_job_id {
                "Children of array " a href={ "/console/jobs/" (parent) } { (parent) }
            } @else { "Jobs" }
        }
        @if filters.array_job_id.is_none() {
            form class="filters" method="get" action="/console/jobs" role="search" aria-label="Filter jobs" {
                label for="filter-queue" { "Queue" }
                select id="filter-queue" name="queue" {
                    option value="" { "All queues" }
                    @for queue in queues {
                        option value=(queue) selected[filters.queue.as_deref() == Some(queue.as_str())] { (queue) }
                    }
                }
                label for="filter-status" { "Status" }
                (status_select(filters.status))
                label for="filter-name" { "Name" }
                input id="filter-name" name="name" type="search" value=[filters.name.as_deref()]
                    placeholder="name, or prefix*" maxlength="128";
                button type="submit" { "Filter" }
            }
        } @else {
            form class="filters" method="get" action="/console/jobs" aria-label="Filter children" {
                input type="hidden" name="arrayJobId" value=[filters.array_job_id.as_deref()];
                label for="filter-status" { "Status" }
                (status_select(filters.status))
                button type="submit" { "Filter" }
            }
        }
        section id="job-list" data-live aria-label="Jobs" {
            div class="scroll" {
                table class="jobs" {
                    thead { tr {
                        th scope="col" { "Job" } th scope="col" { "Queue" } th scope="col" { "Status" }
                        th scope="col" { "Created" } th scope="col" { "Stopped" } th scope="col" { "Reason" }
                        th scope="col" { "Children" }
                    } }
                    tbody {
                        @match rows {
                            JobRows::Jobs(jobs) => {
                                @for job in jobs {
                                    tr data-job-id=(job.job_id) data-status=(job.status.as_str()) {
                                        th scope="row" { a href={ "/console/jobs/" (job.job_id) } { (job.job_name) } br; small { (job.job_id) } }
                                        td { (job.job_queue) }
                                        td { (status_badge(job.status, job.suspended)) }
                                        td { (time(Some(job.created_at))) }
                                        td { (time(job.stopped_at)) }
                                        td class="reason" { (job.status_reason.as_deref().unwrap_or("")) }
                                        td { (array_progress(job)) }
                                    }
                                }
                            }
                            JobRows::Children(children) => {
                                @for child in children {
                                    tr data-job-id=(child.job_id) data-status=(child.status.as_str()) {
                                        th scope="row" { a href={ "/console/jobs/" (child.job_id) } { (child.job_name) } br; small { (child.job_id) } }
                                        td { (child.job_queue) }
                                        td { (status_badge(child.status, false)) }
                                        td { (time(Some(child.created_at))) }
                                        td { (time(child.stopped_at)) }
                                        td class="reason" { (child.status_reason.as_deref().unwrap_or("")) }
                                        td {}
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @let empty = match rows { JobRows::Jobs(jobs) => jobs.is_empty(), JobRows::Children(children) => children.is_empty() };
            @if empty { p { "No jobs match." } }
            nav class="pager" aria-label="Pages" {
                @if paged { a href=(filters.address(None)) { "First page" } }
                @if let Some(cursor) = next { a href=(filters.address(Some(cursor))) rel="next" { "Next page" } }
            }
        }
    }
}

fn status_select(selected: Option<JobStatus>) -> Markup {
    html! {
        select id="filter-status" name="status" {
            option value="" { "Any status" }
            @for status in JobStatus::ALL {
                option value=(status.as_str()) selected[selected == Some(status)] { (status.as_str()) }
            }
        }
    }
}

fn status_badge(status: JobStatus, suspended: bool) -> Markup {
    html! {
        span class={ "badge " (status.as_str().to_ascii_lowercase()) } { (status.as_str()) }
        @if suspended { " " span class="badge held" { "SUSPENDED" } }
    }
}

/// An array's success policy as a sentence.
fn success_policy_text(policy: &crate::manifest::SuccessPolicySpec) -> String {
    match (policy.max_failed_children, &policy.succeeded_indexes) {
        (Some(max), _) => format!("at most {max} of its children failed (maxFailedChildren)"),
        (None, Some(indexes)) => {
            format!("the children at {indexes} succeeded (succeededIndexes)")
        }
        (None, None) => "every child succeeded".to_string(),
    }
}

/// An array parent's children as a bar: finished of all, with the counts by status.
fn array_progress(job: &JobView) -> Markup {
    let Some(summary) = job
        .array_properties
        .as_ref()
        .and_then(|properties| properties.status_summary.as_ref())
    else {
        return html! {};
    };
    let total: u64 = summary.values().sum();
    let finished: u64 = summary
        .iter()
        .filter(|(status, _)| status.is_terminal())
        .map(|(_, n)| n)
        .sum();
    let label = format!("{finished} of {total} children finished");
    html! {
        progress max=(total.max(1)) value=(finished) aria-label=(label) {}
        " " a href={ "/console/jobs?arrayJobId=" (job.job_id) } { (finished) "/" (total) }
        @let failed = summary.get(&JobStatus::Failed).copied().unwrap_or(0);
        @if failed > 0 { " " span class="badge failed" { (failed) " failed" } }
    }
}

/// One job: its facts, attempts, what holds it, its output following live, and the buttons the
/// caller may use.
pub fn job(
    job: &JobView,
    holds: &[Hold],
    estimate: Option<&crate::core::estimate::StartEstimate>,
    abilities: Abilities,
) -> Markup {
    let waiting = matches!(
        job.status,
        JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable
    );
    let running = matches!(job.status, JobStatus::Starting | JobStatus::Running);
    let attempt = job
        .current_attempt
        .as_ref()
        .map(|attempt| attempt.attempt_number)
        .or_else(|| job.attempts.last().map(|attempt| attempt.attempt_number));
    html! {
        h1 { "Job " (job.job_name) }
        section id="job-summary" data-live aria-label="Summary" {
            dl class="facts" {
                dt { "Job ID" } dd { code { (job.job_id) } }
                dt { "Status" } dd id="job-status" data-status=(job.status.as_str()) { (status_badge(job.status, job.suspended)) }
                @if let Some(reason) = &job.status_reason { dt { "Reason" } dd { (reason) } }
                dt { "Queue" } dd { a href={ "/console/jobs?queue=" (job.job_queue) } { (job.job_queue) } }
                dt { "Definition" } dd { (job.job_definition) }
                dt { "Image or command" } dd { code { (job.container.image) } " " code { (job.container.command.join(" ")) } }
                dt { "Created" } dd { (time(Some(job.created_at))) }
                dt { "Started" } dd { (time(job.started_at)) }
                dt { "Stopped" } dd { (time(job.stopped_at)) }
                dt { "Scheduling priority" } dd { (job.scheduling_priority) }
                @if let Some(requested) = &job.stop_requested { dt { "Stop requested" } dd { (requested) } }
                @if !job.depends_on.is_empty() {
                    dt { "Depends on" }
                    dd { ul class="inline" { @for dependency in &job.depends_on { @if let Some(id) = &dependency.job_id {
                        li { a href={ "/console/jobs/" (id) } { (id) } @if let Some(kind) = &dependency.dependency_type { " (" (kind) ")" } @if let Some(condition) = &dependency.condition { " " (condition) } }
                    } } } }
                }
                @if job.array_properties.as_ref().is_some_and(|p| p.status_summary.is_some()) {
                    dt { "Children" } dd { (array_progress(job)) }
                }
                @if let Some(properties) = &job.array_properties {
                    @if let Some(max) = properties.max_concurrency {
                        dt { "Children at once" } dd { "at most " (max) " (maxConcurrency)" }
                    }
                    @if let Some(policy) = &properties.success_policy {
                        dt { "Succeeds when" } dd { (success_policy_text(policy)) }
                    }
                }
                dt { "Attempts" } dd {
                    (job.retry_strategy.attempts) " at most"
                    @if job.retry_strategy.disruptions > 0 {
                        "; " (job.retry_strategy.disruptions) " of " (job.retry_strategy.max_disruptions) " disruptions retried without counting"
                    }
                }
            }
            @if abilities.submit && (waiting || running) {
                div class="buttons" {
                    @if waiting {
                        button type="button" class="danger" data-action={ "/v1/jobs/" (job.job_id) "/cancel" }
                            data-confirm={ "Cancel job " (job.job_name) "?" } { "Cancel job" }
                    }
                    button type="button" class="danger" data-action={ "/v1/jobs/" (job.job_id) "/terminate" }
                        data-confirm={ "Terminate job " (job.job_name) "?" } { "Terminate job" }
                }
            }
        }
        section id="job-why" data-live aria-labelledby="why-title" {
            @if waiting {
                h2 id="why-title" { "Why it waits" }
                ul class="holds" { @for hold in holds { li { (hold.to_string()) } } }
                @if let Some(estimate) = estimate {
                    p id="estimated-start" {
                        "Estimated start: "
                        @if let Some(at) = estimate.at { (time(Some(at))) } @else { "unknown" }
                    }
                    ul class="hint" { @for basis in &estimate.rests_on { li { (basis) } } }
                }
            }
        }
        section id="job-attempts" data-live aria-labelledby="attempts-title" {
            h2 id="attempts-title" { "Attempts" }
            @if job.attempts.is_empty() && job.current_attempt.is_none() {
                p { "No attempt yet." }
            } @else {
                div class="scroll" {
                    table {
                        thead { tr {
                            th scope="col" { "#" } th scope="col" { "Environment" } th scope="col" { "Started" }
                            th scope="col" { "Stopped" } th scope="col" { "Exit code" } th scope="col" { "Reason" }
                        } }
                        tbody {
                            @for attempt in &job.attempts {
                                tr {
                                    th scope="row" { (attempt.attempt_number) }
                                    td { (attempt.compute_environment) }
                                    td { (time(attempt.started_at)) } td { (time(Some(attempt.stopped_at))) }
                                    td { @if let Some(code) = attempt.exit_code { (code) } @else { "—" } }
                                    td class="reason" { (attempt.status_reason) }
                                }
                            }
                            @if let Some(current) = &job.current_attempt {
                                tr {
                                    th scope="row" { (current.attempt_number) }
                                    td { (current.compute_environment) }
                                    td { (time(current.started_at)) } td { "running" } td { "—" } td {}
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(attempt) = attempt {
            section id="job-output" aria-labelledby="output-title" {
                h2 id="output-title" { "Output of attempt " (attempt) }
                @if let Some(nodes) = &job.node_properties {
                    // A multi-node job: each node's output apart, the main node's first.
                    @for node in std::iter::once(nodes.main_node).chain((0..nodes.num_nodes).filter(|n| *n != nodes.main_node)) {
                        h3 id={ "output-node-" (node) "-title" } {
                            "Node " (node) @if node == nodes.main_node { " (main)" }
                        }
                        pre id={ "output-node-" (node) } tabindex="0" aria-live="off"
                            aria-labelledby={ "output-node-" (node) "-title" }
                            data-follow={ "/v1/jobs/" (job.job_id) "/logs?follow=true&attempt=" (attempt) "&node=" (node) } {}
                    }
                } @else {
                    pre id="output" tabindex="0" aria-live="off"
                        data-follow={ "/v1/jobs/" (job.job_id) "/logs?follow=true&attempt=" (attempt) } {}
                }
            }
        }
    }
}

/// The response for a fragment the caller asked for that does not exist.
pub fn not_found(what: &str) -> Markup {
    html! { h1 { "Not found" } p { (what) } p { a href="/" { "Back to the overview" } } }
}

/// Escaped JSON, for fields shown as they were applied.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre class="json" { (text) } }
}

/// Query strings for console links, percent-encoded.
mod url_query {
    #[derive(Default)]
    pub struct Builder(Vec<String>);

    impl Builder {
        pub fn push(&mut self, name: &str, value: Option<&str>) {
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                self.0.push(format!("{name}={}", encode(value)));
            }
        }

        pub fn finish(self) -> String {
            if self.0.is_empty() {
                String::new()
            } else {
                format!("?{}", self.0.join("&"))
            }
        }
    }

    fn encode(value: &str) -> String {
        value
            .bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (byte as char).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_addresses_encoded() {
        let filters = JobFilters {
            queue: Some("a&b".into()),
            status: Some(JobStatus::Running),
            name: Some("x y*".into()),
            array_job_id: None,
        };
        assert_eq!(
            filters.address(Some("42")),
            "/console/jobs?queue=a%26b&status=RUNNING&name=x%20y%2A&cursor=42"
        );
        let page = not_found("<script>alert(1)</script>").into_string();
        assert!(!page.contains("<script>alert"), "{page}");
    }
}
