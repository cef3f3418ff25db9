-- trigger-engine schema, version 5: the firing quota's status, and rule changes numbered
-- in the order they commit.  Idempotent like 001.

-- A firing over its organization's max_firings_per_minute is still written, with this
-- status, and never enqueued: the tenant sees what its quota held back.
ALTER TABLE action_results DROP CONSTRAINT IF EXISTS action_results_status_check;
ALTER TABLE action_results ADD CONSTRAINT action_results_status_check
    CHECK (status IN ('queued', 'running', 'success', 'failed', 'retrying', 'quota_exceeded'));

-- The daemon reads `trigger_changes WHERE seq > <last applied>`.  A sequence hands out
-- numbers when rows are written, not when they commit: a change numbered 10 could commit
-- after one numbered 11 was read, and be skipped for ever.  So each writer takes one
-- transaction-scoped lock before it numbers its change and keeps it until it commits:
-- numbers then follow commit order, and a change seen means every lower number is
-- committed or rolled back.  Rule writes are few and short; they wait for each other,
-- never for events or for the daemon (which only reads).
CREATE OR REPLACE FUNCTION engine_record_trigger_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('trigger-engine:trigger-changes'));
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

-- The quota counts an organization's firings of the last minute from here.
CREATE INDEX IF NOT EXISTS action_results_org_created ON action_results (org_id, created_at)
    WHERE org_id IS NOT NULL;
