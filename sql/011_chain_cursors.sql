-- trigger-engine schema, version 11: confirmations by chain cursors.  Idempotent like 001.
--
-- A chain whose events wait for confirmations (engine.confirmations) has its own row in
-- engine_cursors, named '<cursor>@chain:<chain_id>', while it holds rows: the main cursor
-- passes that chain's rows without evaluating them and the chain cursor evaluates them,
-- in cursor order, once deep enough.  `chain_id` says which chain a cursor reads; NULL:
-- a main cursor, which reads every chain.  Retention keeps what a chain cursor has not
-- passed of its own chain only.
ALTER TABLE engine_cursors ADD COLUMN IF NOT EXISTS chain_id BIGINT;

-- held_events (sql/006) kept one row per held event; chain cursors replace it.  Rows
-- still in it are events the main cursor passed and nobody evaluated yet: dropping them
-- would lose those events, so the migration stops and says what to do instead.
DO $$
BEGIN
    IF to_regclass('held_events') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM held_events) THEN
            RAISE EXCEPTION 'held_events still holds events waiting for confirmations'
                USING HINT = 'run the previous engine version with every chain''s '
                             'confirmations set to 0 until `engine status` shows none held, '
                             'then run `engine migrate` again';
        END IF;
        DROP TABLE held_events;
    END IF;
END;
$$;
