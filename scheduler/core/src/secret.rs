//! Secrets: `kind: Secret`, and what job definitions ask of them (AWS Batch's
//! `secrets: [{name, valueFrom}]`). A value is a `SecretText`, which never prints itself, so a
//! `{:?}` of a resource, a spec or an attempt cannot put it in a log line. Sealing values at rest
//! is the store's business (it needs a key and randomness); this module only says what a valid
//! secret and a valid reference are.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::contract::SecretVariable;
use crate::resource::FieldError;

/// The most bytes a secret's value may hold (AWS Secrets Manager's limit).
pub const MAX_SECRET_BYTES: usize = 65_536;

/// A secret value. `Debug` and `Display` show `(hidden)`; `expose` is the one way to read it,
/// and is called only where the value is used (an attempt's environment, a signature).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(value: impl Into<String>) -> SecretText {
        SecretText(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretText {
    fn from(value: &str) -> SecretText {
        SecretText::new(value)
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(hidden)")
    }
}

impl fmt::Display for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(hidden)")
    }
}

/// `kind: Secret`: a named value the store keeps sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
    pub value: SecretText,
}

/// One entry of a definition's `secrets`: the variable `name` is set to the value of the secret
/// `value_from` when an attempt starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    pub name: String,
    pub value_from: String,
}

/// The variables an attempt gets from `references`, given the stored values by secret name; a
/// secret that is not stored fails the attempt's start, as AWS Batch fails a job whose secret
/// cannot be read.
pub fn secret_variables(
    references: &[SecretReference],
    values: &BTreeMap<String, SecretText>,
) -> Result<Vec<SecretVariable>, String> {
    references
        .iter()
        .map(|reference| {
            let value = values.get(&reference.value_from).ok_or_else(|| {
                format!(
                    "the secret {:?} (for the variable {}) does not exist; apply a kind: Secret of that name, then retry the job",
                    reference.value_from, reference.name
                )
            })?;
            Ok(SecretVariable {
                name: reference.name.clone(),
                value: value.clone(),
            })
        })
        .collect()
}

/// Checks a secret's name: AWS Secrets Manager's characters (letters, digits, `/_+=.@-`), 1 to
/// 512 of them.
pub fn check_secret_name(name: &str) -> Result<(), FieldError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
    if name.is_empty() || name.len() > 512 || !name.chars().all(allowed) {
        return Err(FieldError::new(
            "metadata.name",
            format!("{name:?} is not a secret name: use 1 to 512 letters, digits or /_+=.@-"),
        ));
    }
    Ok(())
}

/// Checks a secret's value: not empty, at most `MAX_SECRET_BYTES`. The message never holds the
/// value.
pub fn check_secret_value(value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(
            "spec.value",
            "is empty: give the secret's value, or valueFrom.file to read it from a file",
        ));
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(FieldError::new(
            "spec.value",
            format!(
                "holds {} bytes; a secret holds at most {MAX_SECRET_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The batchctl secret a `valueFrom` names: a secret's name as it is, or the name inside an AWS
/// Secrets Manager ARN (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf`, the random
/// suffix dropped) or an SSM parameter ARN (`arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`), so an
/// AWS Batch definition applies unchanged once secrets of those names are applied here.
pub fn secret_name_of(value_from: &str) -> Result<String, String> {
    let name = if let Some(rest) = value_from.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        match parts.as_slice() {
            [_, "secretsmanager", _, _, "secret", name_and_more] => {
                let name = name_and_more.split(':').next().unwrap_or_default();
                without_random_suffix(name).to_string()
            }
            [_, "ssm", _, _, parameter] => parameter
                .strip_prefix("parameter")
                .map(|name| name.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            _ => {
                return Err(format!(
                    "{value_from:?} is an ARN batchctl cannot read; name a batchctl secret (kind: Secret), or a Secrets Manager or SSM parameter ARN whose name is one"
                ))
            }
        }
    } else {
        value_from.to_string()
    };
    check_secret_name(&name).map_err(|_| {
        format!("{value_from:?} names no valid secret: name a batchctl secret (kind: Secret)")
    })?;
    Ok(name)
}

/// Secrets Manager appends `-` and six random characters to a secret's name in its full ARN.
fn without_random_suffix(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, suffix))
            if !base.is_empty()
                && suffix.len() == 6
                && suffix.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_print() {
        let secret = Secret {
            name: "db".into(),
            value: SecretText::new("hunter2-hunter2"),
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.value.to_string(), "(hidden)");
        assert_eq!(secret.value.expose(), "hunter2-hunter2");
    }

    #[test]
    fn value_from_names() {
        let check = |value_from: &str, expected: Result<&str, ()>| {
            let found = secret_name_of(value_from);
            assert_eq!(
                found.as_deref().map_err(|_| ()),
                expected,
                "{value_from}: {found:?}"
            );
        };
        check("db-password", Ok("db-password"));
        check("team/db_password", Ok("team/db_password"));
        check(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-password-AbC123",
            Ok("db-password"),
        );
        check(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-password",
            Ok("db-password"),
        );
        check(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbC123:username::",
            Ok("db"),
        );
        check(
            "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/token",
            Ok("prod/token"),
        );
        check("arn:aws:s3:::bucket", Err(()));
        check("", Err(()));
        check("has space", Err(()));
    }

    #[test]
    fn bounds() {
        assert!(check_secret_value("").is_err());
        assert!(check_secret_value(&"x".repeat(MAX_SECRET_BYTES)).is_ok());
        let error = check_secret_value(&"y".repeat(MAX_SECRET_BYTES + 1)).unwrap_err();
        assert!(!error.message.contains("yyy"));
        assert!(check_secret_name(&"a".repeat(513)).is_err());
    }
}
