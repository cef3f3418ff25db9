-- Named queries, loaded by engine.queries. Parameters use PostgreSQL's $n form for
-- both asyncpg (engine run) and psycopg's RawCursor (worker, CLI). Never assembled
-- from values.

-- name: migrations_table
CREATE TABLE IF NOT EXISTS engine_migrations (
    name       TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- name: migrations_lock
SELECT pg_advisory_xact_lock(hashtext('trigger-engine:migrate'));

-- name: applied_migrations
SELECT name FROM engine_migrations ORDER BY name;

-- name: record_migration
INSERT INTO engine_migrations (name) VALUES ($1) ON CONFLICT (name) DO NOTHING;

-- name: database_encoding
-- The current database's encoding: text in anything but UTF8 may not decode as UTF-8.
SELECT current_database(), current_setting('server_encoding');

-- name: timescaledb_available
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb');

-- name: timescaledb_create
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- name: timescaledb_hypertable
SELECT create_hypertable('events', 'created_at', chunk_time_interval => INTERVAL '7 days',
                         if_not_exists => TRUE, migrate_data => TRUE);

-- name: doorbell_on
CREATE OR REPLACE TRIGGER events_notify_trigger
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION engine_notify_new_event();

-- name: doorbell_off
DROP TRIGGER IF EXISTS events_notify_trigger ON events;

-- name: doorbell_installed
SELECT EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgname = 'events_notify_trigger' AND tgrelid = 'events'::regclass);

-- name: leader_try_lock
SELECT pg_try_advisory_lock(hashtext('trigger-engine:leader:' || $1));

-- name: cursor_ensure
INSERT INTO engine_cursors (name) VALUES ($1) ON CONFLICT (name) DO NOTHING;

-- name: cursor_get
-- `ahead`: the cursor names a transaction this cluster has not reached, which only a
-- logical restore (pg_dump into another cluster) produces; new rows would sort below it.
SELECT txid::text AS txid, seq, events,
       txid >= pg_snapshot_xmax(pg_current_snapshot()) AS ahead
  FROM engine_cursors WHERE name = $1;

-- name: cursor_advance
-- Optimistic: only advances from the position this engine read.  A second engine (or
-- a stale one) finds 0 rows and rolls its batch back, so no event is evaluated twice.
UPDATE engine_cursors
   SET txid = $2::text::xid8, seq = $3, events = events + $6, updated_at = now()
 WHERE name = $1 AND txid = $4::text::xid8 AND seq = $5;

-- name: cursor_next_row
-- Where the next row is and its id, for skipping a row whose evaluation cannot be
-- recorded: nothing else of the row is read, and the id comes as its raw bytes
-- (convert_to SQL_ASCII converts nothing), so no value in the row can fail to decode.
SELECT convert_to(id, 'SQL_ASCII') AS id, txid::text AS _txid, seq AS _seq
  FROM events
 WHERE (txid, seq) > ($1::text::xid8, $2::bigint)
   AND txid < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY txid, seq
 LIMIT 1;

-- name: read_batch
-- Gap-safe: only rows of transactions older than the oldest one still running are
-- read, so a transaction that began earlier and commits later is never skipped.  $4, when
-- not NULL, lowers that bound to a horizon engine.tenant_rules took earlier: the events
-- whose rule changes the batch has applied.  A template, filled in by engine.event_rows.read_batch_query only from the names of
-- rules.fields.EVENT_FIELDS: the event columns read, and the check for huge texts in
-- the others.  The internal columns come last: engine.event_rows turns a row into an
-- event by zipping the event columns' names with its values, which stops before them.
-- `_earlier` (engine.event_rows.EARLIER_ROW): whether the row may be a rewrite of an
-- evaluated event (engine.reorgs checks those alone), asked here, by index, where the ids
-- already are, instead of sending them back.
SELECT {columns},
       {unread_checks} AS _unread,
       {earlier} AS _earlier,
       txid::text AS _txid, seq AS _seq
  FROM events
 WHERE (txid, seq) > ($1::text::xid8, $2::bigint)
   AND txid < least(pg_snapshot_xmin(pg_current_snapshot()), $4::text::xid8)
 ORDER BY txid, seq
 LIMIT $3;

-- name: load_states
SELECT s.trigger_id, s.group_key, s.state::text AS state
  FROM trigger_state s
  JOIN unnest($1::text[], $2::text[]) AS k(trigger_id, group_key)
    ON s.trigger_id = k.trigger_id AND s.group_key = k.group_key;

-- name: save_states
INSERT INTO trigger_state (trigger_id, group_key, state, org_id, updated_at)
SELECT t, g, s::jsonb, o, now()
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(t, g, s, o)
ON CONFLICT (trigger_id, group_key) DO UPDATE SET state = EXCLUDED.state, updated_at = now();

-- name: next_action_ids
-- Ids for a COPY of many action rows (see engine.action_rows: COPY_FROM_ROWS). The
-- identity's sequence by its name, so that it is not looked up again for every id
-- (pg_get_serial_sequence() is evaluated per row).
SELECT array_agg(nextval('action_results_id_seq')) FROM generate_series(1, $1::int);

-- name: insert_actions
-- One array per field of engine.action_rows.ActionRow, in its order (a test checks
-- that the three column lists below are its fields).
INSERT INTO action_results (trigger_id, org_id, status, action_index, action_type,
                            action_name, max_attempts, backoff_s, max_backoff_s, spec,
                            event_id, context)
SELECT trigger_id, org_id, status, action_index, action_type,
       action_name, max_attempts, backoff_s, max_backoff_s, spec::json,
       event_id, context::json
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::text[],
              $6::text[], $7::int[], $8::real[], $9::real[], $10::text[],
              $11::text[], $12::text[])
       AS u(trigger_id, org_id, status, action_index, action_type,
            action_name, max_attempts, backoff_s, max_backoff_s, spec,
            event_id, context)
-- An indexer that writes the same event id twice (a replay after its restart; the key
-- is (id, created_at)) must not fail the batch, and must not alert twice.
ON CONFLICT (trigger_id, event_id, action_index) DO NOTHING
RETURNING id, status, org_id;

-- name: add_rule_stats
INSERT INTO rule_stats (trigger_id, org_id, hour, matched, fired, suppressed, errors)
SELECT t, o, date_trunc('hour', now()), m, f, s, e
  FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
              $6::bigint[])
       AS u(t, o, m, f, s, e)
ON CONFLICT (trigger_id, hour) DO UPDATE
   SET matched = rule_stats.matched + EXCLUDED.matched,
       fired = rule_stats.fired + EXCLUDED.fired,
       suppressed = rule_stats.suppressed + EXCLUDED.suppressed,
       errors = rule_stats.errors + EXCLUDED.errors;

