//! Printing what the server returned: kubectl-style tables, or the JSON/YAML objects themselves.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Deserialize as _;
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    /// The table with more columns (jobs and queues; other kinds as `table`).
    Wide,
    Json,
    Yaml,
    /// `kind/name` per item, as kubectl's `-o name`.
    Name,
}

/// Prints `value` as JSON, YAML or names; returns false for the table formats, which callers
/// render.
pub fn print_structured(value: &Value, format: Format) -> anyhow::Result<bool> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Name => {
            let listed = value["items"].as_array();
            for item in listed.map_or_else(|| vec![value], |items| items.iter().collect()) {
                println!("{}", name_of(item));
            }
        }
        Format::Table | Format::Wide => return Ok(false),
    }
    Ok(true)
}

/// `job/ID`, `jobqueue/NAME`, `jobdefinition/NAME:REVISION`, … as `-o name` prints them.
pub fn name_of(item: &Value) -> String {
    if let Some(job_id) = item["jobId"].as_str() {
        return format!("job/{job_id}");
    }
    let kind = item["kind"].as_str().unwrap_or("resource").to_lowercase();
    let name = text(&item["metadata"]["name"]);
    match item["metadata"]["revision"].as_u64() {
        Some(revision) => format!("{kind}/{name}:{revision}"),
        None => format!("{kind}/{name}"),
    }
}

/// A kubectl-style table: no borders, a header row, columns left-aligned three spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().copied())
        .add_rows(rows);
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
    }
    let mut text = String::new();
    for line in table.lines() {
        let _ = writeln!(text, "{}", line.trim_end());
    }
    text
}

