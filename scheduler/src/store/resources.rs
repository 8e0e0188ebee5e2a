//! Resources: compute environments, job queues, job definition revisions, schedules, rules,
//! webhook triggers and notifications. Each row keeps the spec as applied (for display, opaque
//! here) and the validated model in the store's own stored form (`stored_form`), which is what
//! reads decode: the wire format and its validation are the API's business, never the store's.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::stored_form;
use super::{Store, StoreError};
use crate::core::model::{
    ComputeEnvironment, DefinitionName, DefinitionRef, DefinitionSpec, JobDefinition, JobQueue,
    QueueName,
};
use crate::core::resource::{FieldError, Kind, Resource};

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
        // What queues and concurrency limits may name: what is stored and what this apply adds.
        let environment_names =
            known_names(&mut transaction, Kind::ComputeEnvironment, documents).await?;
        let queue_names = known_names(&mut transaction, Kind::JobQueue, documents).await?;
        let mut applied = Vec::with_capacity(documents.len());
        for (index, (resource, spec)) in documents.iter().enumerate() {
            if let Resource::JobQueue(queue) = resource {
                check_queue_references(queue, &environment_names)
                    .map_err(|error| ApplyError::Invalid { index, error })?;
            }
            if let Resource::ConcurrencyLimit(limit) = resource {
                check_limit_references(limit, &queue_names)
                    .map_err(|error| ApplyError::Invalid { index, error })?;
            }
            let (resource, spec) = self
                .sealed_for_storage(resource, spec)
                .map_err(|error| ApplyError::Invalid { index, error })?;
            let resource = &resource;
            let texts = Texts {
                spec: spec.to_string(),
                model: model_text(resource),
            };
            let result = match resource {
                Resource::JobDefinition { name, spec: model } => {
                    register_definition(&mut transaction, name, model, &texts, now).await?
                }
                Resource::ComputeEnvironment(_)
                | Resource::JobQueue(_)
                | Resource::Schedule { .. }
                | Resource::EventRule { .. }
                | Resource::WebhookTrigger(_)
                | Resource::Notification(_)
                | Resource::ConcurrencyLimit(_)
                | Resource::ConsumableResource(_)
                | Resource::Secret(_) => {
                    upsert(
                        &mut transaction,
                        table_of(resource.kind()),
                        resource.name(),
                        &texts,
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
        let rows = sqlx::query("SELECT name, model FROM compute_environments ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| model_of_row("compute_environments", row))
            .collect()
    }

    pub async fn job_queues(&self) -> Result<Vec<JobQueue>, StoreError> {
        let rows = sqlx::query("SELECT name, model FROM job_queues ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| model_of_row("job_queues", row))
            .collect()
    }

    pub async fn job_queue(&self, name: &QueueName) -> Result<Option<JobQueue>, StoreError> {
        let row = sqlx::query("SELECT name, model FROM job_queues WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref()
            .map(|row| model_of_row("job_queues", row))
            .transpose()
    }

    /// The wire specs of one kind of resource, by name, for display.
    pub async fn resource_specs(
        &self,
        kind: Kind,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let table = match kind {
            Kind::JobDefinition => {
                let definitions = self.job_definitions(None).await?;
                return Ok(definitions
                    .into_iter()
                    .map(|d| (d.definition.name.to_string(), d.spec))
                    .collect());
            }
            Kind::ComputeEnvironment
            | Kind::JobQueue
            | Kind::Schedule
            | Kind::EventRule
            | Kind::WebhookTrigger
            | Kind::Notification
            | Kind::ConcurrencyLimit
            | Kind::ConsumableResource
            | Kind::Secret => table_of(kind),
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
            "SELECT name, revision, spec, model, created_at, status FROM job_definitions \
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
            "SELECT name, revision, spec, model, created_at, status FROM job_definitions \
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

/// The names of `kind` stored, and those `documents` apply.
async fn known_names(
    transaction: &mut Transaction<'static, Any>,
    kind: Kind,
    documents: &[ValidDocument],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut names: HashSet<String> =
        sqlx::query_scalar(&format!("SELECT name FROM {}", table_of(kind)))
            .fetch_all(&mut **transaction)
            .await?
            .into_iter()
            .collect();
    names.extend(
        documents
            .iter()
            .filter(|(resource, _)| resource.kind() == kind)
            .map(|(resource, _)| resource.name().to_string()),
    );
    Ok(names)
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

fn check_limit_references(
    limit: &crate::core::concurrency::ConcurrencyLimit,
    known: &HashSet<String>,
) -> Result<(), FieldError> {
    match limit
        .job_queues
        .iter()
        .position(|name| !known.contains(name.as_str()))
    {
        Some(index) => Err(FieldError::new(
            format!("spec.jobQueues[{index}]"),
            format!(
                "job queue \"{}\" does not exist; apply it first or in the same file",
                limit.job_queues[index]
            ),
        )),
        None => Ok(()),
    }
}

/// A stored resource: its model, the spec as applied, and when it was first applied.
pub(super) struct Parsed<T> {
    pub model: T,
    pub spec: serde_json::Value,
    pub created_at: i64,
}

impl Store {
    /// The consumable resources with how much of each was used up, as placement, submits and
    /// `why` read them.
    pub async fn consumable_stock(
        &self,
    ) -> Result<Vec<crate::core::consumable::ConsumableStock>, StoreError> {
        let rows =
            sqlx::query("SELECT name, model, consumed FROM consumable_resources ORDER BY name")
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::core::consumable::ConsumableStock {
                    resource: model_of_row("consumable_resources", row)?,
                    consumed: row.try_get::<i64, _>("consumed")? as u64,
                })
            })
            .collect()
    }

    /// The concurrency limits, as placement and `why` read them.
    pub async fn concurrency_limits(
        &self,
    ) -> Result<Vec<crate::core::concurrency::ConcurrencyLimit>, StoreError> {
        Ok(self
            .parsed_resources(Kind::ConcurrencyLimit)
            .await?
            .into_iter()
            .map(|parsed| parsed.model)
            .collect())
    }
}

impl Store {
    /// Every row of a resource table, its model decoded from the stored form.
    pub(super) async fn parsed_resources<T>(&self, kind: Kind) -> Result<Vec<Parsed<T>>, StoreError>
    where
        T: serde::de::DeserializeOwned,
    {
        let table = table_of(kind);
        let rows = sqlx::query(&format!(
            "SELECT name, model, spec, created_at FROM {table} ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let text: String = row.try_get(2)?;
                Ok(Parsed {
                    model: model_of_row(table, row)?,
                    spec: serde_json::from_str(&text)
                        .map_err(|e| StoreError::corrupt(format!("{table} {name}"), e))?,
                    created_at: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Rows written before models were stored (migration 0022), with their spec as applied:
    /// the start-up upgrade validates each spec as the API would and gives it its model
    /// (`set_model`).
    pub async fn rows_without_model(&self) -> Result<Vec<UnmodelledRow>, StoreError> {
        let mut rows = Vec::new();
        for kind in Kind::ALL {
            let table = table_of(kind);
            let revision = match kind {
                Kind::JobDefinition => "revision",
                Kind::ComputeEnvironment
                | Kind::JobQueue
                | Kind::Schedule
                | Kind::EventRule
                | Kind::WebhookTrigger
                | Kind::Notification
                | Kind::ConcurrencyLimit
                | Kind::ConsumableResource
                | Kind::Secret => "0",
            };
            let found = sqlx::query(&format!(
                "SELECT name, {revision}, spec FROM {table} WHERE model IS NULL ORDER BY name"
            ))
            .fetch_all(&self.read)
            .await?;
            for row in found {
                let name: String = row.try_get(0)?;
                let spec: String = row.try_get(2)?;
                rows.push(UnmodelledRow {
                    kind,
                    revision: row.try_get::<i64, _>(1)? as u32,
                    spec: serde_json::from_str(&spec)
                        .map_err(|e| StoreError::corrupt(format!("{table} {name}"), e))?,
                    name,
                });
            }
        }
        Ok(rows)
    }

    /// Stores the model of a row `rows_without_model` listed, validated from its spec.
    pub async fn set_model(
        &self,
        row: &UnmodelledRow,
        resource: &Resource,
    ) -> Result<(), StoreError> {
        if resource.kind() != row.kind || resource.name() != row.name {
            return Err(StoreError::corrupt(
                format!("{} {}", row.kind.as_str(), row.name),
                format!(
                    "its spec reads as {} {}",
                    resource.kind().as_str(),
                    resource.name()
                ),
            ));
        }
        let table = table_of(row.kind);
        let update = format!("UPDATE {table} SET model = $1 WHERE name = $2 AND model IS NULL");
        let update_revision = format!("{update} AND revision = $3");
        let statement = match row.kind {
            Kind::JobDefinition => sqlx::query(&update_revision)
                .bind(model_text(resource))
                .bind(&row.name)
                .bind(i64::from(row.revision)),
            Kind::ComputeEnvironment
            | Kind::JobQueue
            | Kind::Schedule
            | Kind::EventRule
            | Kind::WebhookTrigger
            | Kind::Notification
            | Kind::ConcurrencyLimit
            | Kind::ConsumableResource
            | Kind::Secret => sqlx::query(&update)
                .bind(model_text(resource))
                .bind(&row.name),
        };
        statement.execute(&self.write).await?;
        self.resource_cache.invalidate();
        Ok(())
    }
}

/// A row saved before models were stored: its kind, name, revision (definitions; 0 otherwise)
/// and spec as applied.
#[derive(Debug, Clone, PartialEq)]
pub struct UnmodelledRow {
    pub kind: Kind,
    pub name: String,
    pub revision: u32,
    pub spec: serde_json::Value,
}

/// What a row keeps: the spec as applied, and the model in its stored form.
struct Texts {
    spec: String,
    model: String,
}

/// The table that keeps a kind of resource.
pub fn table_of(kind: Kind) -> &'static str {
    match kind {
        Kind::ComputeEnvironment => "compute_environments",
        Kind::JobQueue => "job_queues",
        Kind::JobDefinition => "job_definitions",
        Kind::Schedule => "schedules",
        Kind::EventRule => "event_rules",
        Kind::WebhookTrigger => "webhook_triggers",
        Kind::Notification => "notifications",
        Kind::ConcurrencyLimit => "concurrency_limits",
        Kind::ConsumableResource => "consumable_resources",
        Kind::Secret => "secrets",
    }
}

/// The stored form of a resource's model (a schedule's or rule's with its target).
pub(super) fn model_text(resource: &Resource) -> String {
    match resource {
        Resource::ComputeEnvironment(environment) => stored_form::encode(environment),
        Resource::JobQueue(queue) => stored_form::encode(queue),
        Resource::JobDefinition { spec, .. } => stored_form::encode(spec),
        Resource::Schedule { schedule, target } => stored_form::encode(&(schedule, target)),
        Resource::EventRule { rule, target } => stored_form::encode(&(rule, target)),
        Resource::WebhookTrigger(trigger) => stored_form::encode(trigger),
        Resource::Notification(notification) => stored_form::encode(notification),
        Resource::ConcurrencyLimit(limit) => stored_form::encode(limit),
        Resource::ConsumableResource(resource) => stored_form::encode(resource),
        Resource::Secret(secret) => stored_form::encode(secret),
    }
}

/// The model of a row with `name` and `model` columns.
fn model_of_row<T: serde::de::DeserializeOwned>(
    table: &str,
    row: &AnyRow,
) -> Result<T, StoreError> {
    let name: String = row.try_get("name")?;
    let model: Option<String> = row.try_get("model")?;
    stored_form::decode(&format!("{table} {name}"), model.as_deref())
}

async fn upsert(
    transaction: &mut Transaction<'static, Any>,
    table: &str,
    name: &str,
    texts: &Texts,
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
                "INSERT INTO {table} (name, spec, model, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4)"
            ))
            .bind(name)
            .bind(&texts.spec)
            .bind(&texts.model)
            .bind(now)
            .execute(&mut **transaction)
            .await?;
            AppliedAction::Created
        }
        Some(existing) if same_json(&existing, &texts.spec) => AppliedAction::Unchanged,
        Some(_) => {
            sqlx::query(&format!(
                "UPDATE {table} SET spec = $2, model = $3, updated_at = $4 WHERE name = $1"
            ))
            .bind(name)
            .bind(&texts.spec)
            .bind(&texts.model)
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
    texts: &Texts,
    now: i64,
) -> Result<(AppliedAction, Option<u32>), ApplyError> {
    let latest = sqlx::query(
        "SELECT name, revision, spec, model, created_at, status FROM job_definitions WHERE name = $1 \
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
        "INSERT INTO job_definitions (name, revision, spec, model, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name.as_str())
    .bind(i64::from(revision))
    .bind(&texts.spec)
    .bind(&texts.model)
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

/// A queue from its stored form (`model` column text).
pub(super) fn queue_from_model(name: &str, text: Option<&str>) -> Result<JobQueue, StoreError> {
    stored_form::decode(&format!("job_queues {name}"), text)
}

/// A compute environment from its stored form (`model` column text).
pub(super) fn environment_from_model(
    name: &str,
    text: Option<&str>,
) -> Result<ComputeEnvironment, StoreError> {
    stored_form::decode(&format!("compute_environments {name}"), text)
}

fn definition_from_row(row: &AnyRow) -> Result<StoredDefinition, StoreError> {
    let (name, spec) = name_and_spec(row)?;
    let revision: i64 = row.try_get("revision")?;
    let created_at: i64 = row.try_get("created_at")?;
    let status: String = row.try_get("status")?;
    let model: Option<String> = row.try_get("model")?;
    let model = stored_form::decode(
        &format!("job_definitions {name} revision {revision}"),
        model.as_deref(),
    )?;
    let name = DefinitionName::try_from(name).map_err(|e| corrupt(&spec, e))?;
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
