//! Resources are read from the store's own stored form (`store/stored_form.rs`), never through
//! the wire format's validation: rows written by format 1 load whatever today's validation says,
//! and rows written before models were stored are upgraded at start.

#[macro_use]
mod support;

use batchctl_scheduler::core::resource::Kind;
use batchctl_scheduler::store::{resource_table, Store, StoreLocation};
use sqlx::Connection;

/// One resource of every kind, applied through the API's validation.
const EVERY_KIND: &str = concat!(
    local_queue!(),
    "---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: report}
spec:
  type: container
  containerProperties: {image: busybox, command: [echo, Ref::day]}
  retryStrategy: {attempts: 3}
---
apiVersion: batchctl/v1
kind: Schedule
metadata: {name: nightly}
spec:
  scheduleExpression: cron(0 2 * * ? *)
  timeZone: Europe/Berlin
  target: {jobQueue: q, jobDefinition: report, parameters: {day: <scheduledTime>}}
---
apiVersion: batchctl/v1
kind: EventRule
metadata: {name: on-upload}
spec:
  eventPattern: {source: [storage]}
  target: {jobQueue: q, jobDefinition: report}
---
apiVersion: batchctl/v1
kind: WebhookTrigger
metadata: {name: github}
spec: {profile: github, secrets: [a-long-enough-secret-value], source: github}
---
apiVersion: batchctl/v1
kind: Notification
metadata: {name: ops}
spec: {eventPattern: {source: [batchctl]}, endpoint: 'https://ops.example/hook'}
"
);

