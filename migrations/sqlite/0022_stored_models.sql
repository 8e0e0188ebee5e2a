-- Resources keep their validated model in a stored form the store owns (a versioned serde
-- envelope, store/stored_form.rs) beside the spec as applied (kept for display). Reads decode the
-- model and never run the wire format's validation again, so a rule tightened in a later release
-- cannot turn a stored row into an error. Rows written before this migration have no model until
-- the server's start-up upgrade (scheduler/src/upgrade.rs) fills it from their spec.
ALTER TABLE compute_environments ADD COLUMN model TEXT;
ALTER TABLE job_queues ADD COLUMN model TEXT;
ALTER TABLE job_definitions ADD COLUMN model TEXT;
ALTER TABLE schedules ADD COLUMN model TEXT;
ALTER TABLE event_rules ADD COLUMN model TEXT;
ALTER TABLE webhook_triggers ADD COLUMN model TEXT;
ALTER TABLE notifications ADD COLUMN model TEXT;