-- name: triggers_all
-- The file rules (the operator's): tenants' rules are written by the API, never mirrored.
SELECT id, logic_hash, content_hash FROM triggers WHERE org_id IS NULL;

-- name: triggers_mirror
-- Every change of a rule reload in one statement: $1 the ids of rules gone, $2 the ids
-- whose state starts afresh (gone, or their logic changed), $3-$10 the rules to insert
-- or update, one array per column.
WITH gone AS (
    DELETE FROM triggers t USING unnest($1::text[]) AS g(id) WHERE t.id = g.id
), reset AS (
    DELETE FROM trigger_state s USING unnest($2::text[]) AS r(id) WHERE s.trigger_id = r.id
)
INSERT INTO triggers (id, owner, description, enabled, document, source_file, content_hash,
                      logic_hash)
SELECT id, owner, description, enabled, document::jsonb, source_file, content_hash, logic_hash
  FROM unnest($3::text[], $4::text[], $5::text[], $6::boolean[], $7::text[], $8::text[],
              $9::text[], $10::text[])
    AS r(id, owner, description, enabled, document, source_file, content_hash, logic_hash)
ON CONFLICT (id) DO UPDATE
   SET owner = EXCLUDED.owner, description = EXCLUDED.description,
       enabled = EXCLUDED.enabled, document = EXCLUDED.document,
       source_file = EXCLUDED.source_file, content_hash = EXCLUDED.content_hash,
       logic_hash = EXCLUDED.logic_hash, updated_at = now();

-- name: claim_action
-- Atomic claim: only a row that is queued, due for a retry, or whose previous
-- worker's lease ran out can be taken; anything else means the job has nothing to do.
-- A worker that died mid-attempt costs that attempt, with $3 extra attempts allowed
-- for such crashes, so a job that kills every worker running it ends as a dead letter.
UPDATE action_results
   SET status = 'running', attempts = attempts + 1,
       lease_expires_at = now() + make_interval(secs => $2),
       executed_at = now(), next_attempt_at = NULL
 WHERE id = $1
   AND (status = 'queued'
        OR (status = 'retrying' AND next_attempt_at <= now())
        OR (status = 'running' AND lease_expires_at < now()
            AND attempts < max_attempts + $3))
RETURNING trigger_id, event_id, action_index, action_type, action_name, attempts,
          max_attempts, backoff_s, max_backoff_s, spec::text AS spec, context::text AS context,
          org_id;

-- name: finish_action
-- Fenced by the attempt number: a worker whose lease expired and whose row was taken
-- over cannot overwrite the newer attempt's result.
UPDATE action_results
   SET status = $3, duration_ms = $4, error_message = $5, response_data = $6::text::jsonb,
       next_attempt_at = CASE WHEN $3 = 'retrying'
                              THEN now() + make_interval(secs => $7) END,
       lease_expires_at = NULL
 WHERE id = $1 AND attempts = $2 AND status = 'running'
RETURNING id;

-- name: due_actions
-- Rows to (re-)enqueue: queued ones older than the grace period (a crash between
-- commit and enqueue, or Redis down), retries that are due, expired leases.
SELECT id, status, org_id FROM action_results
 WHERE (status = 'queued' AND created_at < now() - make_interval(secs => $1))
    OR (status = 'retrying' AND next_attempt_at <= now())
    OR (status = 'running' AND lease_expires_at < now() AND attempts < max_attempts + $3)
 ORDER BY id
 LIMIT $2;

-- name: fail_abandoned
-- Rows whose workers died during every attempt they were allowed: dead letters.
UPDATE action_results
   SET status = 'failed', lease_expires_at = NULL,
       error_message = 'the worker stopped during each of its ' || attempts
                       || ' attempts (lease expired); replay with engine actions retry'
 WHERE status = 'running' AND lease_expires_at < now() AND attempts >= max_attempts + $1
RETURNING id;

-- name: agent_token_uri
SELECT token_uri FROM events
 WHERE chain_id = $1 AND agent_id = $2 AND registry = 'identity'
   AND event_type IN ('Registered', 'URIUpdated') AND token_uri IS NOT NULL
 ORDER BY block_number DESC, log_index DESC
 LIMIT 1;

-- name: insert_event
INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash, log_index,
                    registry, event_type, agent_id, "timestamp", owner, token_uri,
                    metadata_key, metadata_value, client_address, feedback_index, score,
                    tag1, tag2, file_uri, file_hash, validator_address, request_hash,
                    response, response_uri, response_hash, tag, value, value_decimals,
                    endpoint, request_uri)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31)
RETURNING id;

-- name: failed_actions
SELECT id, trigger_id, event_id, action_type, action_name, attempts, error_message,
       created_at, executed_at
  FROM action_results
 WHERE status = 'failed'
   AND ($1::text IS NULL OR trigger_id = $1)
   AND ($2::text IS NULL OR action_type = $2)
   AND created_at >= now() - make_interval(secs => $3)
 ORDER BY id
 LIMIT $4;

-- name: requeue_failed
UPDATE action_results
   SET status = 'queued', attempts = 0, next_attempt_at = NULL, error_message = NULL
 WHERE id = ANY($1::bigint[]) AND status = 'failed'
RETURNING id, org_id;

-- name: status_actions
SELECT status, count(*) AS n FROM action_results GROUP BY status;

-- name: status_cursor
SELECT c.name, c.txid::text AS txid, c.seq, c.events, c.updated_at,
       (SELECT count(*) FROM events e WHERE (e.txid, e.seq) > (c.txid, c.seq)) AS pending,
       pg_snapshot_xmin(pg_current_snapshot())::text AS xmin
  FROM engine_cursors c WHERE c.chain_id IS NULL ORDER BY c.name;

-- name: ping
SELECT 1;

-- name: notify_probe
SELECT pg_notify($1, $2);

-- name: status_rules
SELECT trigger_id, sum(matched) AS matched, sum(fired) AS fired,
       sum(suppressed) AS suppressed, sum(errors) AS errors
  FROM rule_stats
 WHERE hour >= date_trunc('hour', now() - interval '1 hour')
 GROUP BY trigger_id ORDER BY trigger_id;

-- name: status_blocker
-- The oldest running transaction holding back the gap-safe cursor, if any.
SELECT pid, backend_xid::text AS xid, now() - xact_start AS running_for,
       left(query, 200) AS query
  FROM pg_stat_activity
 WHERE backend_xid IS NOT NULL
 ORDER BY age(backend_xid) DESC
 LIMIT 1;

-- name: metrics_blocker
-- status_blocker for /metrics: the oldest transaction with an xid, anywhere in the
-- cluster (xids are cluster-wide, so any database's transaction holds the cursor back).
SELECT pid, extract(epoch FROM now() - xact_start)::float8 AS running_for_s
  FROM pg_stat_activity
 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
 ORDER BY age(backend_xid) DESC
 LIMIT 1;

-- name: metrics_actions
SELECT action_type, status, count(*) AS n, coalesce(sum(duration_ms), 0) AS duration_ms
  FROM action_results GROUP BY action_type, status;

-- name: metrics_lag
-- Events committed but not yet evaluated, and the block-time age of the oldest of them.
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now())::bigint - min(e."timestamp"), 0) AS oldest_age_s
  FROM events e, engine_cursors c
 WHERE c.name = $1 AND (e.txid, e.seq) > (c.txid, c.seq);

-- name: backtest_count
SELECT count(*) FROM events WHERE "timestamp" >= $1 AND "timestamp" < $2;

-- name: backtest_events
-- The same order as the live cursor, so a backtest gives the live run's answer; the
-- oldest $3 events of the range at most (NULL: all of them).
SELECT id, chain_id, block_number, block_hash, transaction_hash, log_index, registry,
       event_type, agent_id, "timestamp", owner, token_uri, metadata_key, metadata_value,
       client_address, feedback_index, score, tag1, tag2, file_uri, file_hash,
       validator_address, request_hash, response, response_uri, response_hash, tag,
       created_at, value, value_decimals, endpoint, request_uri
  FROM events
 WHERE "timestamp" >= $1 AND "timestamp" < $2
 ORDER BY txid, seq
 LIMIT $3;