/// Runs statements on the store's database directly, as an older batchctl would have written.
async fn execute(location: &StoreLocation, statements: &[String]) {
    match location {
        StoreLocation::Sqlite { path } => {
            let mut connection =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
            for statement in statements {
                sqlx::query(statement)
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
        }
        StoreLocation::Postgres { url } => {
            let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
            for statement in statements {
                sqlx::query(statement)
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
        }
    }
}

/// A row of `table` as format 1 writes it, with the spec as it was applied.
fn insert(table: &str, name: &str, spec: &str, model: &str) -> String {
    let (columns, values) = match table {
        "job_definitions" => ("name, revision, spec, model, created_at", "1, "),
        _ => ("name, spec, model, created_at, updated_at", ""),
    };
    let times = match table {
        "job_definitions" => "7",
        _ => "7, 7",
    };
    format!(
        "INSERT INTO {table} ({columns}) VALUES ('{name}', {values}'{}', '{}', {times})",
        spec.replace('\'', "''"),
        model.replace('\'', "''")
    )
}

/// Rows of every kind, as format 1 wrote them, each holding a value today's validation refuses
/// (as a tightened rule would): they load, with those values, instead of stopping the server.
async fn rows_of_format_1_load_where_validation_now_refuses_them(test: support::TestStore) {
    let refused = [
        (
            "job_queues",
            "q",
            r#"{"priority":1,"maxRunningJobs":0,"computeEnvironmentOrder":[{"order":1,"computeEnvironment":"local"}]}"#,
            r#"{"format":1,"model":{"name":"q","priority":1,"state":"ENABLED","computeEnvironments":["local"],"runnableTimeLimits":[],"fairShare":null,"jobRetention":{"succeededSeconds":null,"failedSeconds":null},"held":false,"drain":false,"maxRunningJobs":0}}"#,
        ),
        (
            "job_definitions",
            "report",
            r#"{"type":"container","containerProperties":{"image":"busybox","command":["true"]},"retryStrategy":{"attempts":50}}"#,
            r#"{"format":1,"model":{"parameters":{},"container":{"image":"busybox","command":["true"],"environment":[],"resources":{"vcpuMillis":1000,"memoryMib":512,"gpus":0},"workingDir":null,"user":null,"imagePullPolicy":"IfNotPresent","privileged":false,"capabilities":[]},"retry":{"attempts":50,"evaluateOnExit":[],"backoff":null},"timeoutSeconds":null,"schedulingPriority":0}}"#,
        ),
        (
            "schedules",
            "nightly",
            r#"{"scheduleExpression":"cron(0 2 * * ? *)","timeZone":"Europe/Berlin","flexibleTimeWindow":{"mode":"FLEXIBLE","maximumWindowInMinutes":100000},"target":{"jobQueue":"q","jobDefinition":"report"}}"#,
            r#"{"format":1,"model":[{"name":"nightly","expression":"cron(0 2 * * ? *)","timeZone":"Europe/Berlin","enabled":true,"start":null,"end":null,"flexibleWindowMinutes":100000,"overlap":"Allow","catchUp":{"policy":"latest","maxAgeSeconds":null},"history":{"succeeded":null,"failed":null},"deleteAfterCompletion":false},{"jobDefinition":"report","jobQueue":"q","parameters":{"day":"<scheduledTime>"}}]}"#,
        ),
        (
            "event_rules",
            "on-upload",
            r#"{"eventPattern":{"source":["storage"]},"maxChainDepth":5000,"target":{"jobQueue":"q","jobDefinition":"report"}}"#,
            r#"{"format":1,"model":[{"name":"on-upload","pattern":{"source":["storage"]},"enabled":true,"inputPaths":{},"maxChainDepth":5000},{"jobDefinition":"report","jobQueue":"q"}]}"#,
        ),
        (
            "webhook_triggers",
            "github",
            r#"{"profile":"github","secrets":["short"],"source":"github"}"#,
            r#"{"format":1,"model":{"name":"github","profile":"github","secrets":["short"],"source":"github","detailType":"Webhook"}}"#,
        ),
        (
            "notifications",
            "ops",
            r#"{"eventPattern":{"source":["batchctl"]},"endpoint":"ftp://ops.example/hook"}"#,
            r#"{"format":1,"model":{"name":"ops","pattern":{"source":["batchctl"]},"endpoint":"ftp://ops.example/hook","secret":null,"maximumRetryAttempts":5,"enabled":true}}"#,
        ),
    ];
    let kinds = [
        "JobQueue",
        "JobDefinition",
        "Schedule",
        "EventRule",
        "WebhookTrigger",
        "Notification",
    ];
    for ((_, name, spec, _), kind) in refused.iter().zip(kinds) {
        let document = serde_json::json!({
            "apiVersion": "batchctl/v1", "kind": kind, "metadata": {"name": name},
            "spec": serde_json::from_str::<serde_json::Value>(spec).unwrap(),
        });
        assert!(
            batchctl_scheduler::manifest::parse_document(&document).is_err(),
            "today's validation refuses the {kind} spec {spec}"
        );
    }
    support::apply(&test.store, support::LOCAL_QUEUE).await;
    execute(
        &test.location,
        &std::iter::once("DELETE FROM job_queues".to_string())
            .chain(
                refused
                    .iter()
                    .map(|(table, name, spec, model)| insert(table, name, spec, model)),
            )
            .collect::<Vec<_>>(),
    )
    .await;
    let store = reopened(&test).await;

    let queues = store.job_queues().await.unwrap();
    assert_eq!(queues[0].max_running_jobs, Some(0));
    let definitions = store.job_definitions(None).await.unwrap();
    assert_eq!(definitions[0].definition.spec.retry.attempts, 50);
    assert_eq!(definitions[0].spec["retryStrategy"]["attempts"], 50);
    let schedules = store.schedules().await.unwrap();
    assert_eq!(schedules[0].schedule.flexible_window_minutes, 100000);
    assert_eq!(schedules[0].schedule.time_zone, chrono_tz::Europe::Berlin);
    assert_eq!(
        schedules[0].target.0["parameters"]["day"],
        "<scheduledTime>"
    );
    let rules = store.event_rules().await.unwrap();
    assert_eq!(rules[0].rule.max_chain_depth, 5000);
    assert!(rules[0]
        .rule
        .pattern
        .matches(&serde_json::json!({"source": "storage"})));
    let trigger = store.webhook_trigger("github").await.unwrap().unwrap();
    assert_eq!(trigger.secrets[0].expose(), "short");
    let notifications = store.notifications().await.unwrap();
    assert_eq!(notifications[0].0.endpoint, "ftp://ops.example/hook");
    assert_eq!(notifications[0].1, 7);
}

/// A new `Store` on the same database, so nothing read before comes from memory.
async fn reopened(test: &support::TestStore) -> Store {
    Store::open(&test.location)
        .await
        .unwrap()
        .with_keyring(support::test_keyring())
}

/// Every spec and model text of `table`, as the database keeps them.
async fn raw_rows(location: &StoreLocation, table: &str) -> String {
    let query = format!("SELECT spec || model FROM {table}");
    let rows: Vec<String> = match location {
        StoreLocation::Sqlite { path } => {
            let mut connection =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
            sqlx::query_scalar(&query)
                .fetch_all(&mut connection)
                .await
                .unwrap()
        }
        StoreLocation::Postgres { url } => {
            let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar(&query)
                .fetch_all(&mut connection)
                .await
                .unwrap()
        }
    };
    rows.concat()
}

/// Secrets an earlier release stored in the clear are sealed at start once a key is given; a new
/// key with the old one as previous re-seals everything; a store without the sealing key refuses
/// to read sealed values, naming what to do, instead of handing out ciphertext.
async fn secrets_are_sealed_then_moved_to_a_new_key(test: support::TestStore) {
    use batchctl_scheduler::sealing::Keyring;
    use std::sync::Arc;
    const LEGACY: &str = "a-legacy-plain-secret-value";
    execute(
        &test.location,
        &[
            insert(
                "webhook_triggers",
                "github",
                &format!(r#"{{"profile": "github", "secrets": ["{LEGACY}"], "source": "github"}}"#),
                &format!(r#"{{"format": 1, "model": {{"name": "github", "profile": "github", "secrets": ["{LEGACY}"], "source": "github", "detailType": "push"}}}}"#),
            ),
        ],
    )
    .await;
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let open = |keyring: Option<Keyring>| {
        let location = test.location.clone();
        async move {
            let store = Store::open(&location).await.unwrap();
            match keyring {
                Some(keyring) => store.with_keyring(Arc::new(keyring)),
                None => store,
            }
        }
    };
    // Without a key, a value in the clear still works and is counted.
    let plain = open(None).await;
    let report = plain.reseal().await.unwrap();
    assert_eq!(report.left_in_the_clear, 1);
    let trigger = plain.webhook_trigger("github").await.unwrap().unwrap();
    assert_eq!(trigger.secrets[0].expose(), LEGACY);

    let sealed = open(Some(Keyring::from_keys(&old, &[]))).await;
    assert_eq!(sealed.reseal().await.unwrap().values, 1);
    let raw = raw_rows(&test.location, "webhook_triggers").await;
    assert!(!raw.contains(LEGACY), "{raw}");
    assert!(raw.contains("batchctl-sealed:v1:"), "{raw}");
    let trigger = sealed.webhook_trigger("github").await.unwrap().unwrap();
    assert_eq!(trigger.secrets[0].expose(), LEGACY);
    assert_eq!(
        sealed.reseal().await.unwrap().values,
        0,
        "nothing left to do"
    );

    let rotated = open(Some(Keyring::from_keys(&new, &[old]))).await;
    assert_eq!(rotated.reseal().await.unwrap().values, 1);
    let new_id = Keyring::from_keys(&new, &[]).current_key_id().to_string();
    assert!(raw_rows(&test.location, "webhook_triggers")
        .await
        .contains(&format!("batchctl-sealed:v1:{new_id}:")));

    let only_new = open(Some(Keyring::from_keys(&new, &[]))).await;
    let trigger = only_new.webhook_trigger("github").await.unwrap().unwrap();
    assert_eq!(trigger.secrets[0].expose(), LEGACY);
    let retired = open(Some(Keyring::from_keys(&old, &[]))).await;
    let error = retired
        .webhook_trigger("github")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("was not given"), "{error}");
    let keyless = open(None).await;
    let error = keyless.reseal().await.unwrap_err().to_string();
    assert!(error.contains("no key"), "{error}");
}

/// Rows written before models were stored (migration 0022 leaves their model NULL) are refused
/// with a message saying what to do until the start-up upgrade validates their spec and stores
/// their model; after it they read as they did, and a second upgrade has nothing to do.
async fn rows_saved_before_models_were_stored_are_upgraded_at_start(test: support::TestStore) {
    support::apply(&test.store, EVERY_KIND).await;
    let before = (
        test.store.compute_environments().await.unwrap(),
        test.store.job_queues().await.unwrap(),
        test.store.job_definitions(None).await.unwrap(),
        test.store.schedules().await.unwrap(),
        test.store.event_rules().await.unwrap(),
        test.store.webhook_trigger("github").await.unwrap(),
        test.store.notifications().await.unwrap(),
    );
    // A release before models kept its specs with secrets in the clear (today's keep a digest).
    let mut statements: Vec<String> = Kind::ALL
        .map(|kind| format!("UPDATE {} SET model = NULL", resource_table(kind)))
        .to_vec();
    statements.push(
        r#"UPDATE webhook_triggers SET spec = '{"profile": "github", "secrets": ["a-long-enough-secret-value"], "source": "github"}'"#
            .to_string(),
    );
    execute(&test.location, &statements).await;
    let store = reopened(&test).await;
    let error = store.job_queues().await.unwrap_err().to_string();
    assert!(
        error.contains("job_queues q") && error.contains("start `batchctl server` once"),
        "{error}"
    );

    assert_eq!(
        batchctl_scheduler::upgrade::stored_models(&store)
            .await
            .unwrap(),
        7
    );
    let after = (
        store.compute_environments().await.unwrap(),
        store.job_queues().await.unwrap(),
        store.job_definitions(None).await.unwrap(),
        store.schedules().await.unwrap(),
        store.event_rules().await.unwrap(),
        store.webhook_trigger("github").await.unwrap(),
        store.notifications().await.unwrap(),
    );
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, before.1);
    assert_eq!(after.2, before.2);
    assert_eq!(
        after
            .3
            .iter()
            .map(|s| (&s.schedule, &s.target))
            .collect::<Vec<_>>(),
        before
            .3
            .iter()
            .map(|s| (&s.schedule, &s.target))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        after
            .4
            .iter()
            .map(|r| (&r.rule, &r.target))
            .collect::<Vec<_>>(),
        before
            .4
            .iter()
            .map(|r| (&r.rule, &r.target))
            .collect::<Vec<_>>()
    );
    assert_eq!(after.5, before.5);
    assert_eq!(after.6, before.6);
    assert_eq!(
        batchctl_scheduler::upgrade::stored_models(&store)
            .await
            .unwrap(),
        0
    );
}

macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(test) = crate::support::postgres().await else { return };
                    super::$test(test).await;
                }
            )*
        }
    };
}

on_both_databases!(
    secrets_are_sealed_then_moved_to_a_new_key,
    rows_of_format_1_load_where_validation_now_refuses_them,
    rows_saved_before_models_were_stored_are_upgraded_at_start,
);
