-- Which node of a multi-node parallel job (core::multinode) wrote a chunk; 0 for every other job,
-- whose one container is node 0. Each node's output is read, followed and bounded on its own
-- (`logs JOB#2`); reads go through log_chunks_by_attempt and filter on the node.
ALTER TABLE log_chunks ADD COLUMN node BIGINT NOT NULL DEFAULT 0;
