-- The GPUs an attempt was given by id (core::gpus), comma-separated, with the rest of its current
-- attempt; a restart adopts the attempt with them, so no other attempt gets the same devices.
ALTER TABLE jobs ADD COLUMN attempt_gpu_ids TEXT;
