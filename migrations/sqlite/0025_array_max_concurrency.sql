-- arrayProperties.maxConcurrency (Slurm's `--array=…%N`): how many of an array's children may be
-- RUNNABLE, STARTING or RUNNING at once. Kept on the parent and on each child, so that admission
-- and dependency resolution can leave a capped array's children PENDING in bulk, and the release
-- of the next ones (`release_capped_children`) reads only capped arrays.
ALTER TABLE jobs ADD COLUMN array_max_concurrency BIGINT;
-- The unfinished parents of capped arrays: what the release step goes through each pass.
CREATE INDEX jobs_capped_arrays ON jobs (seq)
    WHERE array_max_concurrency IS NOT NULL AND array_size IS NOT NULL AND status = 'PENDING';
-- A capped array's PENDING children in index order: the next ones to release.
CREATE INDEX jobs_capped_children ON jobs (array_parent, array_index)
    WHERE array_max_concurrency IS NOT NULL AND status = 'PENDING';
