-- trigger-engine schema, version 8: silences, runtime disables, and the action status
-- 'silenced'.  Idempotent like 001.
--
-- Both tables are read whole (their active rows) by every `engine run` and `engine worker`
-- about once a second (engine.noise_controls, actions.silence_gate): they stay small, and
-- the processes never ask per event.  org_id NULL is the operator's; a tenant sees and
-- writes only its own rows (row-level security as in 004).

-- Row-level security for tables that carry the organization (org_id), the same policy as
-- sql/004_tenants.sql's: an `engine_tenant` transaction sees and writes only the rows of
-- the organization it set (engine.org_id).  Later migrations call it for their tables.
CREATE OR REPLACE FUNCTION engine_isolate_by_org(tables TEXT[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY tables LOOP
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

-- A silence matches firings whose rule id matches rule_glob (fnmatch) and whose labels or
-- group values equal every matcher; it is active from starts_at until ends_at.  Expiring
-- one moves ends_at to now: the row stays, so `engine silence list --all` and the
-- silence_id of the action rows it held back keep their meaning.
CREATE TABLE IF NOT EXISTS silences (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     BIGINT      REFERENCES organizations (id) ON DELETE CASCADE,
    rule_glob  TEXT        NOT NULL CHECK (length(rule_glob) BETWEEN 1 AND 200),
    matchers   JSONB       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(matchers) = 'object'),
    starts_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ends_at    TIMESTAMPTZ NOT NULL,
    created_by TEXT        NOT NULL,
    comment    TEXT        NOT NULL CHECK (length(comment) BETWEEN 1 AND 2000),
    expired_by TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (ends_at >= starts_at)
);
CREATE INDEX IF NOT EXISTS silences_ends_at ON silences (ends_at);
CREATE INDEX IF NOT EXISTS silences_org ON silences (org_id, id) WHERE org_id IS NOT NULL;

-- A rule disabled at runtime is not evaluated until it is enabled again (the row is
-- deleted) or `until` passes.  Keyed by the engine-wide rule id (triggers.id), not tied to
-- the triggers row: a rule file reloaded, or a rule removed and written again, stays
-- disabled; the file's `enabled:` is only the default.
CREATE TABLE IF NOT EXISTS rule_disables (
    trigger_id  TEXT        PRIMARY KEY,
    org_id      BIGINT      REFERENCES organizations (id) ON DELETE CASCADE,
    disabled_by TEXT        NOT NULL,
    comment     TEXT        CHECK (length(comment) <= 2000),
    disabled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    until       TIMESTAMPTZ
);

-- A silenced firing is written, with the silence that held it back, and never sent.
ALTER TABLE action_results DROP CONSTRAINT IF EXISTS action_results_status_check;
ALTER TABLE action_results ADD CONSTRAINT action_results_status_check
    CHECK (status IN ('queued', 'running', 'success', 'failed', 'retrying', 'quota_exceeded',
                      'silenced'));
ALTER TABLE action_results
    ADD COLUMN IF NOT EXISTS silence_id BIGINT REFERENCES silences (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS action_results_silence ON action_results (silence_id)
    WHERE silence_id IS NOT NULL;

SELECT engine_isolate_by_org(ARRAY['silences', 'rule_disables']);
GRANT SELECT, INSERT, UPDATE, DELETE ON silences, rule_disables TO engine_tenant;
