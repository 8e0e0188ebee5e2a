-- One row: this installation's id. Containers and other external objects are labelled with it, so
-- servers sharing a Docker engine (or a cluster) only ever reconcile their own.
CREATE TABLE installation (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);
