-- Login throttling per (email, client address) instead of per email, so a stranger failing
-- logins from their own address cannot lock the account's owner out; plus a per-email ceiling
-- over all addresses that refuses only addresses the account has not logged in from.
-- The per-email table of 0001 (login_throttle) is left as it is: replicas of the previous version
-- still use it during a rolling upgrade. This version neither reads nor writes it, only cleans
-- up its stale rows.

-- One row per (email, client); email known or not, so the throttle does not reveal which
-- accounts exist. client is the key auth derives from the Muon-Client-Address header:
-- "ip:<IPv4>", "ip6:<IPv6 /64 prefix>", or "bus" (no or unparsable header).
CREATE TABLE login_throttle_clients (
  email text NOT NULL,
  client text NOT NULL,
  failures integer NOT NULL DEFAULT 0,   -- attempts since the last success or lockout
  lockouts integer NOT NULL DEFAULT 0,   -- lockouts in a row: drives the doubling window
  locked_until timestamptz,
  succeeded_at timestamptz,              -- last successful login from this client
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (email, client)
);
CREATE INDEX login_throttle_clients_updated_at ON login_throttle_clients (updated_at);

-- Failures of one email over every client in a short fixed window (the account ceiling).
CREATE TABLE login_throttle_accounts (
  email text PRIMARY KEY,
  window_start timestamptz NOT NULL DEFAULT now(),
  failures integer NOT NULL DEFAULT 0
);
