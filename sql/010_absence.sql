-- trigger-engine schema: absence rules (`when: {absent: {for: …}}`).  Idempotent like 001.
--
-- One row per watched group of an absence rule.  A matching event re-arms its row in the
-- batch's transaction (quiet_since = the batch's clock, due_at = quiet_since + for_s); a
-- tick of `engine run` fires the rows due and disarms them (due_at NULL) in the same
-- transaction as the action rows it queues, so a firing is recorded once or not at all.
CREATE TABLE IF NOT EXISTS absence_groups (
    trigger_id    TEXT        NOT NULL,
    group_key     TEXT        NOT NULL,   -- canonical JSON of the per values, as trigger_state's
    group_values  JSONB       NOT NULL,   -- the per values, for the firing's context
    org_id        BIGINT,                 -- the rule's organization; NULL: the operator's
    logic_hash    TEXT        NOT NULL,   -- the rule's logic when armed: a change starts afresh
    quiet_since   TIMESTAMPTZ NOT NULL,   -- the last matching event, or when watching began
    last_seen_at  TIMESTAMPTZ,            -- the last matching event; NULL: an expected group never seen
    due_at        TIMESTAMPTZ,            -- when it fires; NULL: fired (or parked) until seen again
    fired_at      TIMESTAMPTZ,            -- its last firing
    PRIMARY KEY (trigger_id, group_key)
);

-- A tick reads only the rows due, oldest first: disarmed rows are not in the index.
CREATE INDEX IF NOT EXISTS absence_groups_due ON absence_groups (due_at) WHERE due_at IS NOT NULL;

SELECT engine_isolate_by_org(ARRAY['absence_groups']);
GRANT SELECT ON absence_groups TO engine_tenant;
