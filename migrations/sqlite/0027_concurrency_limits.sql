-- `kind: ConcurrencyLimit` (core::concurrency): at most `max` jobs per value of a key running at
-- once. Kept like the other resources: the spec as applied and the validated model.
CREATE TABLE concurrency_limits (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    model       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
