//! Compute environments, job queues and job definition revisions.
//! Each keeps the validated wire spec it was applied with; models are rebuilt from it on load.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError};
use crate::core::model::{
    ComputeEnvironment, DefinitionName, DefinitionRef, DefinitionSpec, EnvironmentName,
    JobDefinition, JobQueue, QueueName,
};
use crate::manifest::{self, FieldError, Kind, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppliedAction {
    Created,
    Configured,
    Unchanged,
}

/// What `apply` did with one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub kind: Kind,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    pub action: AppliedAction,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A document refers to something that exists neither in the store nor in the same apply.
    #[error("documents[{index}]: {error}")]
    Invalid { index: usize, error: FieldError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> ApplyError {
        ApplyError::Store(error.into())
    }
}

/// A definition revision with the wire spec it was registered with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDefinition {
    pub definition: JobDefinition,
    pub spec: serde_json::Value,
    pub created_at: i64,
    /// False once deregistered (INACTIVE): jobs that used it still show it, new submits are refused.
    pub active: bool,
}

/// A validated document and the spec JSON to keep for it.
pub type ValidDocument = (Resource, serde_json::Value);

impl Store {
    /// Applies every document in one transaction, or none of them.
    pub async fn apply(
        &self,
        documents: &[ValidDocument],
        now: i64,
    ) -> Result<Vec<Applied>, ApplyError> {
        self.apply_by(documents, now, None).await
    }

    /// `apply`, with an audit event for each change `caller` made (`core::audit`), written in
    /// the same transaction.
    pub async fn apply_by(
        &self,
        documents: &[ValidDocument],
        now: i64,
        caller: Option<crate::core::audit::Caller>,
    ) -> Result<Vec<Applied>, ApplyError> {
        let mut transaction = self.write.begin().await?;
        let mut environment_names: HashSet<String> =
            sqlx::query("SELECT name FROM compute_environments")
                .fetch_all(&mut *transaction)
                .await?
                .iter()
                .map(|row| row.get::<String, _>(0))
                .collect();
        environment_names.extend(documents.iter().filter_map(|(resource, _)| match resource {
            Resource::ComputeEnvironment(environment) => Some(environment.name.to_string()),
            Resource::JobQueue(_)
            | Resource::JobDefinition { .. }
            | Resource::Schedule { .. }
            | Resource::EventRule { .. }
            | Resource::WebhookTrigger(_)
            | Resource::Notification(_) => None,
        }));
        let mut applied = Vec::with_capacity(documents.len());
        for (index, (resource, spec)) in documents.iter().enumerate() {
            if let Resource::JobQueue(queue) = resource {
                check_queue_references(queue, &environment_names)
                    .map_err(|error| ApplyError::Invalid { index, error })?;
            }
            let spec_text = spec.to_string();
            let result = match resource {
                Resource::ComputeEnvironment(environment) => {
                    upsert(
                        &mut transaction,
                        "compute_environments",
                        environment.name.as_str(),
                        &spec_text,
                        now,
                    )
                    .await?
                }
                Resource::JobQueue(queue) => {
                    upsert(
                        &mut transaction,
                        "job_queues",
                        queue.name.as_str(),
                        &spec_text,
                        now,
                    )
                    .await?
                }
                Resource::JobDefinition { name, spec: model } => {
                    register_definition(&mut transaction, name, model, &spec_text, now).await?
                }
                Resource::Schedule { schedule, .. } => {
                    upsert(
                        &mut transaction,
                        "schedules",
                        &schedule.name,
                        &spec_text,
                        now,
                    )
                    .await?
                }
                Resource::EventRule { rule, .. } => {
                    upsert(&mut transaction, "event_rules", &rule.name, &spec_text, now).await?
                }
                Resource::WebhookTrigger(trigger) => {
                    upsert(
                        &mut transaction,
                        "webhook_triggers",
                        &trigger.name,
                        &spec_text,
                        now,
                    )
                    .await?
                }
                Resource::Notification(notification) => {
                    upsert(
                        &mut transaction,
                        "notifications",
                        &notification.name,
                        &spec_text,
                        now,
                    )
                    .await?
                }
            };
            applied.push(Applied {
                kind: resource.kind(),
                name: resource.name().to_string(),
                revision: result.1,
                action: result.0,
            });
        }
        let changes: Vec<crate::core::audit::Change> = applied
            .iter()
            .filter_map(|applied| {
                let action = match applied.action {
                    AppliedAction::Created => "created",
                    AppliedAction::Configured => "configured",
                    AppliedAction::Unchanged => return None,
                };
                Some(crate::core::audit::Change {
                    action: action.into(),
                    kind: applied.kind.as_str().into(),
                    name: applied.name.clone(),
                    revision: applied.revision,
                    extra: Default::default(),
                })
            })
            .collect();
        super::events::write_audit(&mut transaction, self.dialect, caller, &changes).await?;
        transaction.commit().await?;
        self.resource_cache.invalidate();
        Ok(applied)
    }

