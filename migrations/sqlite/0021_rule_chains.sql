-- Rule loops are cut: how many rule deliveries in a row led to each job. Status-changing
-- statements return it, so a job's state change events carry it to the rules they match
-- (core::events::chain_step).
ALTER TABLE jobs ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0;
