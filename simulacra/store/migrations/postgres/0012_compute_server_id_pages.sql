-- 0012: a compute tenant's part no longer grows with its servers: each region keeps its
-- servers' ids in pages of their own
-- ("compute.tenants_server_id_pages:('<tenant>', '<region>', <n>)"), and a server's addresses
-- follow from how many servers the tenant created, so neither a list of ids nor a set of
-- addresses taken is kept in the tenant's part. The tenants' parts written before have the
-- old layout: the compute state starts empty after this upgrade (as after 0011). The other
-- services' parts are kept.
DELETE FROM cloud_part WHERE coll IN ('compute.tenants', 'compute.servers');

-- A create now writes two parts that another instance may write too (its tenant's and its
-- page of ids), and either may be new to one instance and stored for the other. 0010's fast
-- path updated the stored rows before inserting the new ones, so two instances could take
-- those two rows in opposite orders: a deadlock, which PostgreSQL breaks after a second. The
-- fast path now writes the rows one by one in key order, insert or update alike, as the
-- general path locks them; and the general path is a function of its own, so that a later
-- change to ``cloud_sync`` need not copy it again. Key order is byte order (COLLATE "C"),
-- whatever the database's collation: a tenant's pages ("compute.tenants_server_id_pages:...")
-- sort after its own row ("compute.tenants:..."), so whoever holds a tenant's row takes its
-- pages without waiting for anyone (simulacra/cloud/compute/model.py).

-- The general path: for the groups not in ``skip`` (found stale already), the rows of the
-- parts new to them (placeholders of version 0), every part they write locked in key order,
-- checked again, and written where their group is still current; the others answered stale.
CREATE FUNCTION cloud_sync_locked(
    w_groups INT[], w_keys TEXT[], w_colls TEXT[], w_known BIGINT[], w_data BYTEA[], skip INT[]
) RETURNS TABLE (batch_group INT, part TEXT, part_version BIGINT, part_data BYTEA, written BOOLEAN)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = 'force_generic_plan'
AS $$
BEGIN
    INSERT INTO cloud_part (key, coll, version, data)
        SELECT w.k, w.c, 0, NULL
            FROM unnest(w_groups, w_keys, w_colls, w_known) AS w(g, k, c, v)
            WHERE w.g <> ALL(skip) AND w.v = 0 ORDER BY w.k COLLATE "C"
        ON CONFLICT (key) DO NOTHING;
    PERFORM 1 FROM cloud_part p
        WHERE p.key IN (SELECT w.k FROM unnest(w_groups, w_keys) AS w(g, k) WHERE w.g <> ALL(skip))
        ORDER BY p.key COLLATE "C" FOR UPDATE;
    -- Locked: check the changed parts again (one may have moved since the caller's check),
    -- then write. (The parts only read are not locked: checking them again would not stop
    -- them moving before the commit either.)
    RETURN QUERY
    WITH late AS (
        SELECT w.g AS grp, w.k AS key, p.version, p.data
            FROM unnest(w_groups, w_keys, w_known) AS w(g, k, v)
            JOIN cloud_part p ON p.key = w.k
            WHERE w.g <> ALL(skip) AND p.version <> w.v
    ), changed AS (
        UPDATE cloud_part p SET version = nextval('cloud_part_version'), data = w.d
            FROM unnest(w_groups, w_keys, w_data) AS w(grp, key, d)
            WHERE p.key = w.key AND w.grp <> ALL(skip) AND w.grp NOT IN (SELECT l.grp FROM late l)
            RETURNING w.grp, p.key, p.version
    )
    SELECT l.grp, l.key, l.version, l.data, FALSE FROM late l
    UNION ALL
    SELECT c.grp, c.key, c.version, NULL::BYTEA, TRUE FROM changed c;
END
$$;

-- ``lock_wait``: how long to wait for a row lock (``lock_timeout``), now the caller's choice:
-- a run holding rows locked waits less for the others (simulacra/store/postgres.py says why).
-- Set for the transaction, as synchronous_commit (off: docs/scaling.md), in the first
-- statement; the caller's statement no longer sets it.
DROP FUNCTION cloud_sync(JSONB, BYTEA[]);
CREATE FUNCTION cloud_sync(batch JSONB, w_data BYTEA[], lock_wait TEXT)
RETURNS TABLE (batch_group INT, part TEXT, part_version BIGINT, part_data BYTEA, written BOOLEAN)
LANGUAGE plpgsql
-- Every statement here reaches the parts it names through the primary key (and a collection's
-- through its index): a probe per part, whatever the table holds (0010 says why).
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
    part RECORD;
    found_version BIGINT;
    settings TEXT[];
BEGIN
    SELECT w.g, w.k, w.c, w.v, r.g, r.k, r.v, c.g, c.c,
           ARRAY[set_config('lock_timeout', lock_wait, true),
                 set_config('synchronous_commit', 'off', true)]
        INTO w_groups, w_keys, w_colls, w_known, r_groups, r_keys, r_known, c_groups, c_colls,
             settings
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
        -- Every group current (nearly every batch): write each part, in key order, only if
        -- still at the version changed: an UPDATE's row lock and its check of the version on
        -- the row it locked are the general path's lock and second check; a new part's row
        -- is inserted, or a placeholder of version 0 filled. If a part moved since the check
        -- above (or two groups wrote one part, which one process never sends), the block's
        -- writes are undone and the general path answers.
        BEGIN
            sk := '{}';
            sv := '{}';
            FOR part IN SELECT * FROM unnest(w_groups, w_keys, w_colls, w_known, w_data)
                         AS u(g, k, c, v, d) ORDER BY u.k COLLATE "C" LOOP
                found_version := NULL;
                IF part.v = 0 THEN
                    INSERT INTO cloud_part AS p (key, coll, version, data)
                        VALUES (part.k, part.c, nextval('cloud_part_version'), part.d)
                        ON CONFLICT (key) DO UPDATE
                            SET version = EXCLUDED.version, data = EXCLUDED.data
                            WHERE p.version = 0
                        RETURNING p.version INTO found_version;
                ELSE
                    UPDATE cloud_part p SET version = nextval('cloud_part_version'), data = part.d
                        WHERE p.key = part.k AND p.version = part.v
                        RETURNING p.version INTO found_version;
                END IF;
                IF found_version IS NULL THEN
                    RAISE EXCEPTION 'a part moved' USING ERRCODE = 'SC001';
                END IF;
                sg := sg || part.g;
                sk := sk || part.k;
                sv := sv || found_version;
            END LOOP;
            RETURN QUERY
                SELECT u.g, u.k, u.v, NULL::BYTEA, TRUE FROM unnest(sg, sk, sv) AS u(g, k, v);
            RETURN;
        EXCEPTION WHEN SQLSTATE 'SC001' THEN
            sg := '{}';
        END;
    END IF;
    RETURN QUERY SELECT * FROM cloud_sync_locked(w_groups, w_keys, w_colls, w_known, w_data, sg);
END
$$;
