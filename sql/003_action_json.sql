-- trigger-engine schema, version 3: action rows keep their spec and context as json.
-- Idempotent like 001: `engine migrate` may run it any number of times.
--
-- Both are written once per firing, read back whole by the worker that claims the row
-- and never queried inside, so jsonb's binary form was pure cost on the write of every
-- firing, a large part of PostgreSQL's time to write a batch's action rows. json still
-- refuses text that is not JSON, and `->` / `->>` still work on it for an operator's
-- ad-hoc query.
-- Converting an existing table rewrites it under an exclusive lock: engine and workers
-- wait while `engine migrate` runs, for a time that grows with the table's size.
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
