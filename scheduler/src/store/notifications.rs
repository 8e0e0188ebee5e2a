//! Notifications and their deliveries: the notifier's outbox and dead-letter list.

use sqlx::Row;

use super::{Store, StoreError};
use crate::core::resource::{Kind, Notification};

/// A delivery waiting to be sent (or dead).
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationDelivery {
    pub event_id: String,
    pub notification: String,
    pub body: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

const DELIVERY_COLUMNS: &str = "event_id, notification, body, attempts, last_error";

fn delivery_from_row(row: &sqlx::any::AnyRow) -> Result<NotificationDelivery, StoreError> {
    Ok(NotificationDelivery {
        event_id: row.try_get(0)?,
        notification: row.try_get(1)?,
        body: row.try_get(2)?,
        attempts: row.try_get::<i64, _>(3)? as u32,
        last_error: row.try_get(4)?,
    })
}

impl Store {
    /// Notifications, their secrets as stored (sealed): reading them needs no key, so matching
    /// events and listing work whatever the keyring; `unsealed_secret` gives the value where it
    /// signs.
    pub async fn notifications(&self) -> Result<Vec<(Notification, i64)>, StoreError> {
        let parsed = self
            .parsed_resources::<Notification>(Kind::Notification)
            .await?;
        Ok(parsed
            .into_iter()
            .map(|parsed| (parsed.model, parsed.created_at))
            .collect())
    }

    /// Queues an event for a notification, once.
    pub async fn enqueue_notification(
        &self,
        event_id: &str,
        notification: &str,
        body: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_deliveries (event_id, notification, body, status, attempts, \
             next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, 'PENDING', 0, $4, $4, $4) \
             ON CONFLICT (event_id, notification) DO NOTHING",
        )
        .bind(event_id)
        .bind(notification)
        .bind(body)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Deliveries due to be sent at `now`, oldest first; those of a deleted notification wait no
    /// more (a delete makes them dead letters; one queued while it ran is left behind here).
    pub async fn due_notifications(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<NotificationDelivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM notification_deliveries \
             WHERE status = 'PENDING' AND next_attempt_at <= $1 \
             AND EXISTS (SELECT 1 FROM notifications n WHERE n.name = notification) \
             ORDER BY next_attempt_at LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// The dead-letter list: deliveries whose retries are spent, newest first.
    pub async fn dead_notifications(
        &self,
        limit: u32,
    ) -> Result<Vec<NotificationDelivery>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM notification_deliveries \
             WHERE status = 'DEAD' ORDER BY updated_at DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub async fn mark_notification_delivered(
        &self,
        delivery: &NotificationDelivery,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_deliveries SET status = 'DELIVERED', attempts = attempts + 1, \
             last_error = NULL, updated_at = $3 WHERE event_id = $1 AND notification = $2",
        )
        .bind(&delivery.event_id)
        .bind(&delivery.notification)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Records a failed try: retried at `retry_at`, or, with `None`, moved to the dead-letter list.
    pub async fn mark_notification_failed(
        &self,
        delivery: &NotificationDelivery,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let status = match retry_at {
            Some(_) => "PENDING",
            None => "DEAD",
        };
        sqlx::query(
            "UPDATE notification_deliveries SET status = $3, attempts = attempts + 1, last_error = $4, \
             next_attempt_at = $5, updated_at = $6 WHERE event_id = $1 AND notification = $2",
        )
        .bind(&delivery.event_id)
        .bind(&delivery.notification)
        .bind(status)
        .bind(error)
        .bind(retry_at.unwrap_or(now))
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Sends dead deliveries again (of one notification, or all): their retries start over.
    /// Those of a deleted notification stay dead letters: there is nowhere to send them.
    pub async fn redrive_notifications(
        &self,
        notification: Option<&str>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let sql = match notification {
            Some(_) => {
                "UPDATE notification_deliveries SET status = 'PENDING', attempts = 0, \
                 next_attempt_at = $1, updated_at = $1 WHERE status = 'DEAD' AND notification = $2 \
                 AND EXISTS (SELECT 1 FROM notifications n WHERE n.name = notification)"
            }
            None => {
                "UPDATE notification_deliveries SET status = 'PENDING', attempts = 0, \
                 next_attempt_at = $1, updated_at = $1 WHERE status = 'DEAD' \
                 AND EXISTS (SELECT 1 FROM notifications n WHERE n.name = notification)"
            }
        };
        let mut query = sqlx::query(sql).bind(now);
        if let Some(name) = notification {
            query = query.bind(name);
        }
        Ok(query.execute(&self.write).await?.rows_affected())
    }
}
