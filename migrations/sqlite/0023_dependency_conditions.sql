-- Each dependency has a condition (core::dependencies): afterok (what every dependency was
-- until now), afterany or afternotok.
ALTER TABLE job_dependencies ADD COLUMN condition TEXT NOT NULL DEFAULT 'afterok';
