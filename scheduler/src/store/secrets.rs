//! Secret values at rest. Every value a resource holds in secret — a `kind: Secret`'s value, a
//! webhook trigger's secrets, a notification's signing secret — is sealed (`crate::sealing`)
//! before its row is written, in the model column; the spec column as applied keeps a keyed digest
//! in its place. A value is unsealed where it is used (`unsealed_secret`), never to list or
//! match. Without a key the store refuses to keep a secret at all.
//!
//! Invariants: no secret value is written to the database in the clear; a row sealed under a key
//! this server was not given fails to read with a message naming the key, never as garbage;
//! `reseal` moves every sealed value to the current key in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use sqlx::Row;

use super::resources::table_of;
use super::stored_form;
use super::{Store, StoreError};
use crate::core::resource::{FieldError, Kind, Resource, WebhookTrigger};
use crate::core::secret::{Secret, SecretText};
use crate::sealing::{self, Keyring};

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretListing {
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What `reseal` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Values moved to the current key, or sealed for the first time.
    pub values: usize,
    /// Values stored in the clear by an earlier release that stay so, for want of a key.
    pub left_in_the_clear: usize,
}

/// The kinds whose rows hold secret values.
const SEALED_KINDS: [Kind; 3] = [Kind::Secret, Kind::WebhookTrigger, Kind::Notification];

impl Store {
    /// This store, sealing and unsealing secrets with `keyring`.
    pub fn with_keyring(self, keyring: Arc<Keyring>) -> Store {
        Store {
            keyring: Some(keyring),
            ..self
        }
    }

    /// The resource as its row keeps it (secret values sealed) and its spec as applied with each
    /// value replaced by a digest. Fails, naming the field, when a secret must be kept and this
    /// store has no key.
    pub(super) fn sealed_for_storage(
        &self,
        resource: &Resource,
        spec: &Value,
    ) -> Result<(Resource, Value), FieldError> {
        let mut spec = spec.clone();
        let mut resource = resource.clone();
        let fields = secret_fields(&mut resource);
        if fields.values.is_empty() {
            return Ok((resource, spec));
        }
        let keyring = self.keyring.as_deref().ok_or_else(|| {
            FieldError::new(
                format!("spec.{}", fields.field),
                format!(
                    "cannot be stored: this server has no secret key to seal it with; {}",
                    sealing::HOW_TO_MAKE_A_KEY
                ),
            )
        })?;
        let digests: Vec<Value> = fields
            .values
            .iter()
            .map(|value| Value::String(keyring.digest(value.expose())))
            .collect();
        for value in fields.values {
            *value = SecretText::new(keyring.seal(value.expose()));
        }
        if let Some(slot) = spec.pointer_mut(&format!("/{}", fields.field)) {
            *slot = match fields.shape {
                Shape::One => digests.into_iter().next().unwrap_or(Value::Null),
                Shape::List => Value::Array(digests),
            };
        }
        Ok((resource, spec))
    }

    /// `trigger` with its secrets unsealed.
    pub(super) fn unsealed_trigger(
        &self,
        mut trigger: WebhookTrigger,
    ) -> Result<WebhookTrigger, StoreError> {
        for secret in &mut trigger.secrets {
            *secret = self.unsealed_secret(&format!("webhook trigger {}", trigger.name), secret)?;
        }
        Ok(trigger)
    }

