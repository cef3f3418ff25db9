-- trigger-engine schema, version 6: confirmations.  Idempotent like 001.
--
-- An event of a chain with `chains.<id>.confirmations: N` > 0 is evaluated only once its
-- block is N blocks below the chain's head (engine.confirmations).  Until then its id
-- waits here; the cursor itself goes on, so no other chain waits for it.  Rows are added
-- and deleted in the evaluating batch's transaction: an id leaves this table in the same
-- commit that records its evaluation, so it is evaluated exactly once across crashes.
CREATE TABLE IF NOT EXISTS held_events (
    event_id      TEXT        PRIMARY KEY,
    chain_id      BIGINT      NOT NULL,
    block_number  BIGINT      NOT NULL,
    log_index     INTEGER     NOT NULL,
    -- The earliest events row of the id the cursor has read: retention must keep every
    -- events row of a held id, so it keeps everything from here on.
    created_at    TIMESTAMPTZ NOT NULL,
    held_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The head of a chain without a `checkpoints` row: the highest block number the cursor has
-- read for it.  Written only for chains whose events are held (confirmations > 0).
CREATE TABLE IF NOT EXISTS chain_heads_seen (
    chain_id       BIGINT      PRIMARY KEY,
    highest_block  BIGINT      NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
