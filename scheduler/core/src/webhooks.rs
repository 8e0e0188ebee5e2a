//! Webhook signatures: whether a delivery to `POST /v1/hooks/NAME` really comes from whoever holds
//! the trigger's secret. Pure: headers, body, secrets and `now` in, a verdict out.
//!
//! - Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` …):
//!   HMAC-SHA256 over `id.timestamp.body` with the base64 key after `whsec_`; the timestamp must be
//!   within 5 minutes of now; any of several signatures and any of several secrets (rotation) may
//!   match.
//! - GitHub (`X-Hub-Signature-256: sha256=<hex>`, `X-GitHub-Delivery`, `X-GitHub-Event`):
//!   HMAC-SHA256 over the body with the secret's bytes.
//!
//! Comparisons are constant-time (`Mac::verify_slice`).

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far a Standard Webhooks timestamp may be from now.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The most signatures a Standard Webhooks delivery may carry (a sender lists one per secret it
/// signs with while rotating; a handful is plenty). More is refused before any is checked, so a
/// delivery costs at most one MAC per secret of the trigger.
pub const MAX_SIGNATURES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    StandardWebhooks,
    Github,
}

/// A delivery whose signature holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id of this delivery: a second delivery with it is a replay.
    pub delivery_id: String,
    /// GitHub's event name (`push`, …), when the profile carries one.
    pub event_name: Option<String>,
}

/// Why a delivery is refused (answered 401, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// `headers` have lower-case names.
pub fn verify(
    profile: Profile,
    secrets: &[String],
    headers: &BTreeMap<String, String>,
    body: &[u8],
    now_seconds: i64,
) -> Result<Verified, Rejected> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Rejected(format!("the {name} header is missing")))
    };
    match profile {
        Profile::StandardWebhooks => {
            let id = header("webhook-id")?;
            let timestamp = header("webhook-timestamp")?;
            let sent: i64 = timestamp
                .parse()
                .map_err(|_| Rejected("webhook-timestamp is not seconds since the epoch".into()))?;
            if (now_seconds - sent).abs() > TOLERANCE_SECONDS {
                return Err(Rejected(format!(
                    "webhook-timestamp is more than {TOLERANCE_SECONDS} s from now; a stale or replayed delivery"
                )));
            }
            let entries: Vec<&str> = header("webhook-signature")?
                .split_whitespace()
                .take(MAX_SIGNATURES + 1)
                .collect();
            if entries.len() > MAX_SIGNATURES {
                return Err(Rejected(format!(
                    "webhook-signature lists more than {MAX_SIGNATURES} signatures"
                )));
            }
            let signatures: Vec<Vec<u8>> = entries
                .iter()
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .filter_map(|encoded| {
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .ok()
                })
                .collect();
            let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
            signed.extend_from_slice(id.as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(timestamp.as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(body);
            // One MAC per secret, compared with every signature.
            let valid = secrets.iter().any(|secret| {
                let key = secret.strip_prefix("whsec_").unwrap_or(secret);
                let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key) else {
                    return false;
                };
                let Some(expected) = mac(&key, &signed) else {
                    return false;
                };
                signatures
                    .iter()
                    .any(|signature| bool::from(expected.as_slice().ct_eq(signature)))
            });
            if !valid {
                return Err(Rejected(
                    "no webhook-signature matches a secret of this trigger".into(),
                ));
            }
            Ok(Verified {
                delivery_id: id.to_string(),
                event_name: None,
            })
        }
        Profile::Github => {
            let signature = header("x-hub-signature-256")?;
            let signature = signature
                .strip_prefix("sha256=")
                .and_then(|hex_text| hex::decode(hex_text).ok())
                .ok_or_else(|| Rejected("X-Hub-Signature-256 is not sha256=<hex>".into()))?;
            let valid = secrets.iter().any(|secret| {
                mac(secret.as_bytes(), body)
                    .is_some_and(|expected| bool::from(expected.as_slice().ct_eq(&signature)))
            });
            if !valid {
                return Err(Rejected(
                    "X-Hub-Signature-256 does not match a secret of this trigger".into(),
                ));
            }
            Ok(Verified {
                delivery_id: header("x-github-delivery")?.to_string(),
                event_name: headers.get("x-github-event").cloned(),
            })
        }
    }
}

