-- Fair-share usage, as the leader's ledgers hold it (`core::fair_share::ShareLedger`): decayed
-- vCPU-seconds and mean attempt duration per share, so a restart or a new leader goes on from
-- the same standing instead of starting every share even.
CREATE TABLE share_usage (
    job_queue TEXT NOT NULL,
    share_identifier TEXT NOT NULL,
    used REAL NOT NULL,
    mean_seconds REAL NOT NULL,
    finished BIGINT NOT NULL,
    as_of BIGINT NOT NULL,
    PRIMARY KEY (job_queue, share_identifier)
);
