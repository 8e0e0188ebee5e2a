-- The top-level listing indexes leave out STARTING and RUNNING, the statuses a job holds an
-- attempt in. A move of a job is never a HOT update, so a placement (RUNNABLE to STARTING) wrote an
-- entry into both of these, and the attempt's end wrote into them again: a placement wrote 16% less
-- to the write-ahead log and touched 23% fewer buffers without them (BENCHMARKS.md, "Fewer bytes
-- per move"). Lists of STARTING or RUNNING jobs read `jobs_by_status` instead, where a capacity
-- bounds how many there are (store::jobs::listing_plan). The condition is a list of ORs, as in
-- jobs_finished_by_queue (0017): SQLite sees that `status = 'SUCCEEDED'` implies a term of it.
DROP INDEX jobs_top_level_by_status;
CREATE INDEX jobs_top_level_by_status ON jobs (status, seq)
    WHERE array_parent IS NULL AND (status = 'SUBMITTED' OR status = 'PENDING'
        OR status = 'RUNNABLE' OR status = 'SUCCEEDED' OR status = 'FAILED');
DROP INDEX jobs_top_level_by_queue_status;
CREATE INDEX jobs_top_level_by_queue_status ON jobs (job_queue, status, seq)
    WHERE array_parent IS NULL AND (status = 'SUBMITTED' OR status = 'PENDING'
        OR status = 'RUNNABLE' OR status = 'SUCCEEDED' OR status = 'FAILED');
