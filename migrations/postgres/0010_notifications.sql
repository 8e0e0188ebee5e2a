-- Notifications keep their validated wire spec, as the other resources.
CREATE TABLE notifications (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- One row per (event, notification) to send: the notifier's outbox, and its dead-letter list
-- (status DEAD) once the retries are spent.
CREATE TABLE notification_deliveries (
    event_id        TEXT NOT NULL,
    notification    TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (event_id, notification)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (status, next_attempt_at);