-- name: status_cursor_lag
-- Per cursor: its position, the committed events after it, and how far behind it is
-- (the block-time age of the oldest of them; 0 when none is pending).
SELECT c.name, c.txid::text AS txid, c.seq, c.events, c.updated_at,
       extract(epoch FROM now() - c.updated_at)::bigint AS since_advance_s,
       p.pending,
       CASE WHEN p.pending = 0 THEN 0
            ELSE greatest(extract(epoch FROM now())::bigint - p.oldest_ts, 0) END AS lag_s
  FROM engine_cursors c
 CROSS JOIN LATERAL (SELECT count(*) AS pending, min(e."timestamp") AS oldest_ts
                       FROM events e WHERE (e.txid, e.seq) > (c.txid, c.seq)) p
 WHERE c.chain_id IS NULL  -- chain cursors: `engine status` shows them per chain
 ORDER BY c.name;

-- name: status_event_rate
-- Events written in the last minute (by created_at, the indexer's insert time).
SELECT count(*) FROM events WHERE created_at >= now() - interval '60 seconds';

-- name: status_triggers
SELECT count(*) AS loaded, count(*) FILTER (WHERE enabled) AS enabled,
       max(updated_at) AS last_change
  FROM triggers;

-- name: status_oldest_queued
SELECT extract(epoch FROM now() - min(created_at))::bigint FROM action_results
 WHERE status = 'queued';

-- name: retention_delete_events
-- One batch of events older than $1 days, by insert time.  An event that some cursor
-- has not evaluated yet is never deleted (no event is skipped, even by retention), and
-- nothing is deleted before any cursor exists; a chain cursor (engine.confirmations)
-- keeps only its own chain's rows.  The conditions sit inside the LIMIT so that old rows
-- which must stay never fill a batch and stop the rows behind them.
-- `marked` tells the removal trigger (sql/007_reorgs.sql) that ageing out is not a
-- reorg, for this statement's transaction.
DELETE FROM events e
 USING (SELECT o.id, o.created_at FROM events o
         WHERE o.created_at < now() - make_interval(days => $1)
           AND EXISTS (SELECT 1 FROM engine_cursors)
           AND NOT EXISTS (SELECT 1 FROM engine_cursors c
                            WHERE (o.txid, o.seq) > (c.txid, c.seq)
                              AND (c.chain_id IS NULL OR c.chain_id = o.chain_id))
         ORDER BY o.created_at
         LIMIT $2) old,
       (SELECT set_config('engine.deleting_for', 'retention', true)) marked
 WHERE e.id = old.id AND e.created_at = old.created_at;

-- name: retention_delete_action_results
-- One batch of finished audit rows older than $1 days; queued, running and retrying
-- rows are work still to do and are kept whatever their age.  Every other status is an
-- outcome (delivered, dead letter, held back by a quota, silenced...).
DELETE FROM action_results
 WHERE id = ANY (ARRAY(SELECT id FROM action_results
                        WHERE created_at < now() - make_interval(days => $1)
                          AND status NOT IN ('queued', 'running', 'retrying')
                        ORDER BY id
                        LIMIT $2));

-- name: retention_delete_event_reorgs
-- One batch of reorg records older than $1 days (events_days).  A record tells a later
-- row of its id from a new event; past the events' own age the rows it would guard
-- against are gone with them, and so is the operator's interest in the record.
DELETE FROM event_reorgs
 WHERE id = ANY (ARRAY(SELECT id FROM event_reorgs
                        WHERE seen_at < now() - make_interval(days => $1)
                        ORDER BY id
                        LIMIT $2));

-- name: retention_delete_trigger_changes
-- One batch of rule changes older than $1 days.  The daemon reads a change within a
-- second of its commit and a new leader reads every rule afresh, so old changes serve
-- nobody; the newest is kept whatever its age: its number is where the next leader
-- starts following (tenant_changes_last).
DELETE FROM trigger_changes
 WHERE seq = ANY (ARRAY(SELECT seq FROM trigger_changes
                         WHERE at < now() - make_interval(days => $1)
                           AND seq < (SELECT max(seq) FROM trigger_changes)
                         ORDER BY seq
                         LIMIT $2));

-- name: retention_events_is_hypertable
-- The TimescaleDB catalog only exists with the extension: ask for it by name first.
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL;

-- name: retention_hypertable_check
SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable
                WHERE schema_name = current_schema() AND table_name = 'events');

-- name: retention_event_chunks_cutoff
-- TimescaleDB drops whole chunks, all of whose rows are older than a cutoff.  The cutoff
-- is $1 days ago, or earlier: the insert time of the oldest event that some cursor has
-- not passed (for a chain cursor: of its chain), so that no chunk holding such an event
-- goes.  NULL before any cursor exists: nothing may go then.  Each cursor's look uses
-- events_cursor_idx from its position on.
SELECT least(now() - make_interval(days => $1), min(waiting.created_at))
  FROM engine_cursors c
 CROSS JOIN LATERAL (SELECT min(e.created_at) AS created_at FROM events e
                      WHERE (e.txid, e.seq) > (c.txid, c.seq)
                        AND (c.chain_id IS NULL OR e.chain_id = c.chain_id)) waiting
HAVING count(*) > 0;

-- name: retention_drop_event_chunks
-- TimescaleDB: whole chunks that end before $1 (a cutoff from the query above) go at
-- once, instead of row deletes.
SELECT count(*) FROM drop_chunks('events', older_than => $1::timestamptz);

-- name: stats_views
-- The statistics views that the engine refreshes itself: plain materialized views
-- (relkind 'm'); a continuous aggregate is refreshed by TimescaleDB's own policy.
SELECT c.relname, c.relispopulated
  FROM pg_class c
 WHERE c.relname IN ('events_hourly', 'action_metrics_hourly')
   AND c.relkind = 'm'
   AND c.relnamespace = current_schema()::regnamespace
 ORDER BY c.relname;

-- name: refresh_events_hourly
REFRESH MATERIALIZED VIEW events_hourly;

-- name: refresh_events_hourly_concurrently
REFRESH MATERIALIZED VIEW CONCURRENTLY events_hourly;

-- name: refresh_action_metrics_hourly
REFRESH MATERIALIZED VIEW action_metrics_hourly;

-- name: refresh_action_metrics_hourly_concurrently
REFRESH MATERIALIZED VIEW CONCURRENTLY action_metrics_hourly;

-- name: metrics_action_durations
-- Finished attempts since this engine process started ($1, unix seconds), by type and
-- outcome, counted per duration bucket ($2: the buckets' upper bounds in seconds;
-- width_bucket gives the number of bounds at or below the duration).  Rows older than
-- the process are left out so that retention deletes never make the histogram shrink.
SELECT action_type, status,
       width_bucket(duration_ms / 1000.0, $2::float8[]) AS bucket,
       count(*) AS n, sum(duration_ms) AS duration_ms
  FROM action_results
 WHERE status IN ('success', 'failed')
   AND executed_at >= to_timestamp($1)
   AND duration_ms IS NOT NULL
 GROUP BY 1, 2, 3;

-- name: reset_state_hold_cursors
-- A batch advances its cursor row before it loads rule states, in one transaction:
-- holding every cursor row makes `engine rules reset-state` fall between two batches.
SELECT name FROM engine_cursors ORDER BY name FOR UPDATE;

-- name: reset_state_rule_per
SELECT (document->'per')::text FROM triggers WHERE id = $1;

-- name: reset_state_group_keys
SELECT group_key FROM trigger_state WHERE trigger_id = $1 ORDER BY group_key;

-- name: reset_state_delete
DELETE FROM trigger_state WHERE trigger_id = $1 AND group_key = ANY ($2::text[])
RETURNING group_key;

-- name: api_become_tenant
-- `engine api`, first statement of every request's transaction: from here on the
-- row-level security policies of sql/004 apply, whoever the configured DSN's user is.
SET LOCAL ROLE engine_tenant;

