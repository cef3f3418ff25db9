-- trigger-engine schema, version 3: action rows keep their spec and context as json.
-- Idempotent like 001: `engine migrate` may run it any number of times.
--
-- Both are written once per firing, read back whole by the worker that claims the row
-- and never queried inside, so jsonb's binary form only cost: building it made up a
-- quarter of PostgreSQL's time to write 1,000 action rows (14.1 -> 10.2 ms, COPY and
-- commit, median of 20, docs/performance.md change 12). json still refuses text that is
-- not JSON, and `->` / `->>` still work on it for an operator's ad-hoc query.
-- Converting an existing table rewrites it under an exclusive lock: engine and workers
-- wait while `engine migrate` runs, about 8 s per million rows here (a 1,000,000-row
-- table of 802 MB became 718 MB).
DO $$
BEGIN
    IF (SELECT atttypid FROM pg_attribute
         WHERE attrelid = 'action_results'::regclass AND attname = 'context')
       = 'jsonb'::regtype THEN
        ALTER TABLE action_results
            ALTER COLUMN spec TYPE json USING spec::json,
            ALTER COLUMN context TYPE json USING context::json;
    END IF;
END;
$$;
