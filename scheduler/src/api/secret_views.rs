//! Resources that hold secrets, as the API shows them: built from the model by types whose secret
//! fields are markers without a value (`Hidden`, `HiddenCount`), so no code path can serialise a
//! secret into an answer. Notification endpoints are shown redacted (`views::redacted_endpoint`):
//! services put tokens in URLs.

use serde::{Serialize, Serializer};

use super::views::redacted_endpoint;
use crate::core::event_pattern::EventPattern;
use crate::core::model::ResourceState;
use crate::core::resource::{Notification, WebhookTrigger};
use crate::core::webhooks::Profile;

/// Where a secret is set; shows as `"(hidden)"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hidden;

impl Serialize for Hidden {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("(hidden)")
    }
}

/// How many secrets are set; shows as `"(N hidden)"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiddenCount(pub usize);

impl Serialize for HiddenCount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("({} hidden)", self.0))
    }
}

/// A notification's spec, secret hidden and endpoint redacted.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSpecView {
    pub event_pattern: EventPattern,
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Hidden>,
    pub retry_policy: RetryPolicyView,
    pub state: ResourceState,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicyView {
    pub maximum_retry_attempts: u32,
}

impl From<&Notification> for NotificationSpecView {
    fn from(notification: &Notification) -> Self {
        NotificationSpecView {
            event_pattern: notification.pattern.clone(),
            endpoint: redacted_endpoint(&notification.endpoint),
            secret: notification.secret.as_ref().map(|_| Hidden),
            retry_policy: RetryPolicyView {
                maximum_retry_attempts: notification.maximum_retry_attempts,
            },
            state: if notification.enabled {
                ResourceState::Enabled
            } else {
                ResourceState::Disabled
            },
        }
    }
}

/// A webhook trigger's spec, secrets hidden.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTriggerSpecView {
    pub profile: Profile,
    pub secrets: HiddenCount,
    pub source: String,
    pub detail_type: String,
}

impl From<&WebhookTrigger> for WebhookTriggerSpecView {
    fn from(trigger: &WebhookTrigger) -> Self {
        WebhookTriggerSpecView {
            profile: trigger.profile,
            secrets: HiddenCount(trigger.secrets.len()),
            source: trigger.source.clone(),
            detail_type: trigger.detail_type.clone(),
        }
    }
}

/// A secret's spec: its value hidden.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SecretSpecView {
    pub value: Hidden,
}

impl Default for Hidden {
    fn default() -> Hidden {
        Hidden
    }
}

/// A view as the `spec` of a `ResourceView`.
pub fn spec_value(view: impl Serialize) -> serde_json::Value {
    serde_json::to_value(view).expect("views have string keys only, so they serialise to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_view() {
        let notification = Notification {
            name: "ops".into(),
            pattern: EventPattern::parse(&serde_json::json!({"source": ["batchctl"]})).unwrap(),
            endpoint: "https://user:pw@ops.example/hook?token=abc".into(),
            secret: Some("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into()),
            maximum_retry_attempts: 3,
            enabled: true,
        };
        let view = serde_json::to_value(NotificationSpecView::from(&notification)).unwrap();
        let text = view.to_string();
        assert_eq!(view["secret"], "(hidden)");
        assert!(!text.contains("whsec_") && !text.contains("abc") && !text.contains(":pw"));
        assert_eq!(view["eventPattern"]["source"][0], "batchctl");

        let trigger = WebhookTrigger {
            name: "github".into(),
            profile: Profile::Github,
            secrets: vec!["a-long-enough-secret".into(), "another-long-secret".into()],
            source: "github".into(),
            detail_type: "Webhook".into(),
        };
        let view = serde_json::to_value(WebhookTriggerSpecView::from(&trigger)).unwrap();
        assert_eq!(view["secrets"], "(2 hidden)");
        assert!(!view.to_string().contains("secret\""));
    }
}
