-- Webhook triggers keep their validated wire spec, as the other resources (secrets included:
-- the database is the server's own; the API never shows them).
CREATE TABLE webhook_triggers (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
