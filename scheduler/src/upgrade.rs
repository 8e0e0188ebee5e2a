//! Start-up upgrades that need the wire format, which the store never reads. Rows saved before
//! resources kept their model (migration 0022) get it from their spec, validated exactly as an
//! apply validates it. Runs before anything reads resources; a later start finds nothing to do.

use crate::manifest::{self, FieldError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{kind} {name}, saved by an earlier batchctl, no longer validates: {error}; with the release that saved it, apply it fixed or delete it, then start this one again")]
    Invalid {
        kind: &'static str,
        name: String,
        error: FieldError,
    },
}

/// Gives every row without a model its model; returns how many it upgraded.
pub async fn stored_models(store: &Store) -> Result<usize, UpgradeError> {
    let rows = store.rows_without_model().await?;
    for row in &rows {
        let document = serde_json::json!({
            "apiVersion": manifest::API_VERSION,
            "kind": row.kind.as_str(),
            "metadata": {"name": row.name},
            "spec": row.spec,
        });
        let resource =
            manifest::parse_document(&document).map_err(|error| UpgradeError::Invalid {
                kind: row.kind.as_str(),
                name: row.name.clone(),
                error,
            })?;
        store.set_model(row, &resource).await?;
    }
    if !rows.is_empty() {
        store.refresh_job_event_interest().await?;
        tracing::info!(
            rows = rows.len(),
            "stored the models of resources saved by an earlier batchctl"
        );
    }
    Ok(rows.len())
}

/// Seals what an earlier release stored in the clear and moves what an earlier key sealed to the
/// current key (`Store::reseal`). Without a key, says how many secrets are still in the clear.
pub async fn sealed_secrets(
    store: &Store,
    keyring: Option<&crate::sealing::Keyring>,
) -> Result<crate::store::Resealed, UpgradeError> {
    let resealed = store.reseal().await?;
    if resealed.values > 0 {
        tracing::info!(
            values = resealed.values,
            key = keyring.map(|keyring| keyring.current_key_id()),
            "sealed secret values with the current key"
        );
    }
    if resealed.left_in_the_clear > 0 {
        tracing::warn!(
            values = resealed.left_in_the_clear,
            "secrets of webhook triggers or notifications are stored in the clear by an earlier batchctl; {}",
            crate::sealing::HOW_TO_MAKE_A_KEY
        );
    }
    Ok(resealed)
}
