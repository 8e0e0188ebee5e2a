-- Each array's children per status (`arrayProperties.statusSummary`), kept by triggers like
-- job_counts (0014): listing or describing an array parent counted its children, 100,000 index
-- entries per array of that size on every read.
CREATE TABLE array_counts (
    array_parent TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (array_parent, status)
);

INSERT INTO array_counts (array_parent, status, n)
SELECT array_parent, status, COUNT(*) FROM jobs WHERE array_parent IS NOT NULL
GROUP BY array_parent, status;

CREATE TRIGGER children_counted_insert AFTER INSERT ON jobs
WHEN NEW.array_parent IS NOT NULL
BEGIN
    INSERT INTO array_counts (array_parent, status, n) VALUES (NEW.array_parent, NEW.status, 1)
    ON CONFLICT (array_parent, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER children_counted_update AFTER UPDATE OF status ON jobs
WHEN NEW.array_parent IS NOT NULL AND OLD.status IS NOT NEW.status
BEGIN
    UPDATE array_counts SET n = n - 1 WHERE array_parent = OLD.array_parent AND status = OLD.status;
    INSERT INTO array_counts (array_parent, status, n) VALUES (NEW.array_parent, NEW.status, 1)
    ON CONFLICT (array_parent, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER children_counted_delete AFTER DELETE ON jobs
WHEN OLD.array_parent IS NOT NULL
BEGIN
    UPDATE array_counts SET n = n - 1 WHERE array_parent = OLD.array_parent AND status = OLD.status;
END;
