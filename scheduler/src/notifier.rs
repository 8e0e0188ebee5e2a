//! The notifier: sends events that match a `kind: Notification` to its HTTP endpoint, signed per
//! Standard Webhooks, with retries and exponential backoff; what fails every retry lands on the
//! dead-letter list (`batchctl dlq list`), from where it can be sent again (`batchctl dlq redrive`).
//!
//! Invariants:
//! - A matching event is queued (`notification_deliveries`, keyed by event and notification)
//!   before it is sent, and marked delivered only after a 2xx: a crash re-sends rather than loses
//!   (receivers dedupe on `webhook-id`, the event's id).
//! - Like the rule runner, the bus cursor only passes settled events.
//! - Only addresses `core::endpoint_policy` allows are reached, checked on every address a name
//!   resolves to (a resolver of its own) and on literal addresses; redirects are not followed
//!   (they would carry the signature elsewhere). What a failure records (`lastError`, shown to
//!   read tokens) names no address and does not tell a refused port from a silent one.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::core::endpoint_policy::EndpointPolicy;
use crate::core::events::notification_backoff;
use crate::core::webhooks::standard_signature;
use crate::outage::{AfterWait, Outage};
use crate::store::{now_millis, NotificationDelivery, Store, StoreError};

const CURSOR: &str = "notifications";
const SETTLE: Duration = Duration::from_secs(5);
const BATCH: u32 = 256;
const POLL: Duration = Duration::from_millis(250);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENT_SENDS: usize = 8;

pub struct Notifier {
    store: Store,
    http: reqwest::Client,
    policy: Arc<EndpointPolicy>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Notifier {
    pub fn new(store: Store, policy: EndpointPolicy) -> Notifier {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: Arc::clone(&policy),
            }))
            .build()
            .expect("an HTTP client with rustls");
        Notifier {
            store,
            http,
            policy,
            metrics: Arc::default(),
        }
    }

    /// Reports retries and dead letters to the server's metrics.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Notifier {
        self.metrics = metrics;
        self
    }

    pub async fn run(self, cancel: CancellationToken) {
        let mut outage = Outage::new("notifier");
        loop {
            match self.run_once().await {
                Ok(()) => outage.recovered(),
                Err(error) if error.is_retryable() => {
                    if outage.wait(&error, &cancel).await == AfterWait::Stop {
                        return;
                    }
                    continue;
                }
                Err(error) => tracing::error!(%error, "sending notifications failed; trying again"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Queues what the bus has for notifications, then sends what is due.
    pub async fn run_once(&self) -> Result<(), StoreError> {
        let notifications = self.store.notifications().await?;
        self.queue_matches(&notifications).await?;
        let due = self.store.due_notifications(now_millis(), BATCH).await?;
        let sends: Vec<_> = due
            .iter()
            .filter_map(|delivery| {
                let (notification, _) = notifications
                    .iter()
                    .find(|(n, _)| n.name == delivery.notification)?;
                Some(Box::pin(self.send(notification, delivery)))
            })
            .collect();
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(sends)
            .buffer_unordered(CONCURRENT_SENDS)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn queue_matches(
        &self,
        notifications: &[(crate::manifest::Notification, i64)],
    ) -> Result<(), StoreError> {
        let cursor = self.store.bus_cursor(CURSOR).await?;
        let events = self.store.events_after(cursor, BATCH).await?;
        for event in &events {
            for (notification, created_at) in notifications {
                if notification.enabled
                    && event.received_at >= *created_at
                    && notification.pattern.matches(&event.envelope)
                {
                    self.store
                        .enqueue_notification(
                            &event.event_id,
                            &notification.name,
                            &event.envelope.to_string(),
                            now_millis(),
                        )
                        .await?;
                }
            }
        }
        let settled_before = now_millis() - SETTLE.as_millis() as i64;
        if let Some(last) = events
            .iter()
            .take_while(|event| event.received_at <= settled_before)
            .last()
        {
            self.store.set_bus_cursor(CURSOR, last.seq).await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        notification: &crate::manifest::Notification,
        delivery: &NotificationDelivery,
    ) -> Result<(), StoreError> {
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .http
            .post(&notification.endpoint)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(delivery.body.clone());
        if let Some(sealed) = &notification.secret {
            // Unsealed here, where it signs, and nowhere else.
            let secret = self
                .store
                .unsealed_secret(&format!("notification {}", notification.name), sealed)?;
            if let Some(signature) = standard_signature(
                secret.expose(),
                &delivery.event_id,
                timestamp,
                delivery.body.as_bytes(),
            ) {
                request = request.header("webhook-signature", signature);
            }
        }
        let literal_refused = reqwest::Url::parse(&notification.endpoint)
            .ok()
            .and_then(|url| {
                url.host_str()
                    .map(|host| host.trim_matches(['[', ']']).to_string())
            })
            .and_then(|host| host.parse::<IpAddr>().ok())
            .is_some_and(|ip| !self.policy.allows(ip));
        let outcome = if literal_refused {
            Err(NOT_ALLOWED.to_string())
        } else {
            match request.send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) if response.status().is_redirection() => Err(format!(
                    "the endpoint answered {} (a redirect, which is not followed)",
                    response.status()
                )),
                Ok(response) => Err(format!("the endpoint answered {}", response.status())),
                Err(error) => {
                    tracing::warn!(notification = %notification.name, error = %error_chain(&error), "cannot reach a notification endpoint");
                    Err(if is_not_allowed(&error) {
                        NOT_ALLOWED.to_string()
                    } else {
                        "cannot reach the endpoint (see the server's log)".to_string()
                    })
                }
            }
        };
        let now = now_millis();
        match outcome {
            Ok(()) => self.store.mark_notification_delivered(delivery, now).await,
            Err(error) => {
                let failed = delivery.attempts + 1;
                let retry_at = (failed <= notification.maximum_retry_attempts)
                    .then(|| now + notification_backoff(failed).as_millis() as i64);
                match retry_at {
                    Some(_) => {
                        tracing::warn!(notification = %notification.name, event_id = %delivery.event_id, %error, attempt = failed, "notification failed; will retry");
                        self.metrics.count_notification_retry(&notification.name);
                    }
                    None => {
                        tracing::error!(notification = %notification.name, event_id = %delivery.event_id, %error, "notification failed for good; see batchctl dlq list");
                        self.metrics.count_dead_letter(&notification.name);
                    }
                }
                self.store
                    .mark_notification_failed(delivery, &error, retry_at, now)
                    .await
            }
        }
    }
}

/// What `lastError` says of an endpoint whose address the policy refuses.
const NOT_ALLOWED: &str = "the endpoint's address is not allowed: loopback, link-local and private addresses need batchctl server --notification-allow-cidr";

/// Resolves names as the system does, keeping only addresses the policy allows.
struct GuardedResolver {
    policy: Arc<EndpointPolicy>,
}

#[derive(Debug, thiserror::Error)]
#[error("{NOT_ALLOWED}")]
struct AddressNotAllowed;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| policy.allows(address.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(AddressNotAllowed) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn is_not_allowed(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<AddressNotAllowed>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// An error and its causes, for the server's log.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
