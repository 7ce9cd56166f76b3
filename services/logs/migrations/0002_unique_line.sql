-- A line is named by (service, instance, seq) at its time: the database itself now refuses a
-- second copy (see docs/decisions.md, "Log ingest de-duplicates with a unique index"). The key
-- holds ts, the partition key, as a unique index on a partitioned table must; copies of one
-- line carry the same ts, so they always meet in the same partition. It replaces
-- (service, ts), whose queries it serves as well through its leading columns.
-- Copies stored by the design this replaces go first (the one with the higher ctid; copies of a
-- line share ts, hence their partition).
DELETE FROM lines a USING lines b
 WHERE a.service = b.service AND a.ts = b.ts AND a.instance = b.instance AND a.seq = b.seq
   AND a.ctid > b.ctid;
DROP INDEX lines_service_ts;
CREATE UNIQUE INDEX lines_line_key ON lines (service, ts, instance, seq);