    /// The values of the named secrets, by name; a name that is not stored is absent.
    pub async fn secret_values(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, SecretText>, StoreError> {
        let mut values = BTreeMap::new();
        for name in names {
            let row = sqlx::query("SELECT name, model FROM secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.read)
                .await?;
            let Some(row) = row else { continue };
            let model: Option<String> = row.try_get("model")?;
            let secret: Secret = stored_form::decode(&format!("secret {name}"), model.as_deref())?;
            let value = self.unsealed_secret(&format!("secret {name}"), &secret.value)?;
            values.insert(name.to_string(), value);
        }
        Ok(values)
    }

    /// The spec of a resource other than a job definition as applied, with its secret values
    /// (if its kind holds any) in place of their digests: what a merge patch starts from. Never
    /// shown to anyone; validated again as applied.
    pub async fn spec_for_patch(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Value>, StoreError> {
        let table = table_of(kind);
        let row = sqlx::query(&format!("SELECT spec, model FROM {table} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let what = format!("{table} {name}");
        let spec: String = row.try_get(0)?;
        let mut spec: Value =
            serde_json::from_str(&spec).map_err(|error| StoreError::corrupt(&what, error))?;
        if !SEALED_KINDS.contains(&kind) {
            return Ok(Some(spec));
        }
        let model: Option<String> = row.try_get(1)?;
        let mut resource = decode_sealed_kind(kind, &what, model.as_deref().unwrap_or("null"))?;
        let fields = secret_fields(&mut resource);
        let mut values = Vec::with_capacity(fields.values.len());
        for value in fields.values.iter() {
            values.push(Value::String(
                self.unsealed_secret(&what, value)?.expose().to_string(),
            ));
        }
        if let Some(slot) = spec.pointer_mut(&format!("/{}", fields.field)) {
            *slot = match fields.shape {
                Shape::One => values.into_iter().next().unwrap_or(Value::Null),
                Shape::List => Value::Array(values),
            };
        }
        Ok(Some(spec))
    }

    /// Every secret's name and times, never a value.
    pub async fn secrets(&self) -> Result<Vec<SecretListing>, StoreError> {
        let rows = sqlx::query("SELECT name, created_at, updated_at FROM secrets ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SecretListing {
                    name: row.try_get(0)?,
                    created_at: row.try_get(1)?,
                    updated_at: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Moves every sealed value to the current key and seals what an earlier release stored in
    /// the clear, in one transaction. Without a key it changes nothing, counts what is in the
    /// clear, and fails if anything is sealed (nothing could read it).
    pub async fn reseal(&self) -> Result<Resealed, StoreError> {
        let mut transaction = self.write.begin().await?;
        let mut report = Resealed::default();
        for kind in SEALED_KINDS {
            let table = table_of(kind);
            let rows = sqlx::query(&format!(
                "SELECT name, spec, model FROM {table} ORDER BY name"
            ))
            .fetch_all(&mut *transaction)
            .await?;
            for row in rows {
                let name: String = row.try_get(0)?;
                let what = format!("{table} {name}");
                let spec: String = row.try_get(1)?;
                let model: Option<String> = row.try_get(2)?;
                let Some(model) = model else { continue };
                let mut resource = decode_sealed_kind(kind, &what, &model)?;
                let fields = secret_fields(&mut resource);
                let Some(keyring) = self.keyring.as_deref() else {
                    if fields
                        .values
                        .iter()
                        .any(|value| sealing::is_sealed(value.expose()))
                    {
                        return Err(StoreError::corrupt(
                            what,
                            format!("it holds sealed secrets and this server has no key to read them; start it with the key that sealed them (--secret-key-file), or {}", sealing::HOW_TO_MAKE_A_KEY),
                        ));
                    }
                    report.left_in_the_clear += fields.values.len();
                    continue;
                };
                if fields
                    .values
                    .iter()
                    .all(|value| keyring.is_current(value.expose()))
                {
                    continue;
                }
                let mut plain = Vec::with_capacity(fields.values.len());
                for value in fields.values.iter() {
                    plain.push(match sealing::is_sealed(value.expose()) {
                        true => keyring
                            .unseal(value.expose())
                            .map_err(|error| StoreError::corrupt(&what, error))?,
                        false => (*value).clone(),
                    });
                }
                report.values += plain.len();
                let mut unsealed = resource.clone();
                let unsealed_fields = secret_fields(&mut unsealed);
                for (slot, value) in unsealed_fields.values.into_iter().zip(plain) {
                    *slot = value;
                }
                let spec: Value = serde_json::from_str(&spec)
                    .map_err(|error| StoreError::corrupt(&what, error))?;
                let (sealed, spec) = self
                    .sealed_for_storage(&unsealed, &spec)
                    .map_err(|error| StoreError::corrupt(&what, error))?;
                sqlx::query(&format!(
                    "UPDATE {table} SET model = $1, spec = $2 WHERE name = $3"
                ))
                .bind(super::resources::model_text(&sealed))
                .bind(spec.to_string())
                .bind(&name)
                .execute(&mut *transaction)
                .await?;
            }
        }
        transaction.commit().await?;
        self.resource_cache.invalidate();
        Ok(report)
    }

    /// The value of a secret as a resource's model keeps it (sealed, or in the clear from a release
    /// before sealing); `what` names its owner in errors.
    pub fn unsealed_secret(
        &self,
        what: &str,
        stored: &SecretText,
    ) -> Result<SecretText, StoreError> {
        if !sealing::is_sealed(stored.expose()) {
            // Stored in the clear by a release before sealing; `reseal` seals it once a key is given.
            return Ok(stored.clone());
        }
        let keyring = self.keyring.as_deref().ok_or_else(|| {
            StoreError::corrupt(
                what,
                format!(
                    "it is sealed and this server has no key; {}",
                    sealing::HOW_TO_MAKE_A_KEY
                ),
            )
        })?;
        keyring
            .unseal(stored.expose())
            .map_err(|error| StoreError::corrupt(what, error))
    }
}

/// Whether a field holds one secret or a list of them.
enum Shape {
    One,
    List,
}

/// The secret values a resource holds, and the field of its spec that holds them.
struct SecretFields<'a> {
    field: &'static str,
    shape: Shape,
    values: Vec<&'a mut SecretText>,
}

fn secret_fields(resource: &mut Resource) -> SecretFields<'_> {
    match resource {
        Resource::Secret(secret) => SecretFields {
            field: "value",
            shape: Shape::One,
            values: vec![&mut secret.value],
        },
        Resource::WebhookTrigger(trigger) => SecretFields {
            field: "secrets",
            shape: Shape::List,
            values: trigger.secrets.iter_mut().collect(),
        },
        Resource::Notification(notification) => SecretFields {
            field: "secret",
            shape: Shape::One,
            values: notification.secret.iter_mut().collect(),
        },
        Resource::ComputeEnvironment(_)
        | Resource::JobQueue(_)
        | Resource::JobDefinition { .. }
        | Resource::Schedule { .. }
        | Resource::EventRule { .. }
        | Resource::ConcurrencyLimit(_)
        | Resource::ConsumableResource(_) => SecretFields {
            field: "",
            shape: Shape::One,
            values: Vec::new(),
        },
    }
}

/// A row of a kind that holds secrets, decoded from its stored form.
fn decode_sealed_kind(kind: Kind, what: &str, model: &str) -> Result<Resource, StoreError> {
    Ok(match kind {
        Kind::Secret => Resource::Secret(Box::new(stored_form::decode(what, Some(model))?)),
        Kind::WebhookTrigger => {
            Resource::WebhookTrigger(Box::new(stored_form::decode(what, Some(model))?))
        }
        Kind::Notification => {
            Resource::Notification(Box::new(stored_form::decode(what, Some(model))?))
        }
        Kind::ComputeEnvironment
        | Kind::JobQueue
        | Kind::JobDefinition
        | Kind::Schedule
        | Kind::EventRule
        | Kind::ConcurrencyLimit
        | Kind::ConsumableResource => {
            return Err(StoreError::corrupt(what, "this kind holds no secrets"))
        }
    })
}
