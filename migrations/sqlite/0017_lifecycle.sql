-- Job definitions are deregistered per revision (INACTIVE, as AWS Batch), not removed: jobs that
-- used a revision keep showing it, and new submits naming it are refused.
ALTER TABLE job_definitions ADD COLUMN status TEXT NOT NULL DEFAULT 'ACTIVE';

-- Retention: a queue's finished top-level jobs in the order they stopped, so a pruning pass
-- reads only the jobs past their time to live (array children go with their parent). Only
-- finished rows enter it, so a job's earlier states add no entries. (Written with OR: SQLite
-- sees that `status = 'SUCCEEDED'` implies an OR term of the condition, not an IN list.)
CREATE INDEX jobs_finished_by_queue ON jobs (job_queue, status, stopped_at)
    WHERE array_parent IS NULL AND (status = 'SUCCEEDED' OR status = 'FAILED');