    /// This installation's id, created on first use and the same for every server on this database.
    pub async fn installation_id(&self) -> Result<String, StoreError> {
        let candidate = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO installation (id, created_at) SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM installation)")
            .bind(&candidate)
            .bind(super::now_millis())
            .execute(&self.write)
            .await?;
        let id: String =
            sqlx::query_scalar("SELECT id FROM installation ORDER BY created_at LIMIT 1")
                .fetch_one(&self.write)
                .await?;
        Ok(id)
    }

    pub async fn compute_environments(&self) -> Result<Vec<ComputeEnvironment>, StoreError> {
        let rows = sqlx::query("SELECT name, spec FROM compute_environments ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                let (name, spec) = name_and_spec(row)?;
                let name = EnvironmentName::try_from(name).map_err(|e| corrupt(&spec, e))?;
                let wire = manifest::parse_strict(&spec).map_err(|e| corrupt(&spec, e))?;
                manifest::compute_environment(name, &wire).map_err(|e| corrupt(&spec, e))
            })
            .collect()
    }

    pub async fn job_queues(&self) -> Result<Vec<JobQueue>, StoreError> {
        let rows = sqlx::query("SELECT name, spec FROM job_queues ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(queue_from_row).collect()
    }

    pub async fn job_queue(&self, name: &QueueName) -> Result<Option<JobQueue>, StoreError> {
        let row = sqlx::query("SELECT name, spec FROM job_queues WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(queue_from_row).transpose()
    }

    /// The wire specs of one kind of resource, by name, for display.
    pub async fn resource_specs(
        &self,
        kind: Kind,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let table = match kind {
            Kind::ComputeEnvironment => "compute_environments",
            Kind::JobQueue => "job_queues",
            Kind::Schedule => "schedules",
            Kind::EventRule => "event_rules",
            Kind::WebhookTrigger => "webhook_triggers",
            Kind::Notification => "notifications",
            Kind::JobDefinition => {
                let definitions = self.job_definitions(None).await?;
                return Ok(definitions
                    .into_iter()
                    .map(|d| (d.definition.name.to_string(), d.spec))
                    .collect());
            }
        };
        let rows = sqlx::query(&format!("SELECT name, spec FROM {table} ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(name_and_spec).collect()
    }

    /// Every revision (of one definition, or of all), newest revision first within a name.
    pub async fn job_definitions(
        &self,
        name: Option<&DefinitionName>,
    ) -> Result<Vec<StoredDefinition>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, revision, spec, created_at, status FROM job_definitions \
             WHERE $1 = '' OR name = $1 ORDER BY name, revision DESC",
        )
        .bind(name.map(DefinitionName::as_str).unwrap_or(""))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(definition_from_row).collect()
    }

    /// The named revision, or when none is named the latest ACTIVE one (the latest of all when
    /// every revision is INACTIVE, so that a submit can say so).
    pub async fn job_definition(
        &self,
        reference: &DefinitionRef,
    ) -> Result<Option<StoredDefinition>, StoreError> {
        let row = sqlx::query(
            "SELECT name, revision, spec, created_at, status FROM job_definitions \
             WHERE name = $1 AND ($2 = 0 OR revision = $2) \
             ORDER BY CASE WHEN status = 'ACTIVE' THEN 0 ELSE 1 END, revision DESC LIMIT 1",
        )
        .bind(reference.name.as_str())
        .bind(i64::from(reference.revision.unwrap_or(0)))
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(definition_from_row).transpose()
    }
}

fn check_queue_references(queue: &JobQueue, known: &HashSet<String>) -> Result<(), FieldError> {
    match queue
        .compute_environments
        .iter()
        .find(|name| !known.contains(name.as_str()))
    {
        Some(missing) => Err(FieldError::new(
            "spec.computeEnvironmentOrder",
            format!(
                "compute environment \"{missing}\" does not exist; apply it first or in the same file"
            ),
        )),
        None => Ok(()),
    }
}

/// A stored resource rebuilt from its spec: the model, the spec as applied, and when it was
/// first applied.
pub(super) struct Parsed<T> {
    pub model: T,
    pub spec: serde_json::Value,
    pub created_at: i64,
}

impl Store {
    /// Every row of a resource table, rebuilt by `build` from its name and spec (parsed strictly
    /// into `S` first). A row that no longer parses is reported as corrupt.
    pub(super) async fn parsed_resources<S, T>(
        &self,
        table: &str,
        build: impl Fn(String, S) -> Result<T, crate::manifest::FieldError>,
    ) -> Result<Vec<Parsed<T>>, StoreError>
    where
        S: serde::de::DeserializeOwned,
    {
        let rows = sqlx::query(&format!(
            "SELECT name, spec, created_at FROM {table} ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let text: String = row.try_get(1)?;
                let corrupt =
                    |reason: String| StoreError::corrupt(format!("{table} {name}"), reason);
                let spec: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
                let parsed: S =
                    crate::manifest::parse_strict(&spec).map_err(|e| corrupt(e.to_string()))?;
                let model = build(name.clone(), parsed).map_err(|e| corrupt(e.to_string()))?;
                Ok(Parsed {
                    model,
                    spec,
                    created_at: row.try_get(2)?,
                })
            })
            .collect()
    }
}

async fn upsert(
    transaction: &mut Transaction<'static, Any>,
    table: &str,
    name: &str,
    spec: &str,
    now: i64,
) -> Result<(AppliedAction, Option<u32>), sqlx::Error> {
    let existing: Option<String> =
        sqlx::query_scalar(&format!("SELECT spec FROM {table} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut **transaction)
            .await?;
    let action = match existing {
        None => {
            sqlx::query(&format!(
                "INSERT INTO {table} (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $3)"
            ))
            .bind(name)
            .bind(spec)
            .bind(now)
            .execute(&mut **transaction)
            .await?;
            AppliedAction::Created
        }
        Some(existing) if same_json(&existing, spec) => AppliedAction::Unchanged,
        Some(_) => {
            sqlx::query(&format!(
                "UPDATE {table} SET spec = $2, updated_at = $3 WHERE name = $1"
            ))
            .bind(name)
            .bind(spec)
            .bind(now)
            .execute(&mut **transaction)
            .await?;
            AppliedAction::Configured
        }
    };
    Ok((action, None))
}

/// Adds revision n+1 unless the latest ACTIVE revision already has this spec (after a
/// deregistration, applying the same spec again registers a new revision, as AWS Batch).
async fn register_definition(
    transaction: &mut Transaction<'static, Any>,
    name: &DefinitionName,
    model: &DefinitionSpec,
    spec: &str,
    now: i64,
) -> Result<(AppliedAction, Option<u32>), ApplyError> {
    let latest = sqlx::query(
        "SELECT name, revision, spec, created_at, status FROM job_definitions WHERE name = $1 \
         ORDER BY revision DESC LIMIT 1",
    )
    .bind(name.as_str())
    .fetch_optional(&mut **transaction)
    .await?;
    let latest = latest.as_ref().map(definition_from_row).transpose()?;
    if let Some(latest) = &latest {
        if latest.active && latest.definition.spec == *model {
            return Ok((AppliedAction::Unchanged, Some(latest.definition.revision)));
        }
    }
    let revision = latest.map_or(1, |latest| latest.definition.revision + 1);
    sqlx::query(
        "INSERT INTO job_definitions (name, revision, spec, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(name.as_str())
    .bind(i64::from(revision))
    .bind(spec)
    .bind(now)
    .execute(&mut **transaction)
    .await?;
    Ok((AppliedAction::Created, Some(revision)))
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        (Ok(_) | Err(_), _) => false,
    }
}

fn name_and_spec(row: &AnyRow) -> Result<(String, serde_json::Value), StoreError> {
    let name: String = row.try_get("name")?;
    let spec: String = row.try_get("spec")?;
    let spec = serde_json::from_str(&spec).map_err(|e| StoreError::corrupt(&name, e))?;
    Ok((name, spec))
}

fn queue_from_row(row: &AnyRow) -> Result<JobQueue, StoreError> {
    let (name, spec) = name_and_spec(row)?;
    let name = QueueName::try_from(name).map_err(|e| corrupt(&spec, e))?;
    let wire = manifest::parse_strict(&spec).map_err(|e| corrupt(&spec, e))?;
    manifest::job_queue(name, &wire).map_err(|e| corrupt(&spec, e))
}

/// A queue rebuilt from its stored spec text.
pub(super) fn queue_from_spec(name: QueueName, text: &str) -> Result<JobQueue, StoreError> {
    let spec: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StoreError::corrupt(name.as_str(), e))?;
    let wire = manifest::parse_strict(&spec).map_err(|e| corrupt(&spec, e))?;
    manifest::job_queue(name, &wire).map_err(|e| corrupt(&spec, e))
}

/// A compute environment rebuilt from its stored spec text.
pub(super) fn environment_from_spec(
    name: EnvironmentName,
    text: &str,
) -> Result<ComputeEnvironment, StoreError> {
    let spec: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StoreError::corrupt(name.as_str(), e))?;
    let wire = manifest::parse_strict(&spec).map_err(|e| corrupt(&spec, e))?;
    manifest::compute_environment(name, &wire).map_err(|e| corrupt(&spec, e))
}

fn definition_from_row(row: &AnyRow) -> Result<StoredDefinition, StoreError> {
    let (name, spec) = name_and_spec(row)?;
    let revision: i64 = row.try_get("revision")?;
    let created_at: i64 = row.try_get("created_at")?;
    let status: String = row.try_get("status")?;
    let name = DefinitionName::try_from(name).map_err(|e| corrupt(&spec, e))?;
    let wire = manifest::parse_strict(&spec).map_err(|e| corrupt(&spec, e))?;
    let model = manifest::definition_spec(&wire).map_err(|e| corrupt(&spec, e))?;
    Ok(StoredDefinition {
        definition: JobDefinition {
            name,
            revision: revision as u32,
            spec: model,
        },
        spec,
        created_at,
        active: status == "ACTIVE",
    })
}

fn corrupt(spec: &serde_json::Value, reason: impl ToString) -> StoreError {
    StoreError::corrupt(format!("resource spec {spec}"), reason)
}