-- name: api_authenticate
SELECT key_id, org_id, role, hash, revoked FROM engine_authenticate($1);

-- name: api_set_org
SELECT set_config('engine.org_id', $1, true);

-- name: api_touch_key
-- At most one write a minute per key, so that reading does not mean writing each time.
UPDATE api_keys SET last_used_at = now()
 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds');

-- name: api_organization
SELECT name, max_rules FROM organizations WHERE id = $1;

-- name: api_lock_org_rules
-- Creations of one organization's rules one at a time, so that two at once cannot both
-- pass the max_rules check.
SELECT pg_advisory_xact_lock(hashtextextended('trigger-engine:org-rules:' || $1::bigint::text, 0));

-- name: api_count_rules
SELECT count(*) FROM triggers WHERE org_id = $1;

-- name: api_rule_hashes
SELECT content_hash, logic_hash FROM triggers WHERE id = $1;

-- name: api_rule_insert
INSERT INTO triggers (id, org_id, rule_id, owner, description, enabled, document, source_file,
                      content_hash, logic_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, NULL, $8, $9)
RETURNING rule_id, document::text AS document, version, created_at, updated_at;

-- name: api_rule_update
UPDATE triggers
   SET owner = $2, description = $3, enabled = $4, document = $5::text::jsonb,
       content_hash = $6, logic_hash = $7, updated_at = now()
 WHERE id = $1
RETURNING rule_id, document::text AS document, version, created_at, updated_at;

-- name: api_rule_reset_state
DELETE FROM trigger_state WHERE trigger_id = $1;

-- name: api_rule_get
SELECT rule_id, document::text AS document, version, created_at, updated_at
  FROM triggers WHERE id = $1;

-- name: api_rules_page
-- One organization's rules by rule id, after the cursor $2 (NULL: from the first).
SELECT rule_id, document::text AS document, version, created_at, updated_at
  FROM triggers
 WHERE org_id = $1 AND ($2::text IS NULL OR rule_id > $2)
 ORDER BY rule_id
 LIMIT $3;

-- name: api_rule_delete
DELETE FROM triggers WHERE id = $1 RETURNING id;

-- name: api_actions_page
-- An organization's audit rows, newest first, before the id $4 (NULL: the newest).  No
-- spec or context: they hold what the action was rendered from.
SELECT id, substr(trigger_id, strpos(trigger_id, '/') + 1) AS rule, event_id, action_index,
       action_type, action_name, status, attempts, error_message,
       response_data::text AS response_data, created_at, executed_at, next_attempt_at,
       silence_id
  FROM action_results
 WHERE org_id = $1
   AND ($2::text IS NULL OR trigger_id = $2)
   AND ($3::text IS NULL OR status = $3)
   AND ($4::bigint IS NULL OR id < $4)
 ORDER BY id DESC
 LIMIT $5;

-- name: api_action_get
SELECT id, substr(trigger_id, strpos(trigger_id, '/') + 1) AS rule, event_id, action_index,
       action_type, action_name, status, attempts, error_message,
       response_data::text AS response_data, created_at, executed_at, next_attempt_at,
       silence_id
  FROM action_results
 WHERE id = $1;

-- name: api_events_page
-- Indexed events (public chain data, shared by every organization), newest first in the
-- cursor's order, before the position ($5, $6) (NULL: the newest).
SELECT id, chain_id, block_number, block_hash, transaction_hash, log_index, registry,
       event_type, agent_id, "timestamp", owner, token_uri, metadata_key, metadata_value,
       client_address, feedback_index, score, tag1, tag2, file_uri, file_hash,
       validator_address, request_hash, response, response_uri, response_hash, tag,
       value::text AS value, value_decimals, endpoint, request_uri, created_at,
       txid::text AS _txid, seq AS _seq
  FROM events
 WHERE ($1::bigint IS NULL OR chain_id = $1)
   AND ($2::bigint IS NULL OR agent_id = $2)
   AND ($3::text IS NULL OR registry = $3)
   AND ($4::text IS NULL OR event_type = $4)
   AND ($5::text IS NULL OR (txid, seq) < ($5::text::xid8, $6::bigint))
 ORDER BY txid DESC, seq DESC
 LIMIT $7;

-- name: api_key_insert
INSERT INTO api_keys (org_id, role, name, lookup, hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, role, name, created_at, last_used_at, revoked_at;

-- name: api_keys_list
SELECT id, role, name, created_at, last_used_at, revoked_at
  FROM api_keys WHERE org_id = $1 ORDER BY id;

-- name: api_key_revoke
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id;

-- name: tenant_rules_all
-- Every organization's rule, read at the start of leadership in the same snapshot as
-- tenant_changes_last (a REPEATABLE READ transaction).
SELECT id, org_id, document::text AS document, content_hash, logic_hash
  FROM triggers WHERE org_id IS NOT NULL
 ORDER BY id;

-- name: tenant_changes_last
-- Numbers follow commit order (sql/005_quota.sql): everything up to this one is in the
-- snapshot that reads it.
SELECT coalesce(max(seq), 0) FROM trigger_changes;

-- name: tenant_horizon
-- Every transaction below this id had finished when this statement's snapshot was taken:
-- read before the changes, it bounds the events those changes cover (engine.tenant_rules).
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: tenant_changes_since
-- The rule changes committed after $1, each with the rule as it is now (no row: deleted),
-- in one statement so the two agree.  Operators' file rules (org_id NULL) come through
-- the rule files, not here, but their numbers are returned so they are passed over.
SELECT c.seq, c.trigger_id, c.org_id, t.document::text AS document, t.content_hash,
       t.logic_hash
  FROM trigger_changes c
  LEFT JOIN triggers t ON t.id = c.trigger_id
 WHERE c.seq > $1
 ORDER BY c.seq
 LIMIT $2;

-- name: tenant_changes_probe
-- A batch's first statement: a horizon, and whether a change numbered after $1 (the last
-- compiled) is in the same snapshot.  Not one: every change before the horizon is compiled.
-- max(seq) is one step down the primary key whatever plan PostgreSQL picks: a range test
-- on seq, once planned generically (after five runs of the prepared statement), scans the
-- whole log, which retention keeps for days.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon,
       (SELECT coalesce(max(seq), 0) FROM trigger_changes) > $1 AS pending;

-- name: tenant_state_reset
-- The state of organizations' rules gone or changed in where/when/per, deleted again by
-- the batch that applies the change: a batch that stepped the old rule may have written
-- it back after the API's own delete.
DELETE FROM trigger_state WHERE trigger_id = ANY ($1::text[]);

-- name: org_firing_quotas
SELECT id, max_firings_per_minute FROM organizations;

-- name: org_create
-- The CLI's (the tables' owner) organization and key queries: engine/tenants/orgs.py.
INSERT INTO organizations (name) VALUES ($1)
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: org_id_by_name
SELECT id FROM organizations WHERE name = $1;

-- name: org_list
SELECT o.id, o.name, o.max_rules, o.max_firings_per_minute, o.allow_private, o.created_at,
       (SELECT count(*) FROM triggers t WHERE t.org_id = o.id),
       (SELECT count(*) FROM api_keys k WHERE k.org_id = o.id AND k.revoked_at IS NULL)
  FROM organizations o
 ORDER BY o.name;

-- name: org_set
-- $2/$4: whether max_rules/max_firings_per_minute change ($3/$5 NULL: back to the
-- config default); $6 NULL keeps allow_private.
UPDATE organizations
   SET max_rules = CASE WHEN $2::boolean THEN $3::integer ELSE max_rules END,
       max_firings_per_minute =
           CASE WHEN $4::boolean THEN $5::integer ELSE max_firings_per_minute END,
       allow_private = coalesce($6::boolean, allow_private)
 WHERE name = $1
