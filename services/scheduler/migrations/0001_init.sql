-- Schema scheduler: desired state (services, config, releases, locks), the rollouts that move a
-- service from one release to the next, and the actual state the nodes report (nodes,
-- instances). Applied by muon-scheduler at start-up (search_path = scheduler).

-- A service exists from its first release candidate on. replicas is the operator's count
-- (muon scale); it starts from the manifest's.
CREATE TABLE services (
  name text PRIMARY KEY,
  repo text NOT NULL DEFAULT '',
  folder text NOT NULL DEFAULT '',
  replicas integer NOT NULL DEFAULT 1 CHECK (replicas BETWEEN 0 AND 100),
  replicas_set boolean NOT NULL DEFAULT false,  -- muon scale overrides the manifest from now on
  live_version integer NOT NULL DEFAULT 0,      -- the release serving svc.<name>.* (0: none)
  config_version bigint NOT NULL DEFAULT 0,
  paused boolean NOT NULL DEFAULT false,        -- auto-deploy paused after a failed rollout
  paused_reason text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per-service configuration. Secrets are sealed (libsodium secretbox) and never read back out
-- through the API; plain values are shown by muon describe.
CREATE TABLE config (
  service text NOT NULL REFERENCES services (name),
  key text NOT NULL,
  value text NOT NULL DEFAULT '',
  sealed bytea,                                 -- set for secrets (value is '')
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service, key)
);

-- Immutable releases. env is the release's plain config (a JSON object); secrets the sealed JSON
-- object of its secrets, so a rollback runs exactly the config it had.
CREATE TABLE releases (
  service text NOT NULL REFERENCES services (name),
  version integer NOT NULL,
  artifact_digest text NOT NULL,
  manifest text NOT NULL,
  config_version bigint NOT NULL,
  env jsonb NOT NULL DEFAULT '{}',
  secrets bytea,
  secret_keys text[] NOT NULL DEFAULT '{}',     -- the keys of `secrets` (checked before deploys)
  commit_sha text NOT NULL DEFAULT '',
  author text NOT NULL DEFAULT '',
  build_id text NOT NULL DEFAULT '',
  reason text NOT NULL,
  preview text NOT NULL DEFAULT '',
  from_version integer NOT NULL DEFAULT 0,
  status text NOT NULL DEFAULT 'pending',
  category text NOT NULL DEFAULT '',
  detail text NOT NULL DEFAULT '',
  last_lines text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (service, version)
);
-- A build handed over twice (a redelivery, a re-run deploy of the same commit) makes one release.
CREATE UNIQUE INDEX releases_candidate ON releases (service, build_id, preview, config_version)
  WHERE reason = 'build';

-- A rollout moves a service (or a preview) to a release. At most one runs per service (the
-- deploy lock); the controller keeps its progress here so a new leader resumes it.
CREATE TABLE rollouts (
  id bigserial PRIMARY KEY,
  service text NOT NULL REFERENCES services (name),
  version integer NOT NULL,
  from_version integer NOT NULL DEFAULT 0,
  preview text NOT NULL DEFAULT '',
  state text NOT NULL DEFAULT 'running',        -- running, succeeded, failed
  category text NOT NULL DEFAULT '',
  detail text NOT NULL DEFAULT '',
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE UNIQUE INDEX rollouts_one_running ON rollouts (service, preview) WHERE state = 'running';
CREATE INDEX rollouts_service ON rollouts (service, id DESC);

CREATE TABLE locks (
  service text PRIMARY KEY,
  holder text NOT NULL,
  reason text NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);

CREATE TABLE nodes (
  id text PRIMARY KEY,
  region text NOT NULL,
  host text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  last_seen timestamptz NOT NULL DEFAULT now()
);

-- One row per instance the controller asked for. desired is the controller's; the rest is what
-- the node reports. A node runs the rows placed on it with desired = running and stops the others.
CREATE TABLE instances (
  id text PRIMARY KEY,                          -- "<service>-" + 8 hex
  service text NOT NULL REFERENCES services (name),
  version integer NOT NULL,
  preview text NOT NULL DEFAULT '',
  node text NOT NULL,
  desired text NOT NULL DEFAULT 'running',      -- running, stopped
  state text NOT NULL DEFAULT 'pending',
  pid integer NOT NULL DEFAULT 0,
  restarts integer NOT NULL DEFAULT 0,
  started_at timestamptz,
  healthy_at timestamptz,
  category text NOT NULL DEFAULT '',
  detail text NOT NULL DEFAULT '',
  last_lines text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_node ON instances (node) WHERE state <> 'stopped' OR desired = 'running';
CREATE INDEX instances_service ON instances (service, version);

CREATE TABLE events (
  id bigserial PRIMARY KEY,
  service text NOT NULL DEFAULT '',
  type text NOT NULL,
  message text NOT NULL,
  version integer NOT NULL DEFAULT 0,
  instance text NOT NULL DEFAULT '',
  attributes jsonb NOT NULL DEFAULT '{}',
  time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_service ON events (service, id);
