-- Jobs per queue and status, kept by triggers so that `GET /metrics` reads a few rows instead of
-- counting a table that holds a million finished jobs (a `GROUP BY status` over it took 60-180 ms
-- per scrape).
--
-- Writers on Postgres run concurrently (submits, the dispatcher, cancels), so the triggers never
-- update a shared counter row, which would make them wait on each other's commits or deadlock.
-- Each statement appends what it changed, summed per queue and status, as rows of its own; a
-- reader sums them. `fold_job_counts` (the dispatcher, once a second) replaces the rows with
-- their sums, in one statement that two servers may run at the same time without counting twice.
CREATE TABLE job_count_deltas (
    id BIGSERIAL PRIMARY KEY,
    job_queue TEXT NOT NULL,
    status TEXT NOT NULL,
    n BIGINT NOT NULL
);

INSERT INTO job_count_deltas (job_queue, status, n)
SELECT job_queue, status, COUNT(*) FROM jobs GROUP BY job_queue, status;

CREATE FUNCTION jobs_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (job_queue, status, n)
    SELECT job_queue, status, COUNT(*) FROM new_rows GROUP BY job_queue, status;
    RETURN NULL;
END
$$;

CREATE FUNCTION jobs_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (job_queue, status, n)
    SELECT job_queue, status, SUM(n) FROM (
        SELECT job_queue, status, 1 AS n FROM new_rows
        UNION ALL
        SELECT job_queue, status, -1 AS n FROM old_rows
    ) AS moved
    GROUP BY job_queue, status
    HAVING SUM(n) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION jobs_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (job_queue, status, n)
    SELECT job_queue, status, -COUNT(*) FROM old_rows GROUP BY job_queue, status;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION jobs_counted_insert();

CREATE TRIGGER jobs_counted_update AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION jobs_counted_update();

CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION jobs_counted_delete();
