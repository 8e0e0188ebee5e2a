-- What each attempt ran with: an evaluateOnExit rule's resourceAdjustments can grow a retry's
-- requirements (kept in jobs.vcpu_millis and jobs.memory_mib, which every job read now takes as
-- the truth), so the attempt record says what it had (vCPU thousandths, MiB, GPUs). NULL on attempts recorded before.
ALTER TABLE attempts ADD COLUMN vcpu_millis BIGINT;
ALTER TABLE attempts ADD COLUMN memory_mib BIGINT;
ALTER TABLE attempts ADD COLUMN gpus BIGINT;
