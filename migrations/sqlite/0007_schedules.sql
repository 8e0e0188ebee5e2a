-- Schedules keep their validated wire spec, as the other resources.
CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- One row per tick handled, fired or skipped. The primary key is what makes a tick fire exactly
-- once: the row is inserted in the same transaction as the job it submits, so a restart, a crash
-- mid-fire or a second server can never fire the same (schedule, scheduled time) twice.
CREATE TABLE schedule_firings (
    schedule        TEXT NOT NULL,
    scheduled_time  BIGINT NOT NULL,
    outcome         TEXT NOT NULL,
    job_id          TEXT,
    reason          TEXT,
    recorded_at     BIGINT NOT NULL,
    PRIMARY KEY (schedule, scheduled_time)
);
