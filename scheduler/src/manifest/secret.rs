//! `kind: Secret`: `spec: {value: "…"}`. `spec: {valueFrom: {file: PATH}}` is read by
//! `batchctl apply` on the client's machine, which sends the file's contents as `value`; the
//! server never opens a path a request names. Parsed by hand so that no error can quote the value.

use super::*;
use crate::core::secret::{check_secret_name, check_secret_value, Secret, SecretText};

pub fn secret(name: String, spec: &serde_json::Value) -> Result<Secret, FieldError> {
    check_secret_name(&name)?;
    let Some(fields) = spec.as_object() else {
        return Err(FieldError::new(
            "spec",
            "must be an object: {value: \"…\"} or {valueFrom: {file: PATH}}",
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|key| !["value", "valueFrom"].contains(&key.as_str()))
    {
        return Err(FieldError::new(
            format!("spec.{unknown}"),
            "is not a field of a Secret; give value, or valueFrom.file",
        ));
    }
    match (fields.get("value"), fields.get("valueFrom")) {
        (Some(serde_json::Value::String(value)), None) => {
            check_secret_value(value)?;
            Ok(Secret {
                name,
                value: SecretText::new(value.clone()),
            })
        }
        (Some(_), None) => Err(FieldError::new(
            "spec.value",
            "must be a string (its value is not shown)",
        )),
        (None, Some(_)) => Err(FieldError::new(
            "spec.valueFrom",
            "is read by `batchctl apply -f`, which sends the file's contents as value; the server reads no files a request names",
        )),
        (Some(_), Some(_)) => Err(FieldError::new(
            "spec",
            "gives both value and valueFrom; give one",
        )),
        (None, None) => Err(FieldError::new(
            "spec.value",
            "is required: give the secret's value, or valueFrom.file to read it from a file",
        )),
    }
}
