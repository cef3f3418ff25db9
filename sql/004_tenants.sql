-- trigger-engine schema, version 4: organizations, API keys, secrets, and row-level
-- security on everything a tenant can see.  Idempotent like 001.
--
-- File rules belong to the operator: their rows have org_id NULL, and no tenant policy
-- ever matches NULL.  The engine's own processes (engine run, engine worker, the CLI)
-- connect as the tables' owner, whom row-level security does not restrict.  `engine api`
-- works as engine_tenant, which it is: each request runs in a transaction that does
-- SET LOCAL ROLE engine_tenant and sets engine.org_id, so the database, not the API's
-- code, keeps one organization from another's rows, whatever SQL runs.

CREATE TABLE IF NOT EXISTS organizations (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                   TEXT        NOT NULL UNIQUE
        CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    max_rules              INTEGER CHECK (max_rules >= 0),               -- NULL: config default
    max_firings_per_minute INTEGER CHECK (max_firings_per_minute >= 0),  -- NULL: config default
    allow_private          BOOLEAN     NOT NULL DEFAULT false,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A key is te_<lookup>_<secret>; only the sha256 of the whole key is kept.  The lookup
-- finds the row, the hash is compared in constant time by the API.
CREATE TABLE IF NOT EXISTS api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       BIGINT      NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    role         TEXT        NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    name         TEXT,
    lookup       TEXT        NOT NULL UNIQUE,
    hash         BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS api_keys_org ON api_keys (org_id);

-- triggers.id stays the engine-wide key (trigger_state, action_results and rule_stats
-- refer to it): a file rule's id is the id its author wrote; a tenant rule's is
-- '<org_id>/<rule_id>' (rule ids cannot contain '/', so the two never meet).
ALTER TABLE triggers
    ADD COLUMN IF NOT EXISTS org_id  BIGINT REFERENCES organizations (id) ON DELETE CASCADE,
    ADD COLUMN IF NOT EXISTS rule_id TEXT,
    ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 1;
UPDATE triggers SET rule_id = id WHERE rule_id IS NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'triggers_org_rule') THEN
        ALTER TABLE triggers
            ADD CONSTRAINT triggers_org_rule UNIQUE NULLS NOT DISTINCT (org_id, rule_id);
    END IF;
END;
$$;

ALTER TABLE trigger_state  ADD COLUMN IF NOT EXISTS org_id BIGINT;
ALTER TABLE action_results ADD COLUMN IF NOT EXISTS org_id BIGINT;
ALTER TABLE rule_stats     ADD COLUMN IF NOT EXISTS org_id BIGINT;
CREATE INDEX IF NOT EXISTS action_results_org_id ON action_results (org_id, id)
    WHERE org_id IS NOT NULL;

-- Every change of `triggers` (the API's and the file mirror's alike) is appended here in
-- the same transaction, by the trigger below, so it cannot be forgotten: the daemon reads
-- what changed after the last sequence number it applied, inside the transaction of the
-- batch it evaluates, and so applies every change committed before that batch.
CREATE SEQUENCE IF NOT EXISTS trigger_change_seq;
CREATE TABLE IF NOT EXISTS trigger_changes (
    seq        BIGINT      PRIMARY KEY DEFAULT nextval('trigger_change_seq'),
    trigger_id TEXT        NOT NULL,
    org_id     BIGINT,
    op         TEXT        NOT NULL CHECK (op IN ('upsert', 'delete')),
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION engine_record_trigger_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO trigger_changes (trigger_id, org_id, op) VALUES (OLD.id, OLD.org_id, 'delete');
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.version := OLD.version + 1;
    END IF;
    -- A file rule's rule_id is its id: the file mirror need not know the column.
    NEW.rule_id := coalesce(NEW.rule_id, NEW.id);
    INSERT INTO trigger_changes (trigger_id, org_id, op) VALUES (NEW.id, NEW.org_id, 'upsert');
    RETURN NEW;
END;
$$;
DROP TRIGGER IF EXISTS triggers_changed ON triggers;
CREATE TRIGGER triggers_changed
    BEFORE INSERT OR UPDATE OR DELETE ON triggers
    FOR EACH ROW EXECUTE FUNCTION engine_record_trigger_change();
ALTER TABLE triggers ALTER COLUMN rule_id SET NOT NULL;

-- Values are AES-GCM ciphertexts (a 12-byte nonce first) under config secrets_key, with
-- '<org_id>/<name>' as associated data: a ciphertext moved to another row does not open.
CREATE TABLE IF NOT EXISTS secrets (
    org_id     BIGINT      NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name       TEXT        NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,127}$'),
    ciphertext BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, name)
);

-- Per-agent MCP bearer tokens (the reference design's agent_mcp_tokens), encrypted as
-- secrets are, with '<org_id>/agent/<chain_id>/<agent_id>' as associated data.
CREATE TABLE IF NOT EXISTS agent_tokens (
    org_id     BIGINT      NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    chain_id   BIGINT      NOT NULL,
    agent_id   BIGINT      NOT NULL,
    ciphertext BYTEA       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, chain_id, agent_id)
);

DO $$
DECLARE
    t TEXT;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'engine_tenant') THEN
        CREATE ROLE engine_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
    FOREACH t IN ARRAY ARRAY['triggers', 'trigger_state', 'action_results', 'rule_stats',
                             'trigger_changes', 'secrets', 'agent_tokens', 'api_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO engine_tenant '
            'USING (org_id = nullif(current_setting(''engine.org_id'', true), '''')::bigint) '
            'WITH CHECK (org_id = nullif(current_setting(''engine.org_id'', true), '''')::bigint)',
            t);
    END LOOP;
END;
$$;

GRANT SELECT, INSERT, UPDATE, DELETE
    ON triggers, trigger_state, action_results, secrets, agent_tokens, api_keys
    TO engine_tenant;
GRANT SELECT, INSERT ON trigger_changes TO engine_tenant;
GRANT SELECT ON rule_stats, events, organizations, checkpoints TO engine_tenant;
GRANT USAGE, SELECT ON SEQUENCE trigger_change_seq TO engine_tenant;

-- Authentication runs before the organization is known, so it reads api_keys as the
-- owner; it returns only the row of the lookup asked for.
CREATE OR REPLACE FUNCTION engine_authenticate(key_lookup TEXT)
RETURNS TABLE (key_id BIGINT, org_id BIGINT, role TEXT, hash BYTEA, revoked BOOLEAN)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT k.id, k.org_id, k.role, k.hash, k.revoked_at IS NOT NULL
      FROM api_keys k
     WHERE k.lookup = key_lookup
$$;
REVOKE ALL ON FUNCTION engine_authenticate(TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION engine_authenticate(TEXT) TO engine_tenant;

-- Whoever migrates may become engine_tenant (the API does SET ROLE on each request).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'engine_tenant', 'MEMBER') THEN
        EXECUTE format('GRANT engine_tenant TO %I', current_user);
    END IF;
END;
$$;
