-- Resources keep their validated wire spec as JSON; the model is rebuilt from it on load.
CREATE TABLE compute_environments (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE job_queues (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE job_definitions (
    name        TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (name, revision)
);

-- seq orders jobs (FIFO within a queue, newest first in lists); job_id is the public UUID.
CREATE TABLE jobs (
    seq                 BIGSERIAL PRIMARY KEY,
    job_id              TEXT NOT NULL UNIQUE,
    job_name            TEXT NOT NULL,
    job_queue           TEXT NOT NULL,
    status              TEXT NOT NULL,
    status_reason       TEXT,
    spec                TEXT NOT NULL,
    vcpu_millis         BIGINT NOT NULL,
    memory_mib          BIGINT NOT NULL,
    gpus                BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    started_at          BIGINT,
    stopped_at          BIGINT,
    n_attempts          BIGINT NOT NULL DEFAULT 0,
    attempt_number      BIGINT,
    attempt_environment TEXT,
    attempt_handle      TEXT,
    attempt_placed_at   BIGINT,
    attempt_started_at  BIGINT,
    stop_requested      TEXT,
    idempotency_key     TEXT UNIQUE,
    updated_at          BIGINT NOT NULL
);
-- The dispatcher's queue heads: only RUNNABLE rows are in this index.
CREATE INDEX jobs_runnable_by_queue ON jobs (job_queue, seq) WHERE status = 'RUNNABLE';
-- Admission (SUBMITTED), reconcile (STARTING, RUNNING) and `get jobs --status`.
CREATE INDEX jobs_by_status ON jobs (status, seq);
CREATE INDEX jobs_by_queue ON jobs (job_queue, seq);

CREATE TABLE attempts (
    job_id              TEXT NOT NULL,
    attempt_number      BIGINT NOT NULL,
    compute_environment TEXT NOT NULL,
    exit_code           BIGINT,
    status_reason       TEXT NOT NULL,
    started_at          BIGINT,
    stopped_at          BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt_number)
);

-- Each attempt's output in the order it was read; `cursor` is where the executor resumes after it.
CREATE TABLE log_chunks (
    id              BIGSERIAL PRIMARY KEY,
    job_id          TEXT NOT NULL,
    attempt_number  BIGINT NOT NULL,
    stream          TEXT NOT NULL,
    data            BYTEA NOT NULL,
    cursor          BIGINT NOT NULL
);
CREATE INDEX log_chunks_by_attempt ON log_chunks (job_id, attempt_number, id);
