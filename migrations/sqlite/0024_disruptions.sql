-- How many of a job's attempts were retried without counting (evaluateOnExit action
-- RETRY_WITHOUT_COUNT, bounded by retryStrategy.maxDisruptions; core::retry::judge_attempt).
ALTER TABLE jobs ADD COLUMN disruptions INTEGER NOT NULL DEFAULT 0;
