//! `kind: WebhookTrigger`: signed inbound deliveries that become events.

use super::*;

/// `kind: WebhookTrigger`: `POST /v1/hooks/NAME` takes any JSON a third party sends, checks its
/// signature, and puts it on the bus as an event's detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookTriggerSpec {
    pub profile: Profile,
    pub secrets: Vec<String>,
    pub source: String,
    #[serde(default)]
    pub detail_type: Option<String>,
}

pub fn webhook_trigger(
    name: String,
    spec: &WebhookTriggerSpec,
) -> Result<WebhookTrigger, FieldError> {
    use base64::Engine as _;
    if spec.secrets.is_empty() {
        return Err(FieldError::new(
            "secrets",
            "is empty; give at least one (several while rotating)",
        ));
    }
    for (index, secret) in spec.secrets.iter().enumerate() {
        let field = format!("secrets[{index}]");
        match spec.profile {
            Profile::StandardWebhooks => {
                let key = secret.strip_prefix("whsec_").unwrap_or(secret);
                let decoded = base64::engine::general_purpose::STANDARD.decode(key);
                if decoded.map_or(true, |key| key.len() < 16) {
                    return Err(FieldError::new(
                        field,
                        "is not a Standard Webhooks secret: whsec_ followed by at least 16 base64 bytes",
                    ));
                }
            }
            Profile::Github if secret.len() < 16 => {
                return Err(FieldError::new(
                    field,
                    "is shorter than 16 characters; use a long random secret",
                ));
            }
            Profile::Github => {}
        }
    }
    let source = spec.source.trim();
    if source.is_empty() || crate::core::audit::is_reserved_source(source) {
        return Err(FieldError::new(
            "source",
            "names where the events come from; not empty, and not batchctl or batchctl.* (reserved)",
        ));
    }
    Ok(WebhookTrigger {
        name,
        profile: spec.profile,
        secrets: spec
            .secrets
            .iter()
            .map(|secret| crate::core::secret::SecretText::new(secret.clone()))
            .collect(),
        source: source.to_string(),
        detail_type: spec.detail_type.clone().unwrap_or_else(|| "Webhook".into()),
    })
}
