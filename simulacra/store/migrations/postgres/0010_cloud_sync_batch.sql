-- 0010: ``cloud_sync`` (0009) writes every batch found current in one statement, not only
-- one of a single part: a create now changes two parts (its server and its tenant's list of
-- ids, migration 0011), and the general path (placeholders, a locking read, a second check,
-- then the writes: four statements) cost several times the write itself. Same arguments,
-- same answers; the general path is unchanged, and answers a batch whose part moved between
-- the check and the write. Rows are still locked in key order (see below).
CREATE OR REPLACE FUNCTION cloud_sync(batch JSONB, w_data BYTEA[])
RETURNS TABLE (batch_group INT, part TEXT, part_version BIGINT, part_data BYTEA, written BOOLEAN)
LANGUAGE plpgsql
-- A process stuck while holding a lock must not stall every instance for good.
SET lock_timeout = '10s'
-- Every statement here reaches the parts it names through the primary key (and a collection's
-- through its index): a probe per part, whatever the table holds. Left to the planner, a
-- connection's plans were made while the table was small (a new cloud) and kept: a hash join
-- over the whole table, which then cost a scan of every part (thousands of servers) per
-- request. So no scans and no hash or merge joins, and plans made once per connection.
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = 'force_generic_plan'
AS $$
DECLARE
    w_groups INT[];
    w_keys TEXT[];
    w_colls TEXT[];
    w_known BIGINT[];
    r_groups INT[];
    r_keys TEXT[];
    r_known BIGINT[];
    c_groups INT[];
    c_colls TEXT[];
    sg INT[];
    sk TEXT[];
    sv BIGINT[];
    sd BYTEA[];
BEGIN
    SELECT w.g, w.k, w.c, w.v, r.g, r.k, r.v, c.g, c.c
        INTO w_groups, w_keys, w_colls, w_known, r_groups, r_keys, r_known, c_groups, c_colls
        FROM (SELECT COALESCE(array_agg((e->>0)::INT ORDER BY n), '{}') AS g,
                     COALESCE(array_agg(e->>1 ORDER BY n), '{}') AS k,
                     COALESCE(array_agg(e->>2 ORDER BY n), '{}') AS c,
                     COALESCE(array_agg((e->>3)::BIGINT ORDER BY n), '{}') AS v
                  FROM jsonb_array_elements(batch->'w') WITH ORDINALITY AS x(e, n)) AS w,
             (SELECT COALESCE(array_agg((e->>0)::INT), '{}') AS g,
                     COALESCE(array_agg(e->>1), '{}') AS k,
                     COALESCE(array_agg((e->>2)::BIGINT), '{}') AS v
                  FROM jsonb_array_elements(batch->'r') AS x(e)) AS r,
             (SELECT COALESCE(array_agg((e->>0)::INT), '{}') AS g,
                     COALESCE(array_agg(e->>1), '{}') AS c
                  FROM jsonb_array_elements(batch->'c') AS x(e)) AS c;
    SELECT array_agg(s.grp), array_agg(s.key), array_agg(s.version), array_agg(s.data)
        INTO sg, sk, sv, sd
        FROM cloud_stale(w_groups || r_groups, w_keys || r_keys, w_known || r_known,
                         c_groups, c_colls) AS s;
    IF sg IS NULL THEN
        sg := '{}';
    ELSE
        RETURN QUERY SELECT u.g, u.k, u.v, u.d, FALSE FROM unnest(sg, sk, sv, sd) AS u(g, k, v, d);
    END IF;
    IF cardinality(w_keys) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(sg) = 0 THEN
        -- Every group current (nearly every batch): write every part at once, each only if
        -- still at the version changed (the row lock an UPDATE takes, and its check of the
        -- version on the row it locked, are the general path's lock and second check); a new
        -- part's row is inserted with its data, or a placeholder of version 0 filled. Where
        -- two stored rows or more change, they are locked first, in key order, as the general
        -- path locks them: two batches writing them in another order would deadlock. (One
        -- stored row and new ones, a create: the new ones are nobody else's.) If a part moved
        -- since the check above, the block's writes are undone and the general path answers.
        BEGIN
            IF cardinality(array_remove(w_known, 0::BIGINT)) > 1 THEN
                PERFORM 1 FROM cloud_part p WHERE p.key = ANY(w_keys) ORDER BY p.key FOR UPDATE;
            END IF;
            WITH given AS (
                SELECT * FROM unnest(w_groups, w_keys, w_colls, w_known, w_data) AS w(g, k, c, v, d)
            ), updated AS (
                UPDATE cloud_part p SET version = nextval('cloud_part_version'), data = w.d
                    FROM given w
                    WHERE w.v <> 0 AND p.key = w.k AND p.version = w.v
                    RETURNING p.key, p.version
            ), inserted AS (
                INSERT INTO cloud_part AS p (key, coll, version, data)
                    SELECT w.k, w.c, nextval('cloud_part_version'), w.d FROM given w WHERE w.v = 0
                    ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, data = EXCLUDED.data
                        WHERE p.version = 0
                    RETURNING p.key, p.version
            )
            SELECT array_agg(w.g), array_agg(x.key), array_agg(x.version)
                INTO sg, sk, sv
                FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) AS x
                JOIN given w ON w.k = x.key;
            IF cardinality(sk) = cardinality(w_keys) THEN
                RETURN QUERY SELECT u.g, u.k, u.v, NULL::BYTEA, TRUE FROM unnest(sg, sk, sv) AS u(g, k, v);
                RETURN;
            END IF;
            RAISE EXCEPTION 'a part moved' USING ERRCODE = 'SC001';
        EXCEPTION WHEN SQLSTATE 'SC001' OR cardinality_violation THEN
            -- (cardinality_violation: two groups wrote one part, which one process never
            -- sends; the general path answers that as well.)
            sg := '{}';
        END;
    END IF;
    -- Rows for the parts new to their requests (a row of a part given a version exists).
    INSERT INTO cloud_part (key, coll, version, data)
        SELECT w.k, w.c, 0, NULL
            FROM unnest(w_groups, w_keys, w_colls, w_known) AS w(g, k, c, v)
            WHERE w.g <> ALL(sg) AND w.v = 0 ORDER BY w.k
        ON CONFLICT (key) DO NOTHING;
    PERFORM 1 FROM cloud_part p
        WHERE p.key IN (SELECT w.k FROM unnest(w_groups, w_keys) AS w(g, k) WHERE w.g <> ALL(sg))
        ORDER BY p.key FOR UPDATE;
    -- Locked: check the changed parts again (one may have moved since the check above),
    -- then write. (The parts only read are not locked: checking them again would not stop
    -- them moving before the commit either.)
    RETURN QUERY
    WITH late AS (
        SELECT w.g AS grp, w.k AS key, p.version, p.data
            FROM unnest(w_groups, w_keys, w_known) AS w(g, k, v)
            JOIN cloud_part p ON p.key = w.k
            WHERE w.g <> ALL(sg) AND p.version <> w.v
    ), changed AS (
        UPDATE cloud_part p SET version = nextval('cloud_part_version'), data = w.d
            FROM unnest(w_groups, w_keys, w_data) AS w(grp, key, d)
            WHERE p.key = w.key AND w.grp <> ALL(sg) AND w.grp NOT IN (SELECT l.grp FROM late l)
            RETURNING w.grp, p.key, p.version
    )
    SELECT l.grp, l.key, l.version, l.data, FALSE FROM late l
    UNION ALL
    SELECT c.grp, c.key, c.version, NULL::BYTEA, TRUE FROM changed c;
END
$$;
