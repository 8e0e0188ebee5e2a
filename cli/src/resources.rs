//! Commands about resources and their lifecycle: `get NAME…` and `--watch`, `describe` of a
//! resource, `delete`, `suspend`/`resume` and `update`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::client::{self, Client};
use crate::commands::{ResourceKind, UpdateFlags, UpdateKind};
use crate::output::{self, Format};

/// The resources of a kind, as `get` lists them.
pub(crate) async fn list_of(client: &Client, resource: ResourceKind) -> anyhow::Result<Value> {
    client.get(&format!("/v1/{}", resource.collection())).await
}

/// Whether a listed item is the one `name` names (a definition also as NAME:REVISION).
pub(crate) fn is_named(item: &Value, name: &str) -> bool {
    let own = item["metadata"]["name"].as_str().unwrap_or_default();
    match item["metadata"]["revision"].as_u64() {
        Some(revision) => own == name || format!("{own}:{revision}") == name,
        None => own == name,
    }
}

/// `get KIND NAME…`: those items, printed as the list is; fails naming any not found.
pub(crate) async fn get_named(
    client: &Client,
    resource: ResourceKind,
    names: &[String],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    if let ResourceKind::Jobs = resource {
        for id in names {
            match client.get(&format!("/v1/jobs/{id}")).await {
                Ok(job) => found.push(job),
                Err(error) => missing.push(format!("{id}: {error:#}")),
            }
        }
    } else {
        let list = list_of(client, resource).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        for name in names {
            let matching: Vec<Value> = items
                .iter()
                .filter(|item| is_named(item, name))
                .cloned()
                .collect();
            if matching.is_empty() {
                missing.push(format!("{} \"{name}\" not found", resource.collection()));
            }
            found.extend(matching);
        }
    }
    let list = json!({ "items": found });
    if found.len() == 1 && matches!(format, Format::Json | Format::Yaml) {
        // One object, as kubectl prints `get KIND NAME -o json`.
        output::print_structured(&list["items"][0], format)?;
    } else {
        print_kind(&list, resource, format)?;
    }
    for problem in &missing {
        eprintln!("error: {problem}");
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn print_kind(
    list: &Value,
    resource: ResourceKind,
    format: Format,
) -> anyhow::Result<()> {
    match resource {
        ResourceKind::Jobs => output::print_jobs(list, format),
        ResourceKind::Queues => output::print_queues(list, format),
        ResourceKind::Definitions => output::print_definitions(list, format),
        ResourceKind::Computeenvironments => output::print_environments(list, format),
        ResourceKind::Schedules => output::print_schedules(list, format),
        ResourceKind::Rules => output::print_rules(list, format),
        ResourceKind::Webhooktriggers => output::print_webhook_triggers(list, format),
        ResourceKind::Notifications => output::print_notifications(list, format),
        ResourceKind::Concurrencylimits => output::print_concurrency_limits(list, format),
        ResourceKind::Consumableresources => output::print_consumable_resources(list, format),
        ResourceKind::Secrets => output::print_secrets(list, format),
    }
}

/// `describe KIND NAME` for a resource: its document, then what a person asks next about it.
pub(crate) async fn describe_resource(
    client: &Client,
    resource: ResourceKind,
    name: &str,
    format: Format,
) -> anyhow::Result<()> {
    let list = list_of(client, resource).await?;
    let matching: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| is_named(item, name))
        .cloned()
        .collect();
    let Some(item) = matching.first() else {
        bail!(
            "{} \"{name}\" not found; see `batchctl get {}`",
            resource.collection(),
            resource.collection()
        );
    };
    let document = if matching.len() > 1 {
        json!({ "items": matching })
    } else {
        item.clone()
    };
    if output::print_structured(&document, format)? {
        return Ok(());
    }
    print!("{}", serde_yaml_ng::to_string(&document)?);
    match resource {
        ResourceKind::Queues => {
            let metrics = client.get_text("/metrics").await?;
            let prefix = format!("batchctl_queue_jobs{{queue=\"{name}\",status=\"");
            println!("\njobs by status:");
            for line in metrics.lines().filter(|line| line.starts_with(&prefix)) {
                let rest = &line[prefix.len()..];
                if let Some((status, count)) = rest.split_once("\"} ") {
                    println!("  {status:<10} {count}");
                }
            }
            let filter = client::JobListFilter {
                queue: Some(name.to_string()),
                ..Default::default()
            };
            println!("\nlatest jobs:");
            output::print_jobs(&client.list_jobs(&filter, 10).await?, Format::Table)?;
        }
        ResourceKind::Schedules => {
            let spec = &item["spec"];
            let expression = spec["scheduleExpression"].as_str().unwrap_or_default();
            let zone = spec["timeZone"]
                .as_str()
                .or(spec["scheduleExpressionTimezone"].as_str())
                .unwrap_or("UTC");
            println!("\nnext ticks ({zone}):");
            match crate::preview(expression, zone, None, 5) {
                Ok(times) if times.is_empty() => println!("  none: the schedule has no tick left"),
                Ok(times) => times.iter().for_each(|time| println!("  {time}")),
                Err(error) => println!("  cannot be computed: {error}"),
            }
        }
        ResourceKind::Rules => {
            println!("\nlatest deliveries:");
            let deliveries = json!({ "items": item["status"]["recentDeliveries"] });
            output::print_deliveries(&deliveries)?;
        }
        ResourceKind::Jobs
        | ResourceKind::Definitions
        | ResourceKind::Computeenvironments
        | ResourceKind::Webhooktriggers
        | ResourceKind::Notifications
        | ResourceKind::Concurrencylimits
        | ResourceKind::Consumableresources
        | ResourceKind::Secrets => {}
    }
    Ok(())
}

/// `get jobs --watch`: each Job State Change from the server's event stream as it happens, as a
/// table row (or one JSON object per line with `-o json`), filtered like the list.
pub(crate) async fn watch_jobs(
    client: &Client,
    queue: Option<&str>,
    status: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let mut detail = serde_json::Map::new();
    if let Some(queue) = queue {
        detail.insert("jobQueue".into(), json!([queue]));
    }
    if let Some(status) = status {
        detail.insert("status".into(), json!([status.to_uppercase()]));
    }
    let mut pattern = json!({
        "source": ["batchctl"],
        "detail-type": [batchctl_scheduler::core::events::JOB_STATE_CHANGE],
    });
    if !detail.is_empty() {
        pattern["detail"] = Value::Object(detail);
    }
    client
        .follow_events(Some(&pattern.to_string()), None, |event| {
            output::print_job_change(&event, format)
        })
        .await
}

/// The documents of a YAML or JSON file (`-`: standard input).
pub(crate) fn read_documents(file: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    batchctl_scheduler::manifest::documents_from_text(&text)
        .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))
}

