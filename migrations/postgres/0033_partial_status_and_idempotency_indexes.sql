-- Two indexes of `jobs` keep only the rows a query reads through them. A status change is never a
-- HOT update, so every move of a job (placed, ended) wrote an entry into each index of the table:
-- - the unique index of idempotency keys held a NULL entry for every job submitted without one
--   (nearly all), written again at each move; it now holds the jobs that have a key (the insert's
--   ON CONFLICT names the same predicate);
-- - `jobs_by_status` held every finished job, although finished jobs are only read through the
--   top-level listing indexes, `jobs_finished_by_queue` and their array parent; it now holds the
--   unfinished statuses its queries name (reconcile, dependency and array resolution, admission),
--   so an attempt's end no longer writes into it.
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
DROP INDEX jobs_by_status;
CREATE INDEX jobs_by_status ON jobs (status, seq)
    WHERE status IN ('SUBMITTED', 'PENDING', 'RUNNABLE', 'STARTING', 'RUNNING');
