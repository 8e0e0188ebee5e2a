//! Queue policies through the CLI: time limits on RUNNABLE jobs, fair share and concurrency limits.

use std::time::{Duration, Instant};

use crate::support::{stderr, stdout, Server};

const LIMITED_QUEUE: &str = "apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: local}
spec: {type: process, maxVcpus: 1, maxMemoryMiB: 4096}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: impatient}
spec:
  priority: 1
  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]
  jobStateTimeLimitActions:
    - {reason: 'CAPACITY:waited too long', state: RUNNABLE, maxTimeSeconds: 2, action: CANCEL}
";

#[test]
fn jobs_runnable_beyond_the_queue_time_limit_are_cancelled() {
    let server = Server::start(None);
    server.apply_examples();
    server.apply_text(LIMITED_QUEUE);
    let submit = |queue: &str, command: &[&str]| {
        let mut args = vec!["--queue", queue, "--definition", "hello", "--"];
        args.extend(command);
        server.submit(&args)
    };
    // The blocker runs on the one vCPU; the job behind it can never be placed in time.
    let blocker = submit("impatient", &["sleep", "30"]);
    server.wait_for_status(&blocker, "RUNNING");
    let waiting = submit("impatient", &["true"]);
    let submitted = Instant::now();
    server.wait_for_status(&waiting, "RUNNABLE");
    let job = server.wait_for_status(&waiting, "FAILED");
    assert!(
        submitted.elapsed() >= Duration::from_secs(2),
        "cancelled before its 2 s limit"
    );
    assert_eq!(job["statusReason"], "CAPACITY:waited too long");
    assert!(job["attempts"].as_array().unwrap().is_empty());
    // A running job is not subject to the limit.
    assert_eq!(server.job(&blocker)["status"], "RUNNING");
    server.cli(&["terminate", &blocker]);

    let bad = LIMITED_QUEUE.replace("state: RUNNABLE", "state: RUNNING");
    let output = server.cli_with_stdin(&["apply", "-f", "-"], &bad);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("jobStateTimeLimitActions[0].state: \"RUNNING\" is not supported; RUNNABLE is the only state"),
        "{}",
        stderr(&output)
    );
}

const FAIR_QUEUE: &str = "apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: local}
spec: {type: process, maxVcpus: 1, maxMemoryMiB: 4096}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: fair}
spec:
  priority: 1
  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]
  schedulingPolicy:
    fairsharePolicy:
      shareDecaySeconds: 600
      shareDistribution: [{shareIdentifier: 'team-a', weightFactor: 1}, {shareIdentifier: 'team-*', weightFactor: 2}]
";

#[test]
fn fair_share_queues_need_a_share_and_why_shows_the_shares() {
    let server = Server::start(None);
    server.apply_examples();
    server.apply_text(FAIR_QUEUE);
    let base = ["submit", "--queue", "fair", "--definition", "hello"];
    let output = server.cli(&base);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "shareIdentifier: is required: queue \"fair\" has a fair-share schedulingPolicy"
        ),
        "{}",
        stderr(&output)
    );
    let output = server.cli(&[
        "submit",
        "--queue",
        "default",
        "--definition",
        "hello",
        "--share-identifier",
        "x",
    ]);
    assert!(
        stderr(&output).contains("queue \"default\" has no schedulingPolicy"),
        "{}",
        stderr(&output)
    );

    // team-a's job runs first and uses the one vCPU; team-b's waits, and why shows both shares.
    let submit = |share: &str, command: &[&str]| {
        let mut args = vec![
            "--queue",
            "fair",
            "--definition",
            "hello",
            "--share-identifier",
            share,
            "--",
        ];
        args.extend(command);
        server.submit(&args)
    };
    let first = submit("team-a", &["sleep", "1"]);
    server.wait_for_status(&first, "RUNNING");
    let waiting = submit("team-b", &["true"]);
    server.wait_for_status(&waiting, "RUNNABLE");
    let hold = server.hold(&waiting, "fairShare");
    assert_eq!(hold["shareIdentifier"], "team-b");
    assert_eq!(hold["weightFactor"], 2.0);
    server.wait_for_status(&first, "SUCCEEDED");
    server.wait_for_status(&waiting, "SUCCEEDED");
    let bad = FAIR_QUEUE.replace("weightFactor: 1}", "weightFactor: 0}");
    let output = server.cli_with_stdin(&["apply", "-f", "-"], &bad);
    assert!(
        stderr(&output)
            .contains("schedulingPolicy.fairsharePolicy.shareDistribution[0].weightFactor: is 0"),
        "{}",
        stderr(&output)
    );
}

