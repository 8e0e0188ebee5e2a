-- `kind: Secret` (core::secret): a named value kept sealed in `model` (scheduler/src/sealing.rs;
-- the store seals before writing and unseals on read); `spec` keeps a keyed digest in its place.
-- The secrets of webhook triggers and notifications are sealed the same way by the server's
-- start-up (`Store::reseal`), which needs the key and so cannot be a migration.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    model       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
