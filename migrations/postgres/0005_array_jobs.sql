-- Array jobs: the parent row holds the size; each child row (job id PARENT:INDEX) names its parent
-- and index, and stores no spec of its own (an empty spec means "the parent's"), so 100,000 children
-- are cheap rows written by one statement.
ALTER TABLE jobs ADD COLUMN array_size BIGINT;
ALTER TABLE jobs ADD COLUMN array_parent TEXT;
ALTER TABLE jobs ADD COLUMN array_index BIGINT;
-- statusSummary, "are all children finished", and cancelling or listing an array's children.
CREATE INDEX jobs_by_array_parent ON jobs (array_parent, status) WHERE array_parent IS NOT NULL;
