-- Schema logs: every log line, partitioned by day (UTC) on the emitter's time. Applied by
-- muon-logs at start-up (search_path = logs). Partitions are created ahead and dropped after the
-- retention period by ensure_partitions / drop_partitions_before, which every replica may call at
-- once (an advisory lock serialises them).

CREATE TABLE lines (
  ts timestamptz NOT NULL,           -- the emitter's time
  service text NOT NULL,
  instance text NOT NULL,            -- instance id, or build id for build output
  release text NOT NULL DEFAULT '',
  region text NOT NULL DEFAULT '',
  source smallint NOT NULL,          -- muon.logs.v1.Source
  severity smallint NOT NULL,        -- muon.logs.v1.Severity
  message text NOT NULL,
  truncated boolean NOT NULL DEFAULT false,
  trace_id text NOT NULL DEFAULT '',
  seq bigint NOT NULL,               -- per-instance sequence: (instance, seq) names a line
  stream_seq bigint NOT NULL         -- JetStream sequence (the live tail's seam uses it)
) PARTITION BY RANGE (ts);

-- "last N lines of a service" and every filtered query of one service walk this backwards;
-- the redelivery de-duplication probe uses it too (service, ts, then instance/seq).
CREATE INDEX lines_service_ts ON lines (service, ts);
-- --instance / --build without a service.
CREATE INDEX lines_instance_ts ON lines (instance, ts);

CREATE FUNCTION ensure_partitions(first_day date, days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  d date;
  created integer := 0;
  name text;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('logs.partitions'));
  FOR i IN 0 .. days - 1 LOOP
    d := first_day + i;
    name := 'lines_' || to_char(d, 'YYYYMMDD');
    IF to_regclass('logs.' || name) IS NULL THEN
      EXECUTE format('CREATE TABLE logs.%I PARTITION OF logs.lines FOR VALUES FROM (%L) TO (%L)',
                     name, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
      created := created + 1;
    END IF;
  END LOOP;
  RETURN created;
END $$;

-- Drops whole days older than `before` (a day is dropped once all of it is before `before`).
CREATE FUNCTION drop_partitions_before(before date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  r record;
  dropped integer := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('logs.partitions'));
  FOR r IN
    SELECT c.relname FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      JOIN pg_class p ON p.oid = i.inhparent
      JOIN pg_namespace n ON n.oid = p.relnamespace
     WHERE n.nspname = 'logs' AND p.relname = 'lines' AND c.relname ~ '^lines_[0-9]{8}$'
  LOOP
    IF to_date(substr(r.relname, 7), 'YYYYMMDD') < before THEN
      EXECUTE format('DROP TABLE logs.%I', r.relname);
      dropped := dropped + 1;
    END IF;
  END LOOP;
  RETURN dropped;
END $$;

-- The oldest and newest day a line can be stored for (ingest drops or clamps lines outside).
CREATE FUNCTION partition_range(OUT first_day date, OUT last_day date)
LANGUAGE sql STABLE AS $$
  SELECT min(to_date(substr(c.relname, 7), 'YYYYMMDD')), max(to_date(substr(c.relname, 7), 'YYYYMMDD'))
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_namespace n ON n.oid = p.relnamespace
   WHERE n.nspname = 'logs' AND p.relname = 'lines' AND c.relname ~ '^lines_[0-9]{8}$'
$$;
