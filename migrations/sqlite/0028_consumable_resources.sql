-- `kind: ConsumableResource` (core::consumable), kept like the other resources, with how much of a
-- NON_REPLENISHABLE one placements have used up (added to in each placement's transaction; an
-- apply that changes totalQuantity leaves it).
CREATE TABLE consumable_resources (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    model       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    consumed    BIGINT NOT NULL DEFAULT 0
);