RETURNING id;

-- name: key_create
INSERT INTO api_keys (org_id, role, name, lookup, hash) VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: key_list
SELECT id, role, name, created_at, last_used_at, revoked_at
  FROM api_keys
 WHERE org_id = $1
 ORDER BY id;

-- name: key_revoke
-- The first revocation's time is kept: revoking twice changes nothing.
UPDATE api_keys k
   SET revoked_at = coalesce(k.revoked_at, now())
  FROM organizations o
 WHERE k.id = $1 AND o.id = k.org_id
RETURNING k.id, o.name, k.role, k.name, k.revoked_at, k.revoked_at = now();

-- name: org_secret_sealed
-- A worker (the tables' owner, not subject to row-level security) reads a tenant
-- action's secrets: the organization is always named, never implied.
SELECT ciphertext FROM secrets WHERE org_id = $1 AND name = $2;

-- name: org_agent_token_sealed
SELECT ciphertext FROM agent_tokens WHERE org_id = $1 AND chain_id = $2 AND agent_id = $3;

-- name: org_allow_private
SELECT allow_private FROM organizations WHERE id = $1;

-- name: api_secret_upsert
-- `created`: whether the row is new (xmax is 0 only for a row this statement inserted).
INSERT INTO secrets AS s (org_id, name, ciphertext)
VALUES ($1, $2, $3)
ON CONFLICT (org_id, name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = now()
RETURNING s.name, s.created_at, s.updated_at, (s.xmax = 0) AS created;

-- name: api_secrets_list
SELECT name, created_at, updated_at FROM secrets WHERE org_id = $1 ORDER BY name;

-- name: api_secret_delete
DELETE FROM secrets WHERE org_id = $1 AND name = $2 RETURNING name;

-- name: api_agent_token_upsert
INSERT INTO agent_tokens AS t (org_id, chain_id, agent_id, ciphertext)
VALUES ($1, $2, $3, $4)
ON CONFLICT (org_id, chain_id, agent_id)
DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = now()
RETURNING t.chain_id, t.agent_id, t.updated_at, (t.xmax = 0) AS created;

-- name: api_agent_tokens_list
SELECT chain_id, agent_id, updated_at FROM agent_tokens WHERE org_id = $1
 ORDER BY chain_id, agent_id;

-- name: api_agent_token_delete
DELETE FROM agent_tokens WHERE org_id = $1 AND chain_id = $2 AND agent_id = $3
RETURNING agent_id;

-- name: api_follows_page
-- One organization's follows (rules with the ids POST /v1/follows gives), by rule id.
SELECT rule_id, document::text AS document, version, created_at, updated_at
  FROM triggers
 WHERE org_id = $1 AND rule_id ~ '^follow-[0-9]+-[0-9]+$'
   AND ($2::text IS NULL OR rule_id > $2)
 ORDER BY rule_id
 LIMIT $3;

-- name: api_statement_timeout
SELECT set_config('statement_timeout', $1, true);

-- The indexer's own tables (engine.source_tables, `engine migrate` with `source:`).

-- name: source_table_type
-- NULL when there is no such table (or the role may not see it).
SELECT table_type FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2;

-- name: source_table_lookalikes
-- Tables whose name differs only in case: "ponder.event" when the table is "Event".
SELECT table_schema || '.' || table_name FROM information_schema.tables
 WHERE lower(table_schema) = lower($1) AND lower(table_name) = lower($2)
 ORDER BY 1;

-- name: source_table_is_ours
-- The engine's own table: copying it into itself would never end.
SELECT to_regclass(format('%I.%I', $1::text, $2::text))
       IN (to_regclass('events'), to_regclass('checkpoints'));

-- name: source_columns
-- A table's columns with their types past any domain ($1 schema, $2 table).
SELECT c.column_name, t.oid::int8, format_type(t.oid, NULL), c.is_nullable = 'YES',
       c.column_default IS NOT NULL OR c.is_identity = 'YES', t.typcategory = 'N'
  FROM information_schema.columns c
  JOIN pg_type t ON t.oid = to_regtype(quote_ident(c.udt_schema) || '.' || quote_ident(c.udt_name))
 WHERE c.table_schema = $1 AND c.table_name = $2
 ORDER BY c.ordinal_position;

-- name: source_schema_of
-- The schema of one of our tables, as this connection's search_path finds it.
SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass($1);

-- name: source_casts
SELECT castsource::int8, casttarget::int8, castcontext::text FROM pg_cast;

-- name: source_triggers_attached
-- Every trigger `engine migrate` attached for `source:`, on whichever table it is.
SELECT n.nspname, c.relname, t.tgname
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal AND t.tgname LIKE 'engine\_source\_%'
 ORDER BY 1, 2, 3;

-- name: source_functions_attached
SELECT n.nspname, p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.proname LIKE 'engine\_source\_%'
 ORDER BY 1, 2;

-- Digests (engine.digests) -------------------------------------------------------------

-- name: digest_add_firings
INSERT INTO digest_firings (trigger_id, group_key, org_id, event_id, context)
SELECT t, g, o, e, c::json
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) AS u(t, g, o, e, c);

-- name: digest_open_groups
-- A group with nothing pending becomes due `wait` after this firing, and not sooner than
-- `interval` after its last digest; a group already due keeps its time.
INSERT INTO digest_groups AS g (trigger_id, group_key, org_id, group_values, due_at)
SELECT u.t, u.k, u.o, u.v::json,
       greatest(to_timestamp(u.wait_until), prev.last_sent_at + make_interval(secs => u.interval_s))
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::float8[], $6::float8[])
       AS u(t, k, o, v, wait_until, interval_s)
  LEFT JOIN digest_groups prev ON prev.trigger_id = u.t AND prev.group_key = u.k
ON CONFLICT (trigger_id, group_key) DO UPDATE SET due_at = coalesce(g.due_at, EXCLUDED.due_at);

-- name: digest_due_groups
SELECT trigger_id, group_key, group_values::text AS group_values
  FROM digest_groups
 WHERE due_at <= to_timestamp($1)
 ORDER BY due_at
 LIMIT $2
   FOR UPDATE SKIP LOCKED;

-- name: digest_take_firings
-- Deletes every firing of the group and returns how many, the first one's id and the
-- first $3 of them: the digest holds exactly what this statement deleted.
WITH gone AS (
    DELETE FROM digest_firings WHERE trigger_id = $1 AND group_key = $2
    RETURNING id, context
)
SELECT count(*) AS count, min(id) AS first_id,
       (SELECT coalesce(json_agg(listed.context ORDER BY listed.id), '[]')::text
          FROM (SELECT id, context FROM gone ORDER BY id LIMIT $3) AS listed) AS firings
  FROM gone;

-- name: digest_sent
UPDATE digest_groups g
   SET due_at = NULL, last_sent_at = to_timestamp($3), digests = g.digests + 1
  FROM unnest($1::text[], $2::text[]) AS u(t, k)
 WHERE g.trigger_id = u.t AND g.group_key = u.k;

-- name: digest_postpone
UPDATE digest_groups SET due_at = to_timestamp($3) WHERE trigger_id = $1 AND group_key = $2;

-- name: digest_forget_idle
-- A group with nothing pending whose `interval` has passed starts afresh: its row goes.
DELETE FROM digest_groups g
 USING unnest($1::text[], $2::float8[]) AS u(t, interval_s)
 WHERE g.trigger_id = u.t AND g.due_at IS NULL
   AND g.last_sent_at < to_timestamp($3) - make_interval(secs => u.interval_s);

