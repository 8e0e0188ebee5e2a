-- Jobs per queue and status, kept by triggers so that `GET /metrics` reads a few rows instead of
-- counting a table that holds a million finished jobs (a `GROUP BY status` over it took 60-180 ms
-- per scrape). SQLite has one writer at a time, so the triggers can add to the counters directly.
CREATE TABLE job_counts (
    job_queue TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (job_queue, status)
);

INSERT INTO job_counts (job_queue, status, n)
SELECT job_queue, status, COUNT(*) FROM jobs GROUP BY job_queue, status;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_counts (job_queue, status, n) VALUES (NEW.job_queue, NEW.status, 1)
    ON CONFLICT (job_queue, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_update AFTER UPDATE OF status, job_queue ON jobs
WHEN OLD.status IS NOT NEW.status OR OLD.job_queue IS NOT NEW.job_queue
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE job_queue = OLD.job_queue AND status = OLD.status;
    INSERT INTO job_counts (job_queue, status, n) VALUES (NEW.job_queue, NEW.status, 1)
    ON CONFLICT (job_queue, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE job_queue = OLD.job_queue AND status = OLD.status;
END;