/// `maxRunningJobs`, measured from the jobs' own side: each writes when it starts and ends, and
/// at no instant do more than the cap run, though the environment has room for twice as many.
#[test]
fn a_queue_runs_at_most_max_running_jobs_at_once() {
    let server = crate::support::Server::start(None);
    server.apply_examples();
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: capped}\nspec:\n  priority: 1\n  maxRunningJobs: 2\n  computeEnvironmentOrder: [{order: 1, computeEnvironment: local}]\n",
    );
    let log = server.data_dir.join("intervals");
    let script = format!(
        "echo \"start $(date +%s%N)\" >> {0}; sleep 0.4; echo \"end $(date +%s%N)\" >> {0}",
        log.display()
    );
    let jobs: Vec<String> = (0..8)
        .map(|_| {
            server.submit(&[
                "--queue",
                "capped",
                "--definition",
                "hello",
                "--",
                "sh",
                "-c",
                &script,
            ])
        })
        .collect();
    // While some wait, why says it is the cap.
    let waiting = crate::support::eventually(20, "a job waits for the cap", || {
        for job in &jobs {
            let why = server.cli(&["why", job]);
            let text = crate::support::stdout(&why);
            if text.contains("maxRunningJobs is 2") {
                return Ok(text);
            }
        }
        Err("no job waiting on the cap".to_string())
    });
    assert!(
        waiting.contains("its queue capped runs 2 jobs"),
        "{waiting}"
    );
    for job in &jobs {
        server.wait_for_status(job, "SUCCEEDED");
    }
    let mut moments: Vec<(u128, i32)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| {
            let (what, at) = line.split_once(' ').unwrap();
            (at.parse().unwrap(), if what == "start" { 1 } else { -1 })
        })
        .collect();
    assert_eq!(moments.len(), 16);
    // Ends before starts at the same instant.
    moments.sort();
    let (mut running, mut most) = (0, 0);
    for (_, step) in moments {
        running += step;
        most = most.max(running);
    }
    assert_eq!(most, 2, "two at once at most, and the cap was reached");

    // The cap is changed like a queue's priority; 0 is refused, naming the field.
    let output = server.cli(&["update", "queue", "capped", "--max-running-jobs", "3"]);
    assert!(
        output.status.success(),
        "{}",
        crate::support::stderr(&output)
    );
    let queue = server.json(&["get", "queues", "capped"]);
    assert_eq!(queue["spec"]["maxRunningJobs"], 3, "{queue:#}");
    server.refused(
        &["update", "queue", "capped", "--max-running-jobs", "0"],
        "maxRunningJobs: is 0; give at least 1",
    );
}

/// A `ConcurrencyLimit` keyed by a parameter runs at most `max` jobs per value across its queues:
/// the job over it waits RUNNABLE while others run, `why` names the limit, the value and the job
/// holding it, and a raised `max` holds from the next pass.
#[test]
fn a_concurrency_limit_runs_at_most_max_jobs_per_key_sqlite() {
    a_concurrency_limit_runs_at_most_max_jobs_per_key(&Server::start(None));
}

#[test]
fn a_concurrency_limit_runs_at_most_max_jobs_per_key_postgres() {
    let Some(url) = crate::support::postgres_url() else {
        return;
    };
    a_concurrency_limit_runs_at_most_max_jobs_per_key(&Server::start(Some(url)));
}

