-- trigger-engine schema, version 9: digests (`group:`) and resolved notices (`resolve:`).
-- Idempotent like 001.
--
-- A firing of a rule with `group` is not an action row: it is kept here, in the batch's
-- transaction, until the flush (engine.digests) turns its group into one action row per
-- action and deletes exactly the firings that digest holds, in one transaction.  So a
-- firing is in the table or in exactly one digest, whatever moment a process dies.

CREATE TABLE IF NOT EXISTS digest_groups (
    trigger_id   TEXT        NOT NULL,
    group_key    TEXT        NOT NULL,   -- canonical JSON of the `by` values
    org_id       BIGINT,
    group_values JSON        NOT NULL,
    -- When the group's pending firings are sent; NULL: nothing pending.
    due_at       TIMESTAMPTZ,
    -- The last digest sent: the next waits for `interval` after it.
    last_sent_at TIMESTAMPTZ,
    digests      BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (trigger_id, group_key)
);
CREATE INDEX IF NOT EXISTS digest_groups_due ON digest_groups (due_at) WHERE due_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS digest_firings (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger_id  TEXT        NOT NULL,
    group_key   TEXT        NOT NULL,
    org_id      BIGINT,
    event_id    TEXT,
    context     JSON        NOT NULL,   -- {event, state, fired_at} of the firing
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS digest_firings_group ON digest_firings (trigger_id, group_key, id);

-- The open alerts of rules with `resolve`: a group that fired and has not been resolved.
-- Its row goes in the transaction that queues the resolve actions: at most one notice.
CREATE TABLE IF NOT EXISTS open_alerts (
    trigger_id    TEXT        NOT NULL,
    group_key     TEXT        NOT NULL,
    org_id        BIGINT,
    group_values  JSON        NOT NULL,
    fired_at      TIMESTAMPTZ NOT NULL,
    last_fired_at TIMESTAMPTZ NOT NULL,
    firings       BIGINT      NOT NULL DEFAULT 1,
    last_event    JSON        NOT NULL,   -- the last firing's event row
    -- `resolve.after`: resolved at this time unless it fires again; NULL without after.
    resolve_at    TIMESTAMPTZ,
    PRIMARY KEY (trigger_id, group_key)
);
CREATE INDEX IF NOT EXISTS open_alerts_resolve_at ON open_alerts (resolve_at)
    WHERE resolve_at IS NOT NULL;

SELECT engine_isolate_by_org(ARRAY['digest_groups', 'digest_firings', 'open_alerts']);

GRANT SELECT ON digest_groups, digest_firings, open_alerts TO engine_tenant;
