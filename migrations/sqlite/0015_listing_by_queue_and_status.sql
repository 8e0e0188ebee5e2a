-- `get jobs --queue Q --status S` walked every top-level job in status S (a million SUCCEEDED in
-- other queues) to find Q's; this index goes straight to them.
CREATE INDEX jobs_top_level_by_queue_status ON jobs (job_queue, status, seq) WHERE array_parent IS NULL;
-- Every query by queue now has an index of its own (top-level listing; SUBMITTED and RUNNABLE jobs
-- of a queue), and this one only made planners walk a queue's whole history to find its RUNNABLE
-- jobs, and cost every status change on Postgres an index entry.
DROP INDEX jobs_by_queue;
