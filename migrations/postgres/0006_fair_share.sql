-- Fair share: a fair-share queue's head is read per share, highest schedulingPriority first, so a
-- share with a long backlog cannot hide the others from placement.
ALTER TABLE jobs ADD COLUMN share_identifier TEXT;
ALTER TABLE jobs ADD COLUMN scheduling_priority BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_runnable_by_share ON jobs (job_queue, share_identifier, scheduling_priority DESC, seq)
    WHERE status = 'RUNNABLE';
