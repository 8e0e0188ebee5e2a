//! The stored form of resources: the validated model, serialised with serde inside an envelope
//! that carries the form's version. The store owns this form; it never reads the API's wire
//! format, so reading a row runs none of the apply-time validation again. A rule tightened
//! in a later release cannot turn a row saved under the old rule into an error.
//!
//! Changing a model type's serde shape changes the form: add fields with `#[serde(default)]`, or
//! bump `FORMAT` and convert older envelopes here. `scheduler/tests/stored_forms.rs` holds a row
//! of every kind as format 1 wrote it and checks that it still loads.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The version of the stored form this build writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    format: u32,
    model: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    format: u32,
    model: T,
}

/// The text stored in a resource row's `model` column.
pub fn encode<T: Serialize>(model: &T) -> String {
    serde_json::to_string(&EnvelopeOut {
        format: FORMAT,
        model,
    })
    .expect("model types serialise to JSON (string keys only)")
}

/// The model of the row `what`; `None` is a row written before models were stored, which the
/// server's start-up upgrade fills in.
pub fn decode<T: DeserializeOwned>(what: &str, text: Option<&str>) -> Result<T, StoreError> {
    let text = text.ok_or_else(|| {
        StoreError::corrupt(
            what,
            "saved before resources kept a stored model (migration 0022) and not upgraded yet; start `batchctl server` once to upgrade it",
        )
    })?;
    let envelope: EnvelopeIn<serde_json::Value> =
        serde_json::from_str(text).map_err(|error| StoreError::corrupt(what, error))?;
    if envelope.format != FORMAT {
        return Err(StoreError::corrupt(
            what,
            format!(
                "stored in form {}, which this batchctl (form {FORMAT}) cannot read; run the release that wrote it, or a newer one",
                envelope.format
            ),
        ));
    }
    serde_json::from_value(envelope.model).map_err(|error| StoreError::corrupt(what, error))
}
