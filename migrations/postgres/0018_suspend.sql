-- A suspended (held) job keeps its place, its seq, but is never placed (Kubernetes' `suspend`):
-- the queue-head indexes now hold only the RUNNABLE jobs that are not suspended, so held jobs
-- cost a pass nothing, and a resumed one is back where it was.
ALTER TABLE jobs ADD COLUMN suspended BIGINT NOT NULL DEFAULT 0;
DROP INDEX jobs_runnable_by_queue;
CREATE INDEX jobs_runnable_by_queue ON jobs (job_queue, seq)
    WHERE status = 'RUNNABLE' AND suspended = 0;
DROP INDEX jobs_runnable_by_share;
CREATE INDEX jobs_runnable_by_share ON jobs (job_queue, share_identifier, scheduling_priority DESC, seq)
    WHERE status = 'RUNNABLE' AND suspended = 0;
