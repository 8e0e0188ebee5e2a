-- A job stays PENDING until every job it depends on SUCCEEDED; it fails when one FAILED.
CREATE TABLE job_dependencies (
    job_id      TEXT NOT NULL,
    depends_on  TEXT NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_by_parent ON job_dependencies (depends_on);
