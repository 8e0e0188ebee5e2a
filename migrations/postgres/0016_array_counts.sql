-- Each array's children per status (`arrayProperties.statusSummary`), kept like job_counts (0014)
-- as rows each writing statement appends, summed by readers and folded by the dispatcher: listing
-- or describing an array parent counted its children, 100,000 index entries per array of that
-- size on every read.
CREATE TABLE array_count_deltas (
    id BIGSERIAL PRIMARY KEY,
    array_parent TEXT NOT NULL,
    status TEXT NOT NULL,
    n BIGINT NOT NULL
);
CREATE INDEX array_count_deltas_by_parent ON array_count_deltas (array_parent, status);

INSERT INTO array_count_deltas (array_parent, status, n)
SELECT array_parent, status, COUNT(*) FROM jobs WHERE array_parent IS NOT NULL
GROUP BY array_parent, status;

CREATE OR REPLACE FUNCTION jobs_counted_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (job_queue, status, n)
    SELECT job_queue, status, COUNT(*) FROM new_rows GROUP BY job_queue, status;
    INSERT INTO array_count_deltas (array_parent, status, n)
    SELECT array_parent, status, COUNT(*) FROM new_rows WHERE array_parent IS NOT NULL
    GROUP BY array_parent, status;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION jobs_counted_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (job_queue, status, n)
    SELECT job_queue, status, SUM(n) FROM (
        SELECT job_queue, status, 1 AS n FROM new_rows
        UNION ALL
        SELECT job_queue, status, -1 AS n FROM old_rows
    ) AS moved
    GROUP BY job_queue, status
    HAVING SUM(n) <> 0;
    INSERT INTO array_count_deltas (array_parent, status, n)
    SELECT array_parent, status, SUM(n) FROM (
        SELECT array_parent, status, 1 AS n FROM new_rows WHERE array_parent IS NOT NULL
        UNION ALL
        SELECT array_parent, status, -1 AS n FROM old_rows WHERE array_parent IS NOT NULL
    ) AS moved
    GROUP BY array_parent, status
    HAVING SUM(n) <> 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION jobs_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (job_queue, status, n)
    SELECT job_queue, status, -COUNT(*) FROM old_rows GROUP BY job_queue, status;
    INSERT INTO array_count_deltas (array_parent, status, n)
    SELECT array_parent, status, -COUNT(*) FROM old_rows WHERE array_parent IS NOT NULL
    GROUP BY array_parent, status;
    RETURN NULL;
END
$$;