-- Resolved notices (engine.resolves) ----------------------------------------------------

-- name: open_alerts_load
SELECT a.trigger_id, a.group_key, a.org_id, a.group_values::text AS group_values,
       extract(epoch FROM a.fired_at)::float8 AS fired_at,
       extract(epoch FROM a.last_fired_at)::float8 AS last_fired_at,
       a.firings, a.last_event::text AS last_event,
       extract(epoch FROM a.resolve_at)::float8 AS resolve_at
  FROM open_alerts a
  JOIN unnest($1::text[], $2::text[]) AS k(trigger_id, group_key)
    ON a.trigger_id = k.trigger_id AND a.group_key = k.group_key
   FOR UPDATE OF a;

-- name: open_alerts_save
INSERT INTO open_alerts (trigger_id, group_key, org_id, group_values, fired_at,
                         last_fired_at, firings, last_event, resolve_at)
SELECT t, k, o, v::json, to_timestamp(f), to_timestamp(l), n, e::json, to_timestamp(r)
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::float8[], $6::float8[],
              $7::bigint[], $8::text[], $9::float8[]) AS u(t, k, o, v, f, l, n, e, r)
ON CONFLICT (trigger_id, group_key) DO UPDATE
   SET last_fired_at = EXCLUDED.last_fired_at, firings = EXCLUDED.firings,
       last_event = EXCLUDED.last_event, resolve_at = EXCLUDED.resolve_at;

-- name: open_alerts_delete
DELETE FROM open_alerts a
 USING unnest($1::text[], $2::text[]) AS u(t, k)
 WHERE a.trigger_id = u.t AND a.group_key = u.k;

-- name: open_alerts_due
SELECT trigger_id, group_key, org_id, group_values::text AS group_values,
       extract(epoch FROM fired_at)::float8 AS fired_at,
       extract(epoch FROM last_fired_at)::float8 AS last_fired_at,
       firings, last_event::text AS last_event,
       extract(epoch FROM resolve_at)::float8 AS resolve_at
  FROM open_alerts
 WHERE resolve_at <= to_timestamp($1)
 ORDER BY resolve_at
 LIMIT $2
   FOR UPDATE SKIP LOCKED;

-- name: open_alerts_postpone
UPDATE open_alerts SET resolve_at = to_timestamp($3) WHERE trigger_id = $1 AND group_key = $2;

-- name: reorg_take_removals
-- The removals committed so far (at most $3), taken: deleted in the batch's transaction,
-- so each is processed once.  `evaluated`: the cursor that evaluates the row's chain had
-- passed the row: the chain's cursor ($4 || '@chain:' || chain id) while it holds rows
-- for confirmations, else the main one ($1, $2).  `still_there`: another row of the id
-- that cursor passed is still in events (a duplicate was deleted, the event was not).
WITH taken AS (
    DELETE FROM event_removals
     WHERE seq IN (SELECT seq FROM event_removals ORDER BY seq LIMIT $3)
    RETURNING seq, event_id, op, chain_id, block_number, block_hash, new_block_hash,
              row_txid, row_seq, at
)
SELECT t.event_id, t.op, t.chain_id, t.block_number, t.block_hash, t.new_block_hash, t.at,
       (t.row_txid, t.row_seq) <= (p.txid, p.seq) AS evaluated,
       EXISTS (SELECT 1 FROM events e
                WHERE e.id = t.event_id AND (e.txid, e.seq) <= (p.txid, p.seq)) AS still_there
  FROM taken t
  LEFT JOIN engine_cursors c ON c.name = $4 || '@chain:' || t.chain_id
 CROSS JOIN LATERAL (SELECT coalesce(c.txid, $1::text::xid8) AS txid,
                            coalesce(c.seq, $2::bigint) AS seq) p
 ORDER BY t.seq;

