-- The leader lease: on Postgres, several servers share one database and exactly one of them (the
-- holder of the current term) runs the dispatcher and the schedule, rule and notification runners.
-- A new leader takes the next term; every write that moves jobs checks its term against this row
-- (fencing), so a deposed leader cannot write. Times are milliseconds since the Unix epoch, as read
-- from the database's clock, so replicas' clocks need not agree. SQLite has one server per file and
-- takes no lease; the table exists there only to keep both schemas alike.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
