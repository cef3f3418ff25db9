-- trigger-engine schema, version 7: events the indexer deletes or rewrites after the engine
-- evaluated them (chain reorganisations).  Idempotent like 001.
--
-- The indexer's DELETE or UPDATE of an events row is carried into event_removals by the
-- trigger below, in the indexer's own transaction, so no removal can be missed.  The
-- engine takes (deletes) those rows in the transaction of a batch (engine.reorgs): a
-- removal is processed exactly once, together with what it queues.  What the engine
-- concluded is kept in event_reorgs: the operator's record, and what tells a later row
-- of a retracted id from a new event.

CREATE TABLE IF NOT EXISTS event_removals (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       TEXT        NOT NULL,
    op             TEXT        NOT NULL CHECK (op IN ('delete', 'update')),
    chain_id       BIGINT,
    block_number   BIGINT,
    block_hash     TEXT,                    -- the row's, before the change
    new_block_hash TEXT,                    -- an update's, after it
    row_txid       XID8        NOT NULL,    -- the row's cursor position: was it evaluated?
    row_seq        BIGINT      NOT NULL,
    at             TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per conclusion: 'rewrite', an id written again after it was evaluated (a second
-- row, a re-insert after a delete, an update in place: never evaluated again), or
-- 'retraction', an evaluated row deleted (its rules' on_retract actions were queued).
CREATE TABLE IF NOT EXISTS event_reorgs (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          TEXT        NOT NULL,
    kind              TEXT        NOT NULL CHECK (kind IN ('rewrite', 'retraction')),
    chain_id          BIGINT,
    block_number      BIGINT,
    old_block_hash    TEXT,
    new_block_hash    TEXT,
    on_retract_queued INTEGER     NOT NULL DEFAULT 0,   -- action rows queued for it
    seen_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Every batch asks whether its ids were retracted before (engine.reorgs).
CREATE INDEX IF NOT EXISTS event_reorgs_event_idx ON event_reorgs (event_id);

-- Retention deletes old rows inside a statement that sets engine.deleting_for (see the
-- retention_delete_events query): ageing out is not a reorg.  TimescaleDB's drop_chunks
-- fires no row trigger at all.
-- SECURITY DEFINER: the indexer's role may write events without any right on our tables.
CREATE OR REPLACE FUNCTION engine_record_event_removal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF current_setting('engine.deleting_for', true) = 'retention' THEN
        RETURN NULL;
    END IF;
    INSERT INTO event_removals (event_id, op, chain_id, block_number, block_hash,
                                new_block_hash, row_txid, row_seq)
    VALUES (OLD.id, lower(TG_OP), OLD.chain_id, OLD.block_number, OLD.block_hash,
            CASE WHEN TG_OP = 'UPDATE' THEN NEW.block_hash END, OLD.txid, OLD.seq);
    -- The doorbell rings only for inserts: a delete must wake the engine too.
    PERFORM pg_notify('new_event', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS events_removed ON events;
CREATE TRIGGER events_removed
    AFTER DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION engine_record_event_removal();
-- Only an update that changes the row: rewriting the same values is no rewrite.
DROP TRIGGER IF EXISTS events_rewritten ON events;
CREATE TRIGGER events_rewritten
    AFTER UPDATE ON events
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION engine_record_event_removal();

-- Chain data, like events: every organization may read what was reorganised.
GRANT SELECT ON event_reorgs TO engine_tenant;