/// HMAC-SHA256 of `message` under `key`.
fn mac(key: &[u8], message: &[u8]) -> Option<[u8; 32]> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(message);
    Some(mac.finalize().into_bytes().into())
}

/// Signs as a Standard Webhooks sender does (for outbound notifications and tests).
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = HmacSha256::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Signs as GitHub does (`sha256=<hex>`), for tests and for senders that imitate it.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_795_000_000;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn standard(id: &str, timestamp: i64, signature: &str) -> BTreeMap<String, String> {
        headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", &timestamp.to_string()),
            ("webhook-signature", signature),
        ])
    }

    #[test]
    fn standard_webhooks_signatures() {
        let body = br#"{"type":"invoice.paid"}"#;
        let good = standard_signature(SECRET, "msg_1", NOW, body).unwrap();
        let other =
            standard_signature("whsec_b3RoZXIgc2VjcmV0IGtleQ==", "msg_1", NOW, body).unwrap();
        let secrets = vec![SECRET.to_string()];
        let rotated = vec![
            "whsec_b3RoZXIgc2VjcmV0IGtleQ==".to_string(),
            SECRET.to_string(),
        ];
        /// Headers, secrets, body, and the delivery id expected or part of the refusal.
        type Case<'a> = (
            BTreeMap<String, String>,
            &'a [String],
            &'a [u8],
            Result<&'a str, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (standard("msg_1", NOW, &good), &secrets, body, Ok("msg_1")),
            // Several signatures, one valid; several secrets (rotation), one matching.
            (
                standard("msg_1", NOW, &format!("{other} {good}")),
                &secrets,
                body,
                Ok("msg_1"),
            ),
            (standard("msg_1", NOW, &other), &rotated, body, Ok("msg_1")),
            (
                standard("msg_1", NOW - 299, &good.replace("msg", "x")),
                &secrets,
                body,
                Err("no webhook-signature matches"),
            ),
            (
                standard("msg_1", NOW, &other),
                &secrets,
                body,
                Err("no webhook-signature matches"),
            ),
            // Many signatures are refused before any MAC is computed.
            (
                standard("msg_1", NOW, &format!("{} {good}", "v1,AA== ".repeat(8))),
                &secrets,
                body,
                Err("more than 8 signatures"),
            ),
            (
                standard("msg_1", NOW, &good),
                &secrets,
                br#"{"type":"invoice.unpaid"}"#,
                Err("no webhook-signature matches"),
            ),
            (
                standard("msg_2", NOW, &good),
                &secrets,
                body,
                Err("no webhook-signature matches"),
            ),
            (
                standard(
                    "msg_1",
                    NOW - 301,
                    &standard_signature(SECRET, "msg_1", NOW - 301, body).unwrap(),
                ),
                &secrets,
                body,
                Err("more than 300 s from now"),
            ),
            (
                headers(&[("webhook-id", "msg_1")]),
                &secrets,
                body,
                Err("webhook-timestamp header is missing"),
            ),
        ];
        for (headers, secrets, body, expected) in cases {
            let got = verify(Profile::StandardWebhooks, secrets, &headers, body, NOW);
            match (got, expected) {
                (Ok(verified), Ok(id)) => assert_eq!(verified.delivery_id, id),
                (Err(Rejected(reason)), Err(expected)) => {
                    assert!(reason.contains(expected), "{reason}")
                }
                (got, expected) => panic!("{headers:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn github_signatures() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let secret = vec!["It's a Secret to Everybody".to_string()];
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let good = headers(&[
            ("x-hub-signature-256", signature),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("x-github-event", "push"),
        ]);
        assert_eq!(github_signature(&secret[0], body), signature);
        let verified = verify(Profile::Github, &secret, &good, body, NOW).unwrap();
        assert_eq!(verified.delivery_id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(verified.event_name.as_deref(), Some("push"));
        let wrong = vec!["another secret".to_string()];
        assert!(verify(Profile::Github, &wrong, &good, body, NOW).is_err());
        assert!(verify(Profile::Github, &secret, &good, b"Hello, World?", NOW).is_err());
        let mut bad_form = good.clone();
        bad_form.insert("x-hub-signature-256".into(), "sha1=abc".into());
        assert!(verify(Profile::Github, &secret, &bad_form, body, NOW)
            .unwrap_err()
            .0
            .contains("is not sha256=<hex>"));
    }
}
