-- trigger-engine schema, version 2: hourly statistics, and what retention needs.
-- Idempotent like 001: `engine migrate` may run it any number of times.
--
-- events_hourly is a TimescaleDB continuous aggregate (refreshed by a TimescaleDB
-- policy) when `events` is already a hypertable as this runs; otherwise it is a plain
-- materialized view that `engine run` refreshes (sql/queries.sql: refresh_*).
-- action_metrics_hourly is always a plain materialized view: action_results is small
-- and not a hypertable.

-- Retention deletes and the event rate of `engine status` select by insert time.
CREATE INDEX IF NOT EXISTS events_created_idx ON events (created_at);

DO $$
DECLARE
    hypertable BOOLEAN := false;
BEGIN
    IF to_regclass('events_hourly') IS NOT NULL THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- Dynamic SQL: the catalog does not exist on plain PostgreSQL.
        EXECUTE $check$
            SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable
                           WHERE schema_name = current_schema() AND table_name = 'events')
        $check$ INTO hypertable;
    END IF;
    IF hypertable THEN
        EXECUTE $cagg$
            CREATE MATERIALIZED VIEW events_hourly
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 hour', created_at) AS hour,
                   chain_id, registry, event_type,
                   count(*)   AS events,
                   avg(score) AS avg_score,
                   min(score) AS min_score,
                   max(score) AS max_score
              FROM events
             GROUP BY 1, chain_id, registry, event_type
            WITH NO DATA
        $cagg$;
        EXECUTE $policy$
            SELECT add_continuous_aggregate_policy('events_hourly',
                start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
                schedule_interval => INTERVAL '30 minutes', if_not_exists => true)
        $policy$;
    ELSE
        CREATE MATERIALIZED VIEW events_hourly AS
        SELECT date_trunc('hour', created_at) AS hour,
               chain_id, registry, event_type,
               count(*)   AS events,
               avg(score) AS avg_score,
               min(score) AS min_score,
               max(score) AS max_score
          FROM events
         GROUP BY 1, chain_id, registry, event_type
        WITH DATA;  -- readable at once (an unpopulated view raises on SELECT)
        -- REFRESH … CONCURRENTLY (readers are never blocked) needs a unique index.
        CREATE UNIQUE INDEX events_hourly_key
            ON events_hourly (hour, chain_id, registry, event_type);
    END IF;
END;
$$;

CREATE MATERIALIZED VIEW IF NOT EXISTS action_metrics_hourly AS
SELECT date_trunc('hour', created_at) AS hour,
       trigger_id, action_type, status,
       count(*)                                   AS actions,
       sum(attempts)                              AS attempts,
       avg(duration_ms)                           AS avg_duration_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms,
       max(duration_ms)                           AS max_duration_ms
  FROM action_results
 GROUP BY 1, trigger_id, action_type, status
WITH DATA;

CREATE UNIQUE INDEX IF NOT EXISTS action_metrics_hourly_key
    ON action_metrics_hourly (hour, trigger_id, action_type, status);
