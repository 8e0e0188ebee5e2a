-- The event bus: every accepted event, in arrival order. An event is stored before its 2xx.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    source      TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
-- An id put twice is stored once. batchctl's own Job State Change events (source batchctl, which
-- puts may not use) have fresh ids and skip this index: it would cost every transition a random
-- insert into a unique index.
CREATE UNIQUE INDEX events_by_id ON events (event_id) WHERE source <> 'batchctl';
-- Event rules keep their validated wire spec, as the other resources.
CREATE TABLE event_rules (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- The outbox: one row per (event, rule) handled, inserted in the transaction that submits the
-- rule's job, so a crash between accepting an event and submitting its job neither loses nor
-- doubles the job.
CREATE TABLE rule_deliveries (
    event_id    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    job_id      TEXT,
    reason      TEXT,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, rule)
);
-- How far the rule runner has read the bus.
CREATE TABLE bus_cursors (
    name        TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL
);
