//! Two real servers on one Postgres: one leads, the other serves the API and takes over when the
//! leader is killed with SIGKILL. Jobs run in real Docker containers, which outlive the leader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::docker_executor::{docker_resources, test_image};
use crate::support::{eventually, get_json, postgres_url, Server};

const LEASE_TTL_SECONDS: u64 = 3;

fn role(server: &Server) -> String {
    get_json(&format!("{}/healthz", server.url))["leader"]["role"]
        .as_str()
        .unwrap_or("unknown")
        .to_string()
}

/// Waits until `server` says it has `role` (`leader` or `follower`).
fn wait_for_role(server: &Server, expected: &str, seconds: u64) {
    eventually(
        seconds,
        &format!("the server becomes {expected}"),
        || match role(server) {
            role if role == expected => Ok(()),
            other => Err(other),
        },
    );
}

fn ha_server(url: &str) -> Server {
    Server::start_with(
        Some(url.to_string()),
        &["--lease-ttl-seconds".into(), LEASE_TTL_SECONDS.to_string()],
    )
}

#[test]
fn a_follower_takes_over_from_a_killed_leader_without_losing_or_repeating_work() {
    let Some(url) = postgres_url() else { return };
    let Some(engine) = test_image() else { return };
    let image = engine.image;
    let mut leader = ha_server(&url);
    wait_for_role(&leader, "leader", 10);
    let follower = ha_server(&url);
    // The follower serves the API but does not dispatch while the lease is held.
    std::thread::sleep(Duration::from_secs(LEASE_TTL_SECONDS + 1));
    assert_eq!(role(&follower), "follower", "{}", follower.log());

    docker_resources(&leader, image, 4, "");
    let run = |server: &Server, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                server.submit(&[
                    "--queue",
                    "dq",
                    "--definition",
                    "box",
                    "--name",
                    &format!("ha-{i}"),
                    "--",
                    "sh",
                    "-c",
                    "sleep 1; echo done $AWS_BATCH_JOB_ID",
                ])
            })
            .collect()
    };
    // Submitted through the follower: acknowledged there, dispatched by the leader.
    let mut jobs = run(&follower, 24);
    eventually(60, "the leader runs some of the jobs", || {
        let running = jobs
            .iter()
            .filter(|id| follower.job(id)["status"] == "RUNNING")
            .count();
        if running >= 2 {
            Ok(())
        } else {
            Err(format!("{running} running"))
        }
    });

    leader.kill_9();
    let killed = Instant::now();
    // Accepted while nobody leads: durable, and run by the next leader.
    jobs.extend(run(&follower, 8));
    let at = (chrono::Utc::now() + chrono::Duration::seconds(12)).format("%Y-%m-%dT%H:%M:%S");
    follower.apply_text(&format!(
        "apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {{name: once}}\nspec:\n  \
         scheduleExpression: 'at({at})'\n  timeZone: UTC\n  target:\n    jobQueue: dq\n    jobDefinition: box\n"
    ));
    wait_for_role(&follower, "leader", LEASE_TTL_SECONDS + 10);
    let took_over = killed.elapsed();
    assert!(
        took_over <= Duration::from_secs(LEASE_TTL_SECONDS + 5),
        "took {took_over:?}"
    );

    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    for id in &jobs {
        let job = follower.wait_for_status(id, "SUCCEEDED");
        attempts.insert(id.clone(), job["attempts"].as_array().unwrap().len());
        let logs = follower.cli(&["logs", id]);
        assert!(
            String::from_utf8_lossy(&logs.stdout).contains(&format!("done {id}")),
            "{id}: {}",
            String::from_utf8_lossy(&logs.stdout)
        );
    }
    // Each job ran exactly once: no attempt was started twice or lost and retried.
    assert!(attempts.values().all(|&n| n == 1), "{attempts:?}");

    let fired = eventually(40, "the schedule fires on the new leader", || {
        let schedules = follower.json(&["get", "schedules"]);
        let firing = &schedules["items"][0]["status"]["lastFiring"];
        match firing["jobId"].as_str() {
            Some(id) => Ok(id.to_string()),
            None => Err(format!("{schedules}")),
        }
    });
    follower.wait_for_status(&fired, "SUCCEEDED");
    let page = follower.json(&["get", "jobs", "--queue", "dq", "--status", "SUCCEEDED"]);
    let items = page["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        jobs.len() + 1,
        "one job per submit and one per tick: {page:#}"
    );

    // A server that comes back joins as a follower.
    leader.restart();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(role(&leader), "follower");
    assert_eq!(role(&follower), "leader");
}

#[test]
fn a_paused_leader_that_wakes_up_after_a_takeover_stops_without_dispatching() {
    let Some(url) = postgres_url() else { return };
    let Some(engine) = test_image() else { return };
    let image = engine.image;
    let mut paused = ha_server(&url);
    wait_for_role(&paused, "leader", 10);
    let follower = ha_server(&url);
    docker_resources(&follower, image, 4, "");

    // The leader stops (a long GC pause, a frozen VM) without losing its process or connections.
    paused.signal("STOP");
    // Within the TTL, or after the database ends a session frozen inside a transaction (10 s).
    wait_for_role(&follower, "leader", LEASE_TTL_SECONDS + 15);
    let jobs: Vec<String> = (0..6)
        .map(|i| {
            follower.submit(&[
                "--queue",
                "dq",
                "--definition",
                "box",
                "--name",
                &format!("paused-{i}"),
                "--",
                "sh",
                "-c",
                "sleep 1",
            ])
        })
        .collect();
    // It wakes up believing it leads; its writes are fenced and it steps down by exiting.
    paused.signal("CONT");
    let status = paused
        .wait_exit(LEASE_TTL_SECONDS + 10)
        .expect("a deposed leader exits");
    assert!(!status.success(), "{status:?}");
    assert!(
        paused.log().contains("lost the leader lease"),
        "{}",
        paused.log()
    );
    for id in &jobs {
        let job = follower.wait_for_status(id, "SUCCEEDED");
        assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    }
    assert_eq!(role(&follower), "leader");
}

#[test]
fn a_submit_through_a_follower_wakes_the_leader_at_once() {
    let Some(url) = postgres_url() else { return };
    // The leader looks at the store by itself only once a minute: what runs sooner was woken.
    let slow_poll = |url: &str| {
        Server::start_with(
            Some(url.to_string()),
            &[
                "--lease-ttl-seconds".into(),
                LEASE_TTL_SECONDS.to_string(),
                "--poll-interval-seconds".into(),
                "60".into(),
            ],
        )
    };
    let leader = slow_poll(&url);
    wait_for_role(&leader, "leader", 10);
    let follower = slow_poll(&url);
    follower.apply_text(
        "apiVersion: batchctl/v1\nkind: ComputeEnvironment\nmetadata: {name: here}\n\
         spec: {type: process, maxVcpus: 2, maxMemoryMiB: 1024}\n---\n\
         apiVersion: batchctl/v1\nkind: JobQueue\nmetadata: {name: pq}\n\
         spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: here}]}\n---\n\
         apiVersion: batchctl/v1\nkind: JobDefinition\nmetadata: {name: echo}\n\
         spec: {containerProperties: {image: none, command: [sh, -c, 'echo woken']}}\n",
    );
    let started = Instant::now();
    let id = follower.submit(&["--queue", "pq", "--definition", "echo"]);
    follower.wait_for_status(&id, "SUCCEEDED");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the leader was not woken: the job waited for its poll ({:?})",
        started.elapsed()
    );
}
