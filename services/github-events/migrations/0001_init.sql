-- Schema github: registered repositories with their webhook secrets (sealed with the service's
-- key), every accepted webhook delivery, and counts of refused ones. Applied by muon-github-events
-- at start-up (search_path = github).

CREATE TABLE repos (
  name text PRIMARY KEY,                 -- "owner/name" as GitHub's repository.full_name
  clone_url text NOT NULL,
  branch text NOT NULL,                  -- the default branch
  secret_sealed bytea NOT NULL,          -- secretbox(nonce || ciphertext) of the webhook secret
  secret_updated_at timestamptz NOT NULL DEFAULT now(),
  previous_secret_sealed bytea,          -- still accepted until previous_valid_until
  previous_valid_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A delivery is stored (and committed) before GitHub gets its 2xx; the delivery id makes a
-- redelivery recognisable. status: accepted (waits for processing), processing, processed,
-- failed, ignored (an event Muon does not act on; no body kept).
CREATE TABLE deliveries (
  delivery_id text PRIMARY KEY,
  repo text NOT NULL,
  event text NOT NULL,
  status text NOT NULL,
  detail text NOT NULL DEFAULT '',
  ref text NOT NULL DEFAULT '',
  before_sha text NOT NULL DEFAULT '',
  after_sha text NOT NULL DEFAULT '',
  body bytea,                            -- the payload as received (push only)
  body_bytes bigint NOT NULL DEFAULT 0,
  redeliveries integer NOT NULL DEFAULT 0,
  received_at timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz
);
CREATE INDEX deliveries_received ON deliveries (received_at DESC);
CREATE INDEX deliveries_repo_received ON deliveries (repo, received_at DESC);
CREATE INDEX deliveries_pending ON deliveries (received_at) WHERE status IN ('accepted', 'processing');

-- Refused deliveries store nothing but a count per (repo, reason).
CREATE TABLE rejections (
  repo text NOT NULL,                    -- as the payload named it; '' when it did not parse
  reason text NOT NULL,
  count bigint NOT NULL DEFAULT 0,
  last_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (repo, reason)
);