-- name: reorg_evaluated_ids
-- Which of a batch's ids ($1) were evaluated before: a row of the id that the cursor
-- evaluating it had passed ($2, $3: that cursor's position, one per id: the main cursor
-- or the chain cursor of engine.confirmations), or an evaluated row of it that was
-- deleted (a retraction).  One index probe per id (events' primary key starts with id),
-- written as a join so the planner never trades them for a scan of the whole table
-- filtered by the array.  (LATERAL ... LIMIT 1 for events: `= ANY` or EXISTS there
-- became a scan of all of it.)
SELECT u.id
  FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(id, txid, seq)
 CROSS JOIN LATERAL (SELECT 1 FROM events e
                      WHERE e.id = u.id AND (e.txid, e.seq) <= (u.txid::xid8, u.seq)
                      LIMIT 1) passed
UNION
SELECT r.event_id FROM event_reorgs r
 WHERE r.event_id = ANY($1::text[]) AND r.kind = 'retraction';

-- name: reorg_record_rewritten_rows
-- The rows at positions ($1 txids, $2 seqs) whose ids were evaluated before, recorded as
-- rewrites: the block hash they came with, and the one evaluated (the id's first row, or
-- the retracted row's).
INSERT INTO event_reorgs (event_id, kind, chain_id, block_number, old_block_hash,
                          new_block_hash)
SELECT e.id, 'rewrite', e.chain_id, e.block_number, prev.block_hash, e.block_hash
  FROM unnest($1::text[], $2::bigint[]) AS u(txid, seq)
  JOIN events e ON (e.txid, e.seq) = (u.txid::xid8, u.seq)
  LEFT JOIN LATERAL (
      SELECT c.block_hash FROM (
          (SELECT p.block_hash, 0 AS pref FROM events p
            WHERE p.id = e.id AND (p.txid, p.seq) < (e.txid, e.seq)
            ORDER BY p.txid, p.seq LIMIT 1)
          UNION ALL
          (SELECT r.old_block_hash, 1 FROM event_reorgs r
            WHERE r.event_id = e.id AND r.kind = 'retraction'
            ORDER BY r.id DESC LIMIT 1)
      ) c ORDER BY c.pref LIMIT 1
  ) prev ON true;

-- name: reorg_record
-- Conclusions about removals (engine.reorgs), one array per column.
INSERT INTO event_reorgs (event_id, kind, chain_id, block_number, old_block_hash,
                          new_block_hash, on_retract_queued)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                     $6::text[], $7::int[]);

-- name: reorg_firings
-- The firings of retracted events ($2) by rules that declare on_retract ($1): one
-- context per (rule, event), an action row that was delivered or meant to be (not one
-- a quota or a silence held back; not an on_retract row, whose action_index < 0).
-- A firing already retracted once (its id deleted, re-inserted, deleted again) has its
-- on_retract rows: it is not retracted again.
SELECT DISTINCT ON (a.trigger_id, a.event_id) a.trigger_id, a.event_id,
       a.context::text AS context
  FROM action_results a
 WHERE a.trigger_id = ANY($1::text[]) AND a.event_id = ANY($2::text[])
   AND a.action_index >= 0 AND a.status NOT IN ('quota_exceeded', 'silenced')
   AND NOT EXISTS (SELECT 1 FROM action_results x
                    WHERE x.trigger_id = a.trigger_id AND x.event_id = a.event_id
                      AND x.action_index < 0)
 ORDER BY a.trigger_id, a.event_id, a.action_index;

-- name: status_reorgs
SELECT kind, count(*) AS n, max(seen_at) AS last_seen FROM event_reorgs GROUP BY kind;

-- name: status_digests
-- Digests waiting (engine.digests) and alerts open (engine.resolves), for `engine status`.
SELECT (SELECT count(*) FROM digest_groups WHERE due_at IS NOT NULL) AS groups_pending,
       (SELECT count(*) FROM digest_firings) AS firings_pending,
       (SELECT extract(epoch FROM min(due_at) - now())::float8 FROM digest_groups) AS next_due_s,
       (SELECT count(*) FROM open_alerts) AS open_alerts;

-- name: chain_heads
-- Confirmations (engine.confirmations): the highest block number the main cursor has read
-- per chain ($1 chains, $2 the batch's highest block of each), kept; then the head of
-- each chain of $3: its `checkpoints` row (the indexer's word) when there is one, else
-- the highest block read.  (The main query sees the table as before the insert: `seen`
-- has what the insert wrote.)
WITH seen AS (
    INSERT INTO chain_heads_seen AS s (chain_id, highest_block)
    SELECT * FROM unnest($1::bigint[], $2::bigint[])
    ON CONFLICT (chain_id) DO UPDATE
       SET highest_block = greatest(s.highest_block, EXCLUDED.highest_block), updated_at = now()
    RETURNING chain_id, highest_block
)
SELECT c.chain_id,
       coalesce(cp.last_block_number, seen.highest_block, s.highest_block) AS head
  FROM unnest($3::bigint[]) AS c(chain_id)
  LEFT JOIN seen USING (chain_id)
  LEFT JOIN chain_heads_seen s USING (chain_id)
  LEFT JOIN checkpoints cp USING (chain_id);

-- name: chain_cursors
-- The chain cursors of the main cursor $1: the chains holding rows for confirmations.
SELECT chain_id, txid::text AS txid, seq FROM engine_cursors
 WHERE chain_id IS NOT NULL AND name = $1 || '@chain:' || chain_id;

-- name: chain_cursor_create
-- A chain starts holding rows: its cursor, created in the batch's transaction.  No row
-- back: another engine created it meanwhile (engine.confirmations stops the batch).
INSERT INTO engine_cursors (name, chain_id, txid, seq, events)
VALUES ($1, $2, $3::text::xid8, $4, $5)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: chain_cursor_drop
-- A chain cursor that reached the main cursor holds nothing: gone, optimistically (only
-- from the position this engine knows).
DELETE FROM engine_cursors WHERE name = $1 AND txid = $2::text::xid8 AND seq = $3;

-- name: read_chain_batch
-- One chain's rows ($6) after its cursor ($1, $2) and not beyond $4, $5 (a position the
-- main cursor has reached: gap-safety is the main cursor's), at most $3, in cursor order.
-- events_cursor_idx bounds the scan on both sides.  A template like read_batch, filled in
-- by engine.event_rows.read_batch_query with the same columns in the same order.
SELECT {columns},
       {unread_checks} AS _unread,
       {earlier} AS _earlier,
       txid::text AS _txid, seq AS _seq
  FROM events
 WHERE (txid, seq) > ($1::text::xid8, $2::bigint)
   AND (txid, seq) <= ($4::text::xid8, $5::bigint)
   AND chain_id = $6
 ORDER BY txid, seq
 LIMIT $3;

-- name: status_chains
-- Per chain with a head noted or a chain cursor: its head and where it comes from, and
-- what its cursor holds: the chain's rows between it and the main cursor ($1), the
-- lowest block among them and how long the oldest has waited (since its insert).
SELECT s.chain_id, coalesce(cp.last_block_number, s.highest_block) AS head,
       CASE WHEN cp.chain_id IS NULL THEN 'highest block seen' ELSE 'checkpoints' END
           AS head_source,
       coalesce(h.held, 0) AS held, h.lowest_block,
       coalesce(h.oldest_held_s, 0) AS oldest_held_s
  FROM chain_heads_seen s
  LEFT JOIN checkpoints cp USING (chain_id)
  LEFT JOIN LATERAL (
      SELECT count(*) AS held, min(e.block_number) AS lowest_block,
             extract(epoch FROM now() - min(e.created_at))::bigint AS oldest_held_s
        FROM engine_cursors c
        JOIN engine_cursors m ON m.name = $1
        JOIN events e ON (e.txid, e.seq) > (c.txid, c.seq) AND (e.txid, e.seq) <= (m.txid, m.seq)
                     AND e.chain_id = c.chain_id
       WHERE c.name = $1 || '@chain:' || s.chain_id) h ON true
 ORDER BY s.chain_id;

-- Explain (engine.explain): read-only, also run by `engine api` as a tenant -----------

-- name: explain_event
-- The first row of the id in the cursor's order (an indexer may have written it twice).
-- The same columns as backtest_events; the cursor position comes last (engine.event_rows).
SELECT id, chain_id, block_number, block_hash, transaction_hash, log_index, registry,
       event_type, agent_id, "timestamp", owner, token_uri, metadata_key, metadata_value,
       client_address, feedback_index, score, tag1, tag2, file_uri, file_hash,
       validator_address, request_hash, response, response_uri, response_hash, tag,
       created_at, value, value_decimals, endpoint, request_uri,
       txid::text AS _txid, seq AS _seq
  FROM events
 WHERE id = $1
 ORDER BY txid, seq
 LIMIT 1;

-- name: explain_cursor
-- Whether cursor $1 evaluated the row at ($2, $3) of chain $4: passed it, and, for a chain
-- holding rows for confirmations, its chain cursor passed it too (engine.confirmations).
SELECT (c.txid, c.seq) >= ($2::text::xid8, $3::bigint)
       AND NOT EXISTS (SELECT 1 FROM engine_cursors h
                        WHERE h.name = $1 || '@chain:' || $4::bigint
                          AND (h.txid, h.seq) < ($2::text::xid8, $3::bigint)) AS passed,
       c.updated_at, c.events
  FROM engine_cursors c
 WHERE c.name = $1;

-- name: explain_states
SELECT s.trigger_id, s.group_key, s.state::text AS state, s.updated_at
  FROM trigger_state s
  JOIN unnest($1::text[], $2::text[]) AS k(trigger_id, group_key)
    ON s.trigger_id = k.trigger_id AND s.group_key = k.group_key;

-- name: explain_action_rows
-- The rows the event produced: its own, and the digests that list its firing.
SELECT id, trigger_id, event_id, action_index, action_type, action_name, status,
       attempts, error_message, created_at, executed_at
  FROM action_results
 WHERE trigger_id = ANY($2::text[])
   AND (event_id = $1
        OR (left(event_id, 7) = 'digest:'
            AND EXISTS (SELECT 1
                          FROM json_array_elements(
                                 CASE WHEN json_typeof(context -> 'firings') = 'array'
                                      THEN context -> 'firings' ELSE '[]'::json END) AS f
                         WHERE f -> 'event' ->> 'id' = $1)))
 ORDER BY id;

-- name: explain_digest_group
SELECT extract(epoch FROM g.due_at)::float8 AS due_at,
       extract(epoch FROM g.last_sent_at)::float8 AS last_sent_at,
       coalesce(g.digests, 0) AS digests,
       (SELECT count(*) FROM digest_firings f
         WHERE f.trigger_id = $1 AND f.group_key = $2) AS pending,
       (SELECT count(*) FROM digest_firings f
         WHERE f.trigger_id = $1 AND f.group_key = $2 AND f.event_id = $3) AS held
  FROM (SELECT 1) AS one
  LEFT JOIN digest_groups g ON g.trigger_id = $1 AND g.group_key = $2;

-- Silences and runtime disables (sql/008): engine/noise_controls.py, engine/silences.py,
-- actions/silence_gate.py, engine/api/routes_silences.py.

-- name: noise_controls_active
-- Every active silence and every rule disabled now, as JSON text, in one round trip: what
-- each `engine run` and `engine worker` reads about once a second.  Times in epoch seconds.
SELECT (SELECT coalesce(json_agg(json_build_object(
                   'id', id, 'org_id', org_id, 'rule_glob', rule_glob, 'matchers', matchers,
                   'starts_at', extract(epoch FROM starts_at),
                   'ends_at', extract(epoch FROM ends_at)) ORDER BY id), '[]')::text
          FROM silences WHERE ends_at > now()) AS silences,
       (SELECT coalesce(json_agg(trigger_id ORDER BY trigger_id), '[]')::text
          FROM rule_disables WHERE until IS NULL OR until > now()) AS disabled;

-- name: record_silenced_firings
-- The silence of each silenced firing of a batch, in the batch's transaction ($1 rule ids,
-- $2 event ids, $3 silence ids).
UPDATE action_results a SET silence_id = s.silence_id
  FROM unnest($1::text[], $2::text[], $3::bigint[]) AS s (trigger_id, event_id, silence_id)
 WHERE a.trigger_id = s.trigger_id AND a.event_id = s.event_id AND a.status = 'silenced';

-- name: silence_claimed_action
-- A worker found a silence matching a row it claimed: the row ends silenced, unsent.
-- Fenced by the attempt number like finish_action.
UPDATE action_results
   SET status = 'silenced', silence_id = $3, lease_expires_at = NULL, next_attempt_at = NULL
 WHERE id = $1 AND attempts = $2 AND status = 'running'
RETURNING id;

-- name: silence_add
-- $5 the end; NULL: now plus $6 seconds.
INSERT INTO silences (org_id, rule_glob, matchers, created_by, comment, ends_at)
VALUES ($1, $2, $3::text::jsonb, $4, $7, coalesce($5, now() + make_interval(secs => $6)))
RETURNING id, org_id, rule_glob, matchers::text AS matchers, starts_at, ends_at, created_by,
          comment, expired_by, created_at, ends_at > now() AS active;

-- name: silences_list
-- $1 true: expired ones too.  Row-level security narrows it to one organization in the API.
SELECT id, org_id, rule_glob, matchers::text AS matchers, starts_at, ends_at, created_by,
       comment, expired_by, created_at, ends_at > now() AS active
  FROM silences
 WHERE $1 OR ends_at > now()
 ORDER BY id;

-- name: silence_expire
-- Ends the silence now (already ended: unchanged); no row when there is no such silence.
WITH old AS (SELECT id, ends_at FROM silences WHERE id = $1 FOR UPDATE)
UPDATE silences s
   SET ends_at = least(s.ends_at, now()), starts_at = least(s.starts_at, now()),
       expired_by = CASE WHEN old.ends_at > now() THEN $2 ELSE s.expired_by END
  FROM old
 WHERE s.id = old.id
RETURNING s.id, old.ends_at > now() AS was_active;

-- name: rule_of_id
-- The rule a runtime disable names, when it is loaded ($1 the engine-wide id).
SELECT id, org_id, rule_id FROM triggers WHERE id = $1;

-- name: rule_disable
-- $5 seconds until it enables itself; NULL: until `engine rules enable`.
INSERT INTO rule_disables AS d (trigger_id, org_id, disabled_by, comment, until)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
ON CONFLICT (trigger_id) DO UPDATE
   SET disabled_by = EXCLUDED.disabled_by, comment = EXCLUDED.comment,
       disabled_at = now(), until = EXCLUDED.until
RETURNING d.trigger_id, d.org_id, d.disabled_by, d.comment, d.disabled_at, d.until;

-- name: rule_enable
DELETE FROM rule_disables WHERE trigger_id = $1 RETURNING trigger_id;

-- name: rule_disables_list
-- The disables in force (row-level security narrows it to one organization in the API).
SELECT trigger_id, org_id, disabled_by, comment, disabled_at, until
  FROM rule_disables
 WHERE until IS NULL OR until > now()
 ORDER BY trigger_id;

-- name: api_key_name
-- Who an API change is recorded as: the key's name (its id when it has none).
SELECT coalesce(name, '#' || id) FROM api_keys WHERE id = $1;

-- Explain's view of the noise controls (engine.explain_controls) -------------------------

-- name: explain_rule_disable
-- The runtime disable of rule $1 in force now, if any.
SELECT disabled_by, comment, disabled_at, until FROM rule_disables
 WHERE trigger_id = $1 AND (until IS NULL OR until > now());

-- name: explain_silence
-- Silence $1, as `engine silence list` shows it.
SELECT id, rule_glob, matchers::text AS matchers, ends_at, created_by, comment
  FROM silences WHERE id = $1;

-- name: absence_seen
-- Absence rules (engine.absence; the table is sql/010_absence.sql).  Times are unix
-- seconds from the engine's clock, never the database's: the tick and the batches judge
-- with one clock.
-- Matching events re-arm their groups: one row per (trigger, group) of a batch.
INSERT INTO absence_groups (trigger_id, group_key, group_values, org_id, logic_hash,
                            quiet_since, last_seen_at, due_at)
SELECT t, g, v::jsonb, o, h, to_timestamp($7), to_timestamp($7), to_timestamp($7 + f)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[])
       AS u(t, g, v, o, h, f)
ON CONFLICT (trigger_id, group_key) DO UPDATE
   SET group_values = EXCLUDED.group_values, logic_hash = EXCLUDED.logic_hash,
       quiet_since = EXCLUDED.quiet_since, last_seen_at = EXCLUDED.last_seen_at,
       due_at = EXCLUDED.due_at;

-- name: absence_forget_old_logic
-- Rules whose logic changed ($1 ids, $2 their logic now) start afresh, as their
-- trigger_state does (engine.rulebook).
DELETE FROM absence_groups a
 USING unnest($1::text[], $2::text[]) AS u(t, h)
 WHERE a.trigger_id = u.t AND a.logic_hash <> u.h;

-- name: absence_watch
-- Expected groups, watched from $7 unless already watched.
INSERT INTO absence_groups (trigger_id, group_key, group_values, org_id, logic_hash,
                            quiet_since, due_at)
SELECT t, g, v::jsonb, o, h, to_timestamp($7), to_timestamp($7 + f)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[])
       AS u(t, g, v, o, h, f)