/// Prints a list as JSON, YAML or names, or as a table with one row per item.
fn print_list(
    list: &Value,
    format: Format,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<()> {
    print_list_wide(list, format, header, row, &[], |_| Vec::new())
}

/// `print_list` whose `-o wide` table adds `wide_header` columns, filled by `wide_row`.
fn print_list_wide(
    list: &Value,
    format: Format,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
    wide_header: &[&str],
    wide_row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<()> {
    if print_structured(list, format)? {
        return Ok(());
    }
    let wide = format == Format::Wide;
    let header: Vec<&str> = header
        .iter()
        .chain(wide_header.iter().filter(|_| wide))
        .copied()
        .collect();
    let rows = items(list)
        .iter()
        .map(|item| {
            let mut cells = row(item);
            if wide {
                cells.extend(wide_row(item));
            }
            cells
        })
        .collect();
    print!("{}", table(&header, rows));
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// "12s", "5m", "3h", "2d" since an epoch-millisecond time.
fn age(millis: &Value) -> String {
    let Some(millis) = millis.as_i64() else {
        return "-".into();
    };
    let seconds = (chrono::Utc::now().timestamp_millis() - millis).max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

fn timestamp(millis: &Value) -> String {
    millis
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".into(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

pub fn print_applied(answer: &Value, format: Format) -> anyhow::Result<()> {
    // Warnings go to standard error in every format, so `-o json` output stays parseable.
    for warning in answer["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", text(warning));
    }
    if print_structured(answer, format)? {
        return Ok(());
    }
    for applied in answer["applied"].as_array().into_iter().flatten() {
        let kind = applied["kind"].as_str().unwrap_or_default().to_lowercase();
        let revision = applied["revision"]
            .as_u64()
            .map(|r| format!(":{r}"))
            .unwrap_or_default();
        println!(
            "{kind}/{}{revision} {}",
            text(&applied["name"]),
            text(&applied["action"])
        );
    }
    Ok(())
}

/// What `delete` did, as kubectl prints it: `jobqueue/NAME deleted`,
/// `jobdefinition/NAME:REVISION deregistered`.
pub fn print_deleted(answer: &Value, format: Format) -> anyhow::Result<()> {
    if print_structured(answer, format)? {
        return Ok(());
    }
    for deleted in answer["deleted"].as_array().into_iter().flatten() {
        let kind = deleted["kind"].as_str().unwrap_or_default().to_lowercase();
        let revision = deleted["revision"]
            .as_u64()
            .map(|r| format!(":{r}"))
            .unwrap_or_default();
        let jobs = match deleted["jobs"].as_u64() {
            Some(n) if n > 1 => format!(" ({n} jobs with its children)"),
            Some(_) | None => String::new(),
        };
        println!(
            "{kind}/{}{revision} {}{jobs}",
            text(&deleted["name"]),
            text(&deleted["action"])
        );
    }
    Ok(())
}

pub fn print_job(job: &Value, format: Format) -> anyhow::Result<()> {
    if print_structured(job, format)? {
        return Ok(());
    }
    print_jobs(&serde_json::json!({ "items": [job] }), format)
}

pub fn print_jobs(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = [
        "JOB ID", "NAME", "QUEUE", "STATUS", "ATTEMPTS", "AGE", "REASON",
    ];
    let wide = [
        "DEFINITION",
        "PRIORITY",
        "SHARE",
        "STARTED",
        "STOPPED",
        "EXIT CODE",
    ];
    let wide_row = |job: &Value| {
        let exit_code = job["attempts"]
            .as_array()
            .and_then(|attempts| attempts.last())
            .map_or_else(|| "-".to_string(), |attempt| text(&attempt["exitCode"]));
        vec![
            text(&job["jobDefinition"]),
            text(&job["schedulingPriority"]),
            text(&job["shareIdentifier"]),
            timestamp(&job["startedAt"]),
            timestamp(&job["stoppedAt"]),
            exit_code,
        ]
    };
    print_list_wide(
        list,
        format,
        &header,
        |job| {
            // Array children are listed as summaries, which count their attempts.
            let attempts = job["attemptCount"].as_u64().map_or_else(
                || {
                    job["attempts"].as_array().map_or(0, Vec::len)
                        + usize::from(!job["currentAttempt"].is_null())
                },
                |count| count as usize,
            );
            vec![
                text(&job["jobId"]),
                text(&job["jobName"]),
                text(&job["jobQueue"]),
                if job["suspended"] == true {
                    format!("{} (suspended)", text(&job["status"]))
                } else {
                    text(&job["status"])
                },
                attempts.to_string(),
                age(&job["createdAt"]),
                text(&job["statusReason"]),
            ]
        },
        &wide,
        wide_row,
    )
}

pub fn print_queues(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["NAME", "PRIORITY", "STATE", "COMPUTE ENVIRONMENTS"];
    let wide = ["STOP POLICY", "KEEP SUCCEEDED", "KEEP FAILED", "FAIR SHARE"];
    let wide_row = |queue: &Value| {
        let spec = &queue["spec"];
        let seconds = |value: &Value| match value.as_u64() {
            Some(seconds) => format!("{seconds}s"),
            None => "default".into(),
        };
        vec![
            spec["stopPolicy"].as_str().unwrap_or("None").to_string(),
            seconds(&spec["jobRetention"]["succeededSeconds"]),
            seconds(&spec["jobRetention"]["failedSeconds"]),
            if spec["schedulingPolicy"].is_null() {
                "no"
            } else {
                "yes"
            }
            .to_string(),
        ]
    };
    print_list_wide(
        list,
        format,
        &header,
        |queue| {
            let spec = &queue["spec"];
            let mut order: Vec<(i64, String)> = spec["computeEnvironmentOrder"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["order"].as_i64().unwrap_or(0),
                        text(&e["computeEnvironment"]),
                    )
                })
                .collect();
            order.sort();
            let environments: Vec<String> = order.into_iter().map(|(_, name)| name).collect();
            vec![
                text(&queue["metadata"]["name"]),
                text(&spec["priority"]),
                spec["state"].as_str().unwrap_or("ENABLED").to_string(),
                environments.join(","),
            ]
        },
        &wide,
        wide_row,
    )
}

pub fn print_definitions(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["NAME", "REVISION", "STATUS", "IMAGE", "COMMAND"];
    print_list(list, format, &header, |definition| {
        let container = &definition["spec"]["containerProperties"];
        let command: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        vec![
            text(&definition["metadata"]["name"]),
            text(&definition["metadata"]["revision"]),
            text(&definition["status"]),
            text(&container["image"]),
            command.join(" "),
        ]
    })
}

pub fn print_rules(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = [
        "NAME",
        "STATE",
        "QUEUE",
        "DEFINITION",
        "LAST EVENT",
        "OUTCOME",
        "JOB",
    ];
    print_list(list, format, &header, |rule| {
        let spec = &rule["spec"];
        let last = &rule["status"]["recentDeliveries"][0];
        vec![
            text(&rule["metadata"]["name"]),
            spec["state"].as_str().unwrap_or("ENABLED").to_string(),
            text(&spec["target"]["jobQueue"]),
            text(&spec["target"]["jobDefinition"]),
            text(&last["eventId"]),
            text(&last["outcome"]),
            text(&last["jobId"]),
        ]
    })
}

pub fn print_webhook_triggers(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["NAME", "PROFILE", "SOURCE", "URL"];
    print_list(list, format, &header, |trigger| {
        vec![
            text(&trigger["metadata"]["name"]),
            text(&trigger["spec"]["profile"]),
            text(&trigger["spec"]["source"]),
            text(&trigger["status"]["url"]),
        ]
    })
}

pub fn print_consumable_resources(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["NAME", "TYPE", "TOTAL", "IN USE", "AVAILABLE"];
    print_list(list, format, &header, |resource| {
        let spec = &resource["spec"];
        vec![
            text(&resource["metadata"]["name"]),
            spec["resourceType"]
                .as_str()
                .unwrap_or("REPLENISHABLE")
                .to_string(),
            spec["totalQuantity"].to_string(),
            resource["status"]["inUseQuantity"].to_string(),
            resource["status"]["availableQuantity"].to_string(),
        ]
    })
}

/// Secrets: names and ages, never a value (the server sends none).
pub fn print_secrets(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["NAME", "AGE", "CHANGED"];
    print_list(list, format, &header, |secret| {
        vec![
            text(&secret["metadata"]["name"]),
            age(&secret["status"]["createdAt"]),
            age(&secret["status"]["updatedAt"]),
        ]
    })
}

pub fn print_concurrency_limits(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["NAME", "KEY", "MAX", "QUEUES"];
    print_list(list, format, &header, |limit| {
        let spec = &limit["spec"];
        let queues: Vec<String> = spec["jobQueues"]
            .as_array()
            .map(|queues| queues.iter().map(text).collect())
            .unwrap_or_default();
        vec![
            text(&limit["metadata"]["name"]),
            text(&spec["key"]),
            spec["max"].to_string(),
            if queues.is_empty() {
                "(all)".to_string()
            } else {
                queues.join(",")
            },
        ]
    })
}

pub fn print_notifications(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["NAME", "STATE", "ENDPOINT", "RETRIES", "SIGNED"];
    print_list(list, format, &header, |notification| {
        let spec = &notification["spec"];
        vec![
            text(&notification["metadata"]["name"]),
            spec["state"].as_str().unwrap_or("ENABLED").to_string(),
            text(&spec["endpoint"]),
            spec["retryPolicy"]["maximumRetryAttempts"]
                .as_u64()
                .map_or("5".into(), |n| n.to_string()),
            if spec.get("secret").is_some() {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ]
    })
}

pub fn print_dead_letters(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["EVENT", "NOTIFICATION", "ATTEMPTS", "LAST ERROR"];
    print_list(list, format, &header, |letter| {
        vec![
            text(&letter["eventId"]),
            text(&letter["notification"]),
            text(&letter["attempts"]),
            text(&letter["lastError"]),
        ]
    })
}

pub fn print_events(answer: &Value, format: Format) -> anyhow::Result<()> {
    let header = ["SEQ", "ID", "SOURCE", "DETAIL TYPE", "TIME"];
    print_list(answer, format, &header, |item| {
        let event = &item["event"];
        vec![
            text(&item["seq"]),
            text(&event["id"]),
            text(&event["source"]),
            text(&event["detail-type"]),
            text(&event["time"]),
        ]
    })
}

pub fn print_schedules(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = [
        "NAME",
        "EXPRESSION",
        "TIME ZONE",
        "STATE",
        "NEXT FIRE",
        "LAST TICK",
        "OUTCOME",
        "JOB",
    ];
    print_list(list, format, &header, |schedule| {
        let spec = &schedule["spec"];
        let last = &schedule["status"]["lastFiring"];
        let outcome = match (last["outcome"].as_str(), last["jobStatus"].as_str()) {
            (Some(outcome), Some(status)) => format!("{outcome} ({status})"),
            (Some(outcome), None) => outcome.to_string(),
            (None, _) => "-".to_string(),
        };
        vec![
            text(&schedule["metadata"]["name"]),
            text(&spec["scheduleExpression"]),
            spec["timeZone"].as_str().unwrap_or("UTC").to_string(),
            spec["state"].as_str().unwrap_or("ENABLED").to_string(),
            text(&schedule["status"]["nextFireTime"]),
            text(&last["scheduledTime"]),
            outcome,
            text(&last["jobId"]),
        ]
    })
}

pub fn print_environments(list: &Value, format: Format) -> anyhow::Result<()> {
    let header = [
        "NAME",
        "TYPE",
        "STATE",
        "MAX VCPUS",
        "MAX MEMORY MIB",
        "MAX GPUS",
    ];
    print_list(list, format, &header, |environment| {
        let spec = &environment["spec"];
        vec![
            text(&environment["metadata"]["name"]),
            text(&spec["type"]),
            spec["state"].as_str().unwrap_or("ENABLED").to_string(),
            text(&spec["maxVcpus"]),
            text(&spec["maxMemoryMiB"]),
            spec.get("maxGpus").map_or_else(|| "0".into(), text),
        ]
    })
}

pub fn describe_job(job: &Value, format: Format) -> anyhow::Result<()> {
    if print_structured(job, format)? {
        return Ok(());
    }
    let container = &job["container"];
    let command: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let fields = [
        ("Job ID", text(&job["jobId"])),
        ("Name", text(&job["jobName"])),
        ("Queue", text(&job["jobQueue"])),
        ("Definition", text(&job["jobDefinition"])),
        ("Status", text(&job["status"])),
        ("Status reason", text(&job["statusReason"])),
        ("Created", timestamp(&job["createdAt"])),
        ("Started", timestamp(&job["startedAt"])),
        ("Stopped", timestamp(&job["stoppedAt"])),
        ("Image", text(&container["image"])),
        ("Command", command.join(" ")),
        ("Retry attempts", text(&job["retryStrategy"]["attempts"])),
        (
            "Timeout",
            job["timeout"]["attemptDurationSeconds"]
                .as_u64()
                .map_or("-".into(), |s| format!("{s}s")),
        ),
    ];
    for (label, value) in fields {
        println!("{:<16}{value}", format!("{label}:"));
    }
    if let Some(reason) = job["stopRequested"].as_str() {
        println!("{:<16}{reason}", "Stop requested:");
    }
    let array = &job["arrayProperties"];
    if let Some(size) = array["size"].as_u64() {
        let counts: Vec<String> = array["statusSummary"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, count)| count.as_u64().unwrap_or(0) > 0)
            .map(|(status, count)| format!("{status} {count}"))
            .collect();
        println!("{:<16}{size} children: {}", "Array:", counts.join(", "));
    }
    if let Some(index) = array["index"].as_u64() {
        println!("{:<16}child {index}", "Array:");
    }
    if let Some(current) = job["currentAttempt"].as_object() {
        println!(
            "{:<16}#{} on {} since {}",
            "Current attempt:",
            text(&current["attemptNumber"]),
            text(&current["computeEnvironment"]),
            timestamp(&current.get("startedAt").cloned().unwrap_or(Value::Null))
        );
    }
    let rows: Vec<Vec<String>> = job["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|attempt| {
            vec![
                text(&attempt["attemptNumber"]),
                text(&attempt["computeEnvironment"]),
                text(&attempt["exitCode"]),
                timestamp(&attempt["startedAt"]),
                timestamp(&attempt["stoppedAt"]),
                text(&attempt["statusReason"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!("\nAttempts:");
        print!(
            "{}",
            table(
                &[
                    "#",
                    "ENVIRONMENT",
                    "EXIT CODE",
                    "STARTED",
                    "STOPPED",
                    "REASON"
                ],
                rows
            )
        );
    }
    Ok(())
}

/// One line per hold, in words, with the numbers.
pub fn print_why(answer: &Value, format: Format) -> anyhow::Result<()> {
    if print_structured(answer, format)? {
        return Ok(());
    }
    println!(
        "job {} is {}",
        text(&answer["jobId"]),
        text(&answer["status"])
    );
    for hold in answer["holds"].as_array().into_iter().flatten() {
        // The sentence is the core's (`Hold`'s Display, which the console shows too); a hold this
        // client does not know (a newer server) is printed as it came.
        let line = match batchctl_core::why::Hold::deserialize(hold) {
            Ok(hold) => hold.to_string(),
            Err(_) => format!("{}: {hold}", text(&hold["type"])),
        };
        println!("- {line}");
    }
    let estimate = &answer["estimatedStart"];
    if estimate.is_object() {
        let at = estimate["at"]
            .as_i64()
            .map_or("unknown".to_string(), |millis| {
                chrono::DateTime::from_timestamp_millis(millis).map_or(millis.to_string(), |at| {
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
            });
        println!("estimated start: {at}");
        for basis in estimate["restsOn"].as_array().into_iter().flatten() {
            println!("  (rests on: {})", text(basis));
        }
    }
    Ok(())
}

/// A rule's latest deliveries (`describe rule`).
pub fn print_deliveries(list: &Value) -> anyhow::Result<()> {
    let header = ["EVENT ID", "OUTCOME", "JOB ID", "REASON"];
    print_list(list, Format::Table, &header, |delivery| {
        vec![
            text(&delivery["eventId"]),
            text(&delivery["outcome"]),
            text(&delivery["jobId"]),
            text(&delivery["reason"]),
        ]
    })
}

/// One Job State Change as `get jobs --watch` prints it: a table row without a header, or the
/// event's `detail` as one JSON line, or `job/ID`.
pub fn print_job_change(event: &Value, format: Format) -> anyhow::Result<()> {
    let detail = &event["detail"];
    match format {
        Format::Json => println!("{detail}"),
        Format::Yaml => print!("---\n{}", serde_yaml_ng::to_string(detail)?),
        Format::Name => println!("job/{}", text(&detail["jobId"])),
        Format::Table | Format::Wide => println!(
            "{}   {}   {}   {}   {}",
            text(&detail["jobId"]),
            text(&detail["jobName"]),
            text(&detail["jobQueue"]),
            text(&detail["status"]),
            text(&detail["statusReason"]),
        ),
    }
    Ok(())
}
