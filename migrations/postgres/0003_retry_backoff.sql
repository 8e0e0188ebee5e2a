-- A RUNNABLE job waiting out a retry backoff is not placed before this time (epoch ms).
ALTER TABLE jobs ADD COLUMN runnable_after BIGINT;
