-- Schema auth: accounts, invites, refresh tokens, region signing keys, access rules, login
-- throttling and an audit trail. Applied by muon-auth at start-up (search_path = auth).

CREATE TABLE accounts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL UNIQUE,            -- normalised: trimmed, lower-case
  name text NOT NULL DEFAULT '',
  roles text[] NOT NULL DEFAULT '{}',
  password_hash text,                    -- Argon2id PHC string; NULL for service accounts
  secret_hash text,                      -- service accounts: hex SHA-256 of the secret
  service_account boolean NOT NULL DEFAULT false,
  created_region text NOT NULL,
  disabled boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invites (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  code_hash text NOT NULL UNIQUE,        -- hex SHA-256 of the code; the code itself is not kept
  email text,                            -- when set, only this email may sign up with it
  roles text[] NOT NULL,
  expires_at timestamptz NOT NULL,
  created_by uuid REFERENCES accounts (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  used_at timestamptz,
  used_by uuid REFERENCES accounts (id) ON DELETE SET NULL
);

-- One login (Login or Signup) starts a family; every Refresh spends one token of it and adds the
-- next. Presenting a spent token again revokes the family.
CREATE TABLE refresh_families (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  region text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  revoked_reason text
);
CREATE INDEX refresh_families_account ON refresh_families (account_id);

CREATE TABLE refresh_tokens (
  token_hash text PRIMARY KEY,           -- hex SHA-256 of the token
  family_id uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Region signing keys. The private key is encrypted (libsodium secretbox) under a key derived
-- from the auth key file; only auth ever decrypts it. Status: active (signs), retiring (still
-- verifies, listed in Keys), retired (kept for the record, no longer listed).
CREATE TABLE signing_keys (
  kid text PRIMARY KEY,
  region text NOT NULL,
  public_key text NOT NULL,              -- base64url, 32 bytes
  secret_box text NOT NULL,              -- base64url(nonce || secretbox(secret key))
  status text NOT NULL CHECK (status IN ('active', 'retiring', 'retired')),
  created_at timestamptz NOT NULL DEFAULT now(),
  retiring_at timestamptz,
  retired_at timestamptz
);
-- At most one active key per region, also when several replicas start at once.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (region) WHERE status = 'active';

CREATE TABLE rules (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  role text NOT NULL,
  service text NOT NULL,
  endpoint text NOT NULL,
  effect text NOT NULL CHECK (effect IN ('allow', 'deny')),
  priority integer NOT NULL,
  description text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Failed logins per email (known or not, so the throttle itself does not reveal which accounts
-- exist). failures counts attempts since the last success or lockout; lockouts drives the
-- doubling window.
CREATE TABLE login_throttle (
  email text PRIMARY KEY,
  failures integer NOT NULL DEFAULT 0,
  lockouts integer NOT NULL DEFAULT 0,
  locked_until timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  region text NOT NULL,
  actor text NOT NULL,                   -- email of the caller, or "system"
  action text NOT NULL,                  -- e.g. "invite.created", "key.rotated"
  target text NOT NULL DEFAULT '',
  detail text NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at);
