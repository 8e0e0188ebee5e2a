//! `kind: Notification`: outbound deliveries of matching events.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationSpec {
    pub event_pattern: serde_json::Value,
    pub endpoint: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicySpec>,
    #[serde(default)]
    pub state: Option<ResourceState>,
}

/// EventBridge's target RetryPolicy (the attempts part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicySpec {
    pub maximum_retry_attempts: u32,
}

/// EventBridge's ceiling on retries.
pub(super) const MAX_NOTIFICATION_RETRIES: u32 = 185;

pub fn notification(name: String, spec: &NotificationSpec) -> Result<Notification, FieldError> {
    use base64::Engine as _;
    let pattern = EventPattern::parse(&spec.event_pattern)
        .map_err(|error| FieldError::new(format!("eventPattern.{}", error.path), error.message))?;
    let endpoint = spec.endpoint.trim();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(FieldError::new(
            "endpoint",
            format!("{endpoint:?} is not an http:// or https:// URL"),
        ));
    }
    if let Some(secret) = &spec.secret {
        let key = secret.strip_prefix("whsec_").unwrap_or(secret);
        if base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_or(true, |key| key.len() < 16)
        {
            return Err(FieldError::new(
                "secret",
                "is not a Standard Webhooks secret: whsec_ followed by at least 16 base64 bytes",
            ));
        }
    }
    let maximum_retry_attempts = spec
        .retry_policy
        .as_ref()
        .map_or(5, |p| p.maximum_retry_attempts);
    if maximum_retry_attempts > MAX_NOTIFICATION_RETRIES {
        return Err(FieldError::new(
            "retryPolicy.maximumRetryAttempts",
            format!("is {maximum_retry_attempts}; give 0 to {MAX_NOTIFICATION_RETRIES}"),
        ));
    }
    Ok(Notification {
        name,
        pattern,
        endpoint: endpoint.to_string(),
        secret: spec
            .secret
            .clone()
            .map(crate::core::secret::SecretText::new),
        maximum_retry_attempts,
        enabled: spec.state.unwrap_or(ResourceState::Enabled) == ResourceState::Enabled,
    })
}
