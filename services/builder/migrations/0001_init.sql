-- Schema builder: the build queue (one row per (repo, commit, service), leased by one builder at a
-- time) and content-addressed artifacts stored in chunks. Applied by muon-builder at start-up
-- (search_path = builder).

-- status: queued -> running -> succeeded | failed. A running build whose lease expired (its
-- builder died) is taken again by another builder; attempts counts the takes.
CREATE TABLE builds (
  id text PRIMARY KEY,                      -- "b-" + 12 hex
  repo text NOT NULL,                       -- "owner/name"
  clone_url text NOT NULL,
  ref text NOT NULL DEFAULT '',             -- refs/heads/<branch> the commit was pushed to
  commit_sha text NOT NULL,
  service text NOT NULL,
  folder text NOT NULL,                     -- the service's folder in the repo ('' = root)
  trigger text NOT NULL,                    -- "push <delivery id>", "deploy <user>", "sync <user>"
  status text NOT NULL DEFAULT 'queued',
  lease_owner text,
  lease_expires timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  category text NOT NULL DEFAULT '',        -- failed: build_failed, timeout, fetch_failed, manifest_invalid
  failed_step text NOT NULL DEFAULT '',
  exit_code integer,
  last_lines text[] NOT NULL DEFAULT '{}',
  detail text NOT NULL DEFAULT '',
  artifact_digest text,                     -- succeeded: sha256 hex of the artifact
  artifact_size bigint,
  reused boolean NOT NULL DEFAULT false,    -- the artifact came from an earlier identical build
  -- The git tree id of the service's folder at the commit: a later build whose folder is the
  -- same tree reuses the artifact instead of running the steps again.
  input_tree text,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  UNIQUE (repo, commit_sha, service)
);
CREATE INDEX builds_queue ON builds (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX builds_service_created ON builds (service, created_at DESC);
CREATE INDEX builds_created ON builds (created_at DESC);
CREATE INDEX builds_reuse ON builds (repo, service, input_tree) WHERE status = 'succeeded';

-- An artifact is stored once per digest; chunks are written first and the artifacts row last,
-- in one transaction, so a row means every chunk is there.
CREATE TABLE artifacts (
  digest text PRIMARY KEY,                  -- sha256 hex of the compressed tar
  size bigint NOT NULL,
  chunk_size integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE artifact_chunks (
  digest text NOT NULL,
  idx integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (digest, idx)
);

