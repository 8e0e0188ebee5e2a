-- Top-level listings without a status are read as one range of jobs_top_level_by_status (or
-- jobs_top_level_by_queue_status) per status, merged by seq (store::jobs::merged_by_status), so
-- these two indexes go: a status change is never a HOT update, so every move of a job wrote an
-- entry into each of them, and without them the no-op dispatch on Postgres ran 5-47% faster
-- (BENCHMARKS.md, "Jobs with nothing to wait for stored RUNNABLE").
DROP INDEX jobs_top_level;
DROP INDEX jobs_top_level_by_queue;
