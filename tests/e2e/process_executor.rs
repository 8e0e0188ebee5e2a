//! The process executor with the real `batchctl shim`: exit codes, output, process-group kills, and
//! what `list` reports for reconciliation.

use std::sync::Arc;
use std::time::Duration;

use batchctl_executor::process::{ProcessExecutor, ProcessExecutorConfig};
use batchctl_executor::{
    AttemptOutcome, AttemptSpec, EnvironmentVariable, Executor, LogCursor, ObservedState,
    OutputStream, Resources,
};
use futures::StreamExt;

use crate::support::BINARY;

fn executor(root: &std::path::Path) -> Arc<ProcessExecutor> {
    Arc::new(
        ProcessExecutor::new(ProcessExecutorConfig {
            root: root.to_path_buf(),
            shim_program: BINARY.into(),
            shim_arguments: vec!["shim".into()],
            run_as: None,
        })
        .unwrap(),
    )
}

fn spec(id: &str, script: &str) -> AttemptSpec {
    AttemptSpec {
        attempt_id: id.into(),
        job_id: id.into(),
        attempt_number: 1,
        compute_environment: "local".into(),
        image: "ignored".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        environment: vec![EnvironmentVariable {
            name: "WHO".into(),
            value: "you".into(),
        }],
        working_dir: None,
        user: None,
        resources: Resources::default(),
        ..AttemptSpec::default()
    }
}

async fn output(executor: &ProcessExecutor, id: &str) -> Vec<(OutputStream, Vec<u8>)> {
    let chunks: Vec<_> = executor
        .logs(&batchctl_executor::AttemptHandle(id.into()), LogCursor(0))
        .collect()
        .await;
    chunks
        .into_iter()
        .map(|c| c.unwrap())
        .map(|c| (c.stream, c.data.to_vec()))
        .collect()
}

#[tokio::test]
async fn runs_work_and_reports_exit_codes_and_output() {
    let root = tempfile::tempdir().unwrap();
    let executor = executor(root.path());
    let handle = executor
        .start(&spec("a", "echo out $WHO; echo err >&2; exit 7"))
        .await
        .unwrap();
    assert_eq!(
        executor.wait(&handle).await.unwrap(),
        AttemptOutcome::Exited {
            exit_code: 7,
            signal: None
        }
    );
    let chunks = output(&executor, "a").await;
    let stdout: Vec<u8> = chunks
        .iter()
        .filter(|(s, _)| *s == OutputStream::Stdout)
        .flat_map(|(_, d)| d.clone())
        .collect();
    let stderr: Vec<u8> = chunks
        .iter()
        .filter(|(s, _)| *s == OutputStream::Stderr)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(
        (stdout.as_slice(), stderr.as_slice()),
        (&b"out you\n"[..], &b"err\n"[..])
    );
    // Reading from a cursor returns only what follows it.
    let first = executor
        .logs(&handle, LogCursor(0))
        .next()
        .await
        .unwrap()
        .unwrap();
    let rest: Vec<_> = executor.logs(&handle, first.next).collect().await;
    assert_eq!(rest.len(), chunks.len() - 1);

    let listed = executor.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].state,
        ObservedState::Finished(AttemptOutcome::Exited {
            exit_code: 7,
            signal: None
        })
    );
    executor.remove(&handle).await.unwrap();
    assert!(executor.list().await.unwrap().is_empty());
}