/// Reads the file each `kind: Secret` document names in `spec.valueFrom.file` (relative to the
/// manifest's directory) into `spec.value`, as kubectl reads `--from-file`: the server never opens
/// a path a request names. Refuses a file over the secret size limit before reading it whole.
pub(crate) fn read_secret_files(
    documents: &mut [Value],
    manifest: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Read as _;
    let limit = batchctl_scheduler::core::secret::MAX_SECRET_BYTES;
    let base = manifest
        .parent()
        .filter(|_| manifest.as_os_str() != "-")
        .unwrap_or(std::path::Path::new("."));
    for (index, document) in documents.iter_mut().enumerate() {
        if document["kind"] != "Secret" {
            continue;
        }
        let Some(path) = document["spec"]["valueFrom"]["file"].as_str() else {
            continue;
        };
        let field = format!("documents[{index}].spec.valueFrom.file");
        let path = base.join(path);
        let file = std::fs::File::open(&path)
            .with_context(|| format!("{field}: cannot open {}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{field}: cannot read {}", path.display()))?;
        if bytes.len() > limit {
            bail!(
                "{field}: {} holds more than {limit} bytes, the most a secret holds",
                path.display()
            );
        }
        let value = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "{field}: {} is not UTF-8 text; store binary data base64-encoded",
                path.display()
            )
        })?;
        let spec = document["spec"]
            .as_object_mut()
            .expect("a document with spec.valueFrom.file has an object spec");
        spec.remove("valueFrom");
        spec.insert("value".into(), Value::String(value));
    }
    Ok(())
}

