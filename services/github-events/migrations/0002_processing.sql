-- Accepted pushes are processed from this table as a durable queue: a processor takes one under a
-- lease it renews (a processor killed mid-way leaves it to another after the lease), a failure
-- the builder may recover from is retried later with a backoff.
ALTER TABLE deliveries
  ADD COLUMN attempts integer NOT NULL DEFAULT 0,
  ADD COLUMN lease_owner text,
  ADD COLUMN lease_expires timestamptz,
  ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN builds text[] NOT NULL DEFAULT '{}';
