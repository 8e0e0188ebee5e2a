-- Admission takes the oldest SUBMITTED jobs of each queue in turn, so one queue's backlog never
-- delays another's jobs; this index finds a queue's oldest SUBMITTED jobs without walking the
-- others'.
CREATE INDEX jobs_submitted_by_queue ON jobs (job_queue, seq) WHERE status = 'SUBMITTED';