ON CONFLICT (trigger_id, group_key) DO NOTHING;

-- name: absence_take_due
-- The rows due at $1, oldest first, at most $2: disarmed (due again only once seen again)
-- and returned.  SKIP LOCKED: two engines (a deposed leader and its successor) never
-- take one row twice; the caller's transaction holds them until it commits.
WITH due AS (
    SELECT trigger_id, group_key
      FROM absence_groups
     WHERE due_at <= to_timestamp($1)
     ORDER BY due_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE absence_groups a
   SET due_at = NULL, fired_at = to_timestamp($1)
  FROM due
 WHERE a.trigger_id = due.trigger_id AND a.group_key = due.group_key
RETURNING a.trigger_id, a.group_key, a.group_values::text AS group_values, a.logic_hash,
          extract(epoch FROM a.quiet_since)::float8 AS quiet_since,
          extract(epoch FROM a.last_seen_at)::float8 AS last_seen_at;

-- name: absence_drop
-- Rows of rules no longer loaded: their watch ends (a rule loaded again starts afresh).
DELETE FROM absence_groups a
 USING unnest($1::text[], $2::text[]) AS u(t, g)
 WHERE a.trigger_id = u.t AND a.group_key = u.g;

-- name: status_absence
-- `engine status`: absence rules' groups watched, armed (going quiet) and due now.
SELECT count(*), count(due_at), count(*) FILTER (WHERE due_at <= now())
  FROM absence_groups;
