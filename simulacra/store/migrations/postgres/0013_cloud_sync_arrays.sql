-- 0013: ``cloud_sync`` takes its batch as typed arrays, which the instances send in binary,
-- rather than as one JSON document: taking the JSON apart into arrays cost PostgreSQL about
-- 120 µs of CPU a statement (three creates: a fifth of the statement's). The arrays are those
-- the JSON was taken apart into ("w": the parts written, with the version each was changed
-- from and, in ``w_data``, its new data; "r": the parts only read and their versions; "c":
-- the collections read whole), each one entry per part, numbered by the caller's groups
-- (``simulacra/store/postgres.py``). The body is 0012's from there on; same answers.
DROP FUNCTION cloud_sync(JSONB, BYTEA[], TEXT);
CREATE FUNCTION cloud_sync(
    w_groups INT[], w_keys TEXT[], w_colls TEXT[], w_known BIGINT[], w_data BYTEA[],
    r_groups INT[], r_keys TEXT[], r_known BIGINT[], c_groups INT[], c_colls TEXT[],
    lock_wait TEXT
)
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
    sg INT[];
    sk TEXT[];
    sv BIGINT[];
    sd BYTEA[];
    part RECORD;
    found_version BIGINT;
    settings TEXT[];
BEGIN
    settings := ARRAY[set_config('lock_timeout', lock_wait, true),
                      set_config('synchronous_commit', 'off', true)];
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