/// The paths to DELETE for a file's documents, in an order that lets each go: what refers to
/// others first (notifications, rules, schedules, definitions, queues), environments last.
pub(crate) fn deletion_targets(documents: &[Value]) -> anyhow::Result<Vec<String>> {
    use batchctl_scheduler::manifest::Kind;
    let order = [
        Kind::ConcurrencyLimit,
        Kind::Notification,
        Kind::WebhookTrigger,
        Kind::EventRule,
        Kind::Schedule,
        Kind::JobDefinition,
        Kind::ConsumableResource,
        Kind::Secret,
        Kind::JobQueue,
        Kind::ComputeEnvironment,
    ];
    let mut targets = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let kind_name = document["kind"].as_str().unwrap_or_default();
        let Some(rank) = order.iter().position(|kind| kind.as_str() == kind_name) else {
            bail!("documents[{index}].kind: {kind_name:?} is not a batchctl kind; `delete -f` reads the documents `apply -f` takes in batchctl's form (kind, metadata.name)");
        };
        let Some(name) = document["metadata"]["name"].as_str() else {
            bail!("documents[{index}].metadata.name is missing");
        };
        targets.push((rank, format!("/v1/{}/{name}", order[rank].collection())));
    }
    targets.sort_by_key(|(rank, _)| *rank);
    Ok(targets.into_iter().map(|(_, path)| path).collect())
}

/// DELETEs each path in turn, going on past failures (as kubectl); fails if any did.
pub(crate) async fn delete_all(
    client: &Client,
    targets: &[String],
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut deleted = Vec::new();
    let mut failed = 0;
    for target in targets {
        match client.delete(target).await {
            Ok(answer) => {
                let entries = answer["deleted"].as_array().cloned().unwrap_or_default();
                if entries.is_empty() {
                    eprintln!(
                        "{}: nothing left to deregister (every revision is INACTIVE already)",
                        target.trim_start_matches("/v1/")
                    );
                }
                deleted.extend(entries);
            }
            Err(error) => {
                failed += 1;
                eprintln!("error: {}: {error:#}", target.trim_start_matches("/v1/"));
            }
        }
    }
    output::print_deleted(&json!({ "deleted": deleted }), format)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `suspend` or `resume` each job in turn, going on past failures; fails if any did.
pub(crate) async fn change_jobs(
    client: &Client,
    ids: &[String],
    action: &str,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut jobs = Vec::new();
    let mut failed = false;
    for id in ids {
        match client
            .post(&format!("/v1/jobs/{id}/{action}"), &json!({}))
            .await
        {
            Ok(job) => jobs.push(job),
            Err(error) => {
                failed = true;
                eprintln!("error: {id}: {error:#}");
            }
        }
    }
    if !jobs.is_empty() {
        output::print_jobs(&json!({ "items": jobs }), format)?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `update KIND NAME --flag…`: the flags that apply to the kind as a merge patch of the job or the
/// resource's spec; a flag for another kind, or none at all, is refused before anything is sent.
pub(crate) async fn update(
    client: &Client,
    resource: UpdateKind,
    name: &str,
    changes: UpdateFlags,
    format: Format,
) -> anyhow::Result<()> {
    use UpdateKind::{Computeenvironment, Job, Queue};
    let flags: [(&str, &str, Option<Value>, &[UpdateKind]); 7] = [
        (
            "--scheduling-priority",
            "schedulingPriority",
            changes.scheduling_priority.map(Value::from),
            &[Job],
        ),
        (
            "--priority",
            "priority",
            changes.priority.map(Value::from),
            &[Queue],
        ),
        (
            "--max-running-jobs",
            "maxRunningJobs",
            changes.max_running_jobs.map(Value::from),
            &[Queue],
        ),
        (
            "--state",
            "state",
            changes.state.map(|state| Value::from(state.to_uppercase())),
            &[Queue, Computeenvironment],
        ),
        (
            "--max-vcpus",
            "maxVcpus",
            changes.max_vcpus.map(Value::from),
            &[Computeenvironment],
        ),
        (
            "--max-memory-mib",
            "maxMemoryMiB",
            changes.max_memory_mib.map(Value::from),
            &[Computeenvironment],
        ),
        (
            "--max-gpus",
            "maxGpus",
            changes.max_gpus.map(Value::from),
            &[Computeenvironment],
        ),
    ];
    let mut patch = serde_json::Map::new();
    let mut refused = Vec::new();
    for (flag, key, value, kinds) in flags {
        let Some(value) = value else { continue };
        if kinds.contains(&resource) {
            patch.insert(key.to_string(), value);
        } else {
            refused.push(flag);
        }
    }
    if !refused.is_empty() {
        bail!(
            "{} do(es) not apply to a {}",
            refused.join(", "),
            resource.noun()
        );
    }
    if patch.is_empty() {
        bail!("say what to change: {}", resource.flags());
    }
    let path = format!("/v1/{}/{name}", resource.collection());
    let answer = client.patch(&path, &Value::Object(patch)).await?;
    match resource {
        Job => output::print_job(&answer, format),
        Queue | Computeenvironment => output::print_applied(&answer, format),
    }
}