/// A job's ulimits are the work's rlimits; what a host process cannot have is refused by name.
#[tokio::test]
async fn ulimits_apply_and_container_only_settings_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let executor = executor(root.path());
    let mut limited = spec("u", "ulimit -n; ulimit -Hn");
    limited.linux.ulimits = vec![batchctl_scheduler::core::linux::Ulimit {
        name: "nofile".into(),
        soft_limit: 200,
        hard_limit: 300,
    }];
    let handle = executor.start(&limited).await.unwrap();
    executor.wait(&handle).await.unwrap();
    let printed: Vec<u8> = output(&executor, "u")
        .await
        .into_iter()
        .flat_map(|(_, data)| data)
        .collect();
    assert_eq!(String::from_utf8(printed).unwrap(), "200\n300\n");

    let mut read_only = spec("r", "true");
    read_only.linux.read_only_root_filesystem = true;
    match executor.start(&read_only).await {
        Err(batchctl_executor::ExecutorError::Refused { reason }) => {
            assert!(reason.contains("readonlyRootFilesystem"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_command_fails_to_start() {
    let root = tempfile::tempdir().unwrap();
    let executor = executor(root.path());
    let mut missing = spec("m", "");
    missing.command = vec!["/no/such/program".into()];
    let handle = executor.start(&missing).await.unwrap();
    match executor.wait(&handle).await.unwrap() {
        AttemptOutcome::StartFailed { reason } => {
            assert!(reason.contains("/no/such/program"), "{reason}")
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn kill_stops_the_whole_process_group_and_running_work_is_listed() {
    let root = tempfile::tempdir().unwrap();
    let executor = executor(root.path());
    let pid_file = root.path().join("grandchild");
    let script = format!(
        "trap '' TERM; sleep 300 & echo $! > {}; wait",
        pid_file.display()
    );
    let handle = executor.start(&spec("k", &script)).await.unwrap();
    while !pid_file.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listed = executor.list().await.unwrap();
    assert_eq!(listed[0].state, ObservedState::Running);
    // The shell ignores SIGTERM, so only the forced kill after the grace period ends it.
    executor
        .kill(&handle, Duration::from_millis(300))
        .await
        .unwrap();
    let outcome = executor.wait(&handle).await.unwrap();
    assert!(
        matches!(
            outcome,
            AttemptOutcome::Exited {
                signal: Some(9),
                exit_code: 137
            }
        ),
        "{outcome:?}"
    );
    let grandchild = std::fs::read_to_string(&pid_file).unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while std::path::Path::new(&format!("/proc/{}", grandchild.trim())).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    gone.await
        .expect("the grandchild was not killed with its group");
}

#[tokio::test]
async fn work_outlives_the_executor_that_started_it() {
    let root = tempfile::tempdir().unwrap();
    let first = executor(root.path());
    let handle = first
        .start(&spec("s", "sleep 0.5; echo survived"))
        .await
        .unwrap();
    drop(first);
    // A new executor on the same root (a restarted server) finds the work and its outcome.
    let second = executor(root.path());
    assert_eq!(
        second.list().await.unwrap()[0].state,
        ObservedState::Running
    );
    assert_eq!(
        second.wait(&handle).await.unwrap(),
        AttemptOutcome::Exited {
            exit_code: 0,
            signal: None
        }
    );
    assert_eq!(
        output(&second, "s").await,
        [(OutputStream::Stdout, b"survived\n".to_vec())]
    );
}

/// True when the process is gone or only a zombie waiting for a reaper that is not the shim.
fn process_ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn an_attempt_ends_with_its_main_process_and_leaves_nothing_running() {
    let root = tempfile::tempdir().unwrap();
    let executor = executor(root.path());
    // One child stays in the attempt's process group; another leaves it with setsid, as a daemon
    // would. Both hold the output pipe open, which used to keep the attempt from ending.
    let in_group = root.path().join("in-group");
    let daemon = root.path().join("daemon");
    let script = format!(
        "sleep 300 & echo $! > {}; setsid sh -c 'echo $$ > {}; exec sleep 300' & \
         while [ ! -s {} ]; do sleep 0.01; done; echo main done",
        in_group.display(),
        daemon.display(),
        daemon.display()
    );
    let handle = executor.start(&spec("d", &script)).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), executor.wait(&handle))
        .await
        .expect("the attempt ended when its main process exited")
        .unwrap();
    assert!(
        matches!(
            outcome,
            AttemptOutcome::Exited {
                exit_code: 0,
                signal: None
            }
        ),
        "{outcome:?}"
    );
    for pid_file in [&in_group, &daemon] {
        let pid = std::fs::read_to_string(pid_file).unwrap();
        assert!(
            process_ended(&pid),
            "{} ({}) is still running after the attempt ended",
            pid_file.display(),
            pid.trim()
        );
    }
    assert_eq!(
        output(&executor, "d").await,
        vec![(OutputStream::Stdout, b"main done\n".to_vec())]
    );
}

#[tokio::test]
async fn a_kill_right_after_start_stops_the_work() {
    let root = tempfile::tempdir().unwrap();
    let executor = executor(root.path());
    // The kill comes before the shim can have written the work's pid.
    let handle = executor
        .start(&spec("early", "exec sleep 300"))
        .await
        .unwrap();
    executor
        .kill(&handle, Duration::from_millis(200))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), executor.wait(&handle))
        .await
        .expect("the work was stopped")
        .unwrap();
    assert!(
        matches!(
            outcome,
            AttemptOutcome::Exited {
                signal: Some(_),
                ..
            }
        ),
        "{outcome:?}"
    );
}