fn a_concurrency_limit_runs_at_most_max_jobs_per_key(server: &Server) {
    server.apply_examples();
    let limit = |max: u32| {
        format!(
            "apiVersion: batchctl/v1\nkind: ConcurrencyLimit\nmetadata: {{name: per-customer}}\n\
             spec: {{key: 'Ref::customer', max: {max}, jobQueues: [default]}}\n"
        )
    };
    server.apply_text(&limit(1));
    let gate = server.data_dir.join("gate");
    let gated = format!("while [ ! -e {} ]; do sleep 0.02; done", gate.display());
    let submit = |customer: Option<&str>, script: &str| {
        let parameter = customer.map(|customer| format!("customer={customer}"));
        let mut args = vec!["--queue", "default", "--definition", "hello"];
        if let Some(parameter) = &parameter {
            args.extend(["--param", parameter.as_str()]);
        }
        args.extend(["--", "sh", "-c", script]);
        server.submit(&args)
    };
    let first = submit(Some("acme"), &gated);
    server.wait_for_status(&first, "RUNNING");
    let second = submit(Some("acme"), &gated);
    let other = submit(Some("globex"), &gated);
    let unkeyed = submit(None, "true");
    server.wait_for_status(&other, "RUNNING");
    server.wait_for_status(&unkeyed, "SUCCEEDED");
    let waiting = server.job(&second);
    assert_eq!(waiting["status"], "RUNNABLE", "{waiting:#}");
    let hold = server.hold(&second, "concurrencyLimited");
    assert_eq!(hold["concurrencyLimit"], "per-customer");
    assert_eq!(hold["key"], "Ref::customer");
    assert_eq!(hold["value"], "acme");
    assert_eq!(hold["max"], 1);
    assert_eq!(hold["holding"], serde_json::json!([first]));
    let said = stdout(&server.cli(&["why", &second]));
    assert!(
        said.contains(
            "concurrency limit per-customer lets 1 jobs with Ref::customer = acme run at once"
        ),
        "{said}"
    );
    let listed = stdout(&server.cli(&["get", "concurrencylimits"]));
    assert!(
        listed.contains("per-customer") && listed.contains("Ref::customer"),
        "{listed}"
    );

    // Raised, it holds from the next pass: the second acme job starts beside the first.
    server.apply_text(&limit(2));
    server.wait_for_status(&second, "RUNNING");
    std::fs::write(&gate, "").unwrap();
    for job in [&first, &second, &other] {
        server.wait_for_status(job, "SUCCEEDED");
    }

    // From the jobs' own side: six jobs tagged with one team, a limit of two per team, room for
    // four.
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: ConcurrencyLimit\nmetadata: {name: per-team}\n\
         spec: {key: 'tag:team', max: 2}\n",
    );
    let trace = server.data_dir.join("trace");
    let script = format!(
        "echo start $AWS_BATCH_JOB_ID >> {0}; sleep 0.3; echo end $AWS_BATCH_JOB_ID >> {0}",
        trace.display()
    );
    let tagged: Vec<String> = (0..6)
        .map(|_| {
            server.submit(&[
                "--queue",
                "default",
                "--definition",
                "hello",
                "--tag",
                "team=a",
                "--",
                "sh",
                "-c",
                &script,
            ])
        })
        .collect();
    for job in &tagged {
        server.wait_for_status(job, "SUCCEEDED");
    }
    assert_eq!(server.job(&tagged[0])["tags"]["team"], "a");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let (most, started) = crate::support::most_at_once(&trace);
    assert_eq!(
        most, 2,
        "never more than two of the team at once, and two together:\n{trace}"
    );
    assert_eq!(started.len(), 6, "{trace}");

    for (spec, expected) in [
        (
            "{key: customer, max: 1}",
            "spec.key: \"customer\" is not a key; use Ref::PARAMETER",
        ),
        (
            "{key: jobDefinition, max: -1}",
            "spec.max: is -1; give 0 (hold every such job) to 1000000",
        ),
        (
            "{key: jobDefinition, max: 1, jobQueues: [nowhere]}",
            "spec.jobQueues[0]: job queue \"nowhere\" does not exist",
        ),
    ] {
        let text = format!(
            "apiVersion: batchctl/v1\nkind: ConcurrencyLimit\nmetadata: {{name: wrong}}\nspec: {spec}\n"
        );
        let output = server.cli_with_stdin(&["apply", "-f", "-"], &text);
        assert!(!output.status.success(), "{spec} was accepted");
        assert!(
            stderr(&output).contains(expected),
            "{spec}: {}",
            stderr(&output)
        );
    }
    let output = server.cli(&["delete", "concurrencylimit", "per-customer", "per-team"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listed = server.json(&["get", "concurrencylimits"]);
    assert_eq!(listed["items"], serde_json::json!([]));
}

/// Consumable resources through the CLI: a REPLENISHABLE licence is held while a job runs and
/// given back when it ends; a NON_REPLENISHABLE quota is used up and stays used up across a
/// `kill -9` and restart; `why` says which one is short; impossible asks are refused at submit.
#[test]
fn consumable_resources_are_held_or_used_up_sqlite() {
    consumable_resources_are_held_or_used_up(Server::start(None));
}

#[test]
fn consumable_resources_are_held_or_used_up_postgres() {
    let Some(url) = crate::support::postgres_url() else {
        return;
    };
    consumable_resources_are_held_or_used_up(Server::start(Some(url)));
}

fn consumable_resources_are_held_or_used_up(mut server: Server) {
    server.apply_examples();
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: ConsumableResource\nmetadata: {name: licences}\n\
         spec: {totalQuantity: 1}\n---\n\
         apiVersion: batchctl/v1\nkind: ConsumableResource\nmetadata: {name: quota}\n\
         spec: {totalQuantity: 2, resourceType: NON_REPLENISHABLE}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: licensed}\nspec:\n\
         \x20 containerProperties: {image: busybox, command: ['true']}\n\
         \x20 consumableResourceProperties:\n\
         \x20   consumableResourceList: [{consumableResource: licences, quantity: 1}]\n",
    );
    let gate = server.data_dir.join("gate");
    let gated = format!("while [ ! -e {} ]; do sleep 0.02; done", gate.display());
    let licensed = |script: &str| {
        server.submit(&[
            "--queue",
            "default",
            "--definition",
            "licensed",
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    let first = licensed(&gated);
    server.wait_for_status(&first, "RUNNING");
    let second = licensed("true");
    let resources = server.json(&["get", "consumableresources"]);
    let licences = &resources["items"][0];
    assert_eq!(licences["metadata"]["name"], "licences", "{resources:#}");
    assert_eq!(licences["status"]["inUseQuantity"], 1, "{resources:#}");
    assert_eq!(licences["status"]["availableQuantity"], 0);
    server.wait_for_status(&second, "RUNNABLE");
    let hold = server.hold(&second, "consumableResourceShort");
    assert_eq!(hold["consumableResource"], "licences");
    assert_eq!(
        (hold["needs"].as_u64(), hold["available"].as_u64()),
        (Some(1), Some(0))
    );
    std::fs::write(&gate, "").unwrap();
    server.wait_for_status(&first, "SUCCEEDED");
    server.wait_for_status(&second, "SUCCEEDED");

    // The quota of two is used up by two jobs; the third waits, and still waits after a restart.
    let quota = |script: &str| {
        server.submit(&[
            "--queue",
            "default",
            "--definition",
            "hello",
            "--consumable-resource",
            "quota=1",
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    let used: Vec<String> = (0..2).map(|_| quota("true")).collect();
    for job in &used {
        server.wait_for_status(job, "SUCCEEDED");
    }
    let third = quota("true");
    server.wait_for_status(&third, "RUNNABLE");
    server.kill_9();
    server.restart();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        server.job(&third)["status"],
        "RUNNABLE",
        "nothing was given back"
    );
    let said = stdout(&server.cli(&["why", &third]));
    assert!(
        said.contains("it asks for 1 of consumable resource quota, which has 0 left now"),
        "{said}"
    );
    let listed = stdout(&server.cli(&["get", "consumableresources"]));
    assert!(listed.contains("NON_REPLENISHABLE"), "{listed}");
    // Raising the total gives the third job its share.
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: ConsumableResource\nmetadata: {name: quota}\n\
         spec: {totalQuantity: 3, resourceType: NON_REPLENISHABLE}\n",
    );
    server.wait_for_status(&third, "SUCCEEDED");

    for (extra, expected) in [
        (
            "licences=2",
            "consumableResourcePropertiesOverride.consumableResourceList[0]: asks for 2 of consumable resource \"licences\", which has 1 in all",
        ),
        (
            "seats=1",
            "consumable resource \"seats\" does not exist; apply it first",
        ),
        ("licences=0", "consumableResourceList[0].quantity: is 0; give 1 to"),
    ] {
        server.refused(
            &[
                "submit",
                "--queue",
                "default",
                "--definition",
                "hello",
                "--consumable-resource",
                extra,
            ],
            expected,
        );
    }
}

/// `why` estimates when a RUNNABLE job starts: behind an attempt with a 60 s timeout and nothing
/// else known, at that timeout; once an attempt of the definition succeeded, from its typical run.
#[test]
fn why_estimates_a_start_from_timeouts_then_typical_runs() {
    let server = Server::start(None);
    server.apply_text(
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: solo}\n\
         spec: {type: process, maxVcpus: 1, maxMemoryMiB: 4096}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: solo}\n\
         spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: solo}]}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: timed}\nspec:\n\
         \x20 containerProperties: {image: busybox, command: ['true']}\n\
         \x20 timeout: {attemptDurationSeconds: 60}\n",
    );
    let gate = server.data_dir.join("gate");
    let submit = |script: &str| {
        server.submit(&[
            "--queue",
            "solo",
            "--definition",
            "timed",
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    let gated = format!("while [ ! -e {} ]; do sleep 0.02; done", gate.display());
    let estimate_behind = |blocker: &str, waiter: &str| {
        let started = server.wait_for_status(blocker, "RUNNING")["startedAt"]
            .as_i64()
            .unwrap();
        server.wait_for_status(waiter, "RUNNABLE");
        let why = server.json(&["why", waiter]);
        let estimate = why["estimatedStart"].clone();
        (started, estimate)
    };
    let blocker = submit(&gated);
    let waiter = submit("true");
    let (started, estimate) = estimate_behind(&blocker, &waiter);
    let at = estimate["at"]
        .as_i64()
        .unwrap_or_else(|| panic!("{estimate:#}"));
    assert!(
        (at - (started + 60_000)).abs() < 1_000,
        "at the blocker's timeout: {at} against start {started}: {estimate:#}"
    );
    let said = stdout(&server.cli(&["why", &waiter]));
    assert!(said.contains("estimated start: 20"), "{said}");
    std::fs::write(&gate, "").unwrap();
    server.wait_for_status(&blocker, "SUCCEEDED");
    server.wait_for_status(&waiter, "SUCCEEDED");

    // Both runs were short: the next estimate rests on the typical run, seconds away at most.
    std::fs::remove_file(&gate).unwrap();
    let blocker = submit(&gated);
    let waiter = submit("true");
    let (started, estimate) = estimate_behind(&blocker, &waiter);
    let at = estimate["at"]
        .as_i64()
        .unwrap_or_else(|| panic!("{estimate:#}"));
    assert!(
        at < started + 10_000,
        "from the typical run, not the 60 s timeout: {at} against start {started}: {estimate:#}"
    );
    assert!(
        estimate["restsOn"][0]
            .as_str()
            .unwrap()
            .contains("this definition's typical run"),
        "{estimate:#}"
    );
    std::fs::write(&gate, "").unwrap();
    server.wait_for_status(&waiter, "SUCCEEDED");
}
