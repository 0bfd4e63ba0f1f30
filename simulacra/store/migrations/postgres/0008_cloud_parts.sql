-- 0008: the cloud mocks' state in rows, one per part (simulacra/cloud/shared.py), replacing
-- 0002's single row. A part is the virtual clock, a service's state outside its keyed
-- collections ("rest:<service>"), or one member of a keyed collection (a tenant's compute,
-- a user, a token...): "<service>.<attribute>:<key>", with ``coll`` naming its collection.
-- ``data`` NULL: the part is absent (the member was deleted, or never written: a fixed part
-- then holds the state every process starts with). The old state is not carried over.
DROP TABLE IF EXISTS cloud_state;

-- Versions come from one sequence, so a version number is never reused, even after the
-- rows are deleted (docs/scaling.md's reset): a process can never mistake new data for
-- what it holds.
CREATE SEQUENCE cloud_part_version;

CREATE TABLE cloud_part (
    key      TEXT PRIMARY KEY,
    coll     TEXT NOT NULL,
    version  BIGINT NOT NULL,
    data     BYTEA
);
CREATE INDEX cloud_part_coll ON cloud_part (coll);
-- Rewritten whole at each change: skip TOAST compression, which would cost more CPU than it saves.
ALTER TABLE cloud_part ALTER COLUMN data SET STORAGE EXTERNAL;

-- The parts of a batch of requests ("groups", numbered by the caller) whose stored version is
-- not the one given (``g_*``: key and version; 0: absent), and the parts of the collections
-- a group read whole (``c_*``) that it did not name.
CREATE FUNCTION cloud_stale(
    g_groups INT[], g_keys TEXT[], g_known BIGINT[], c_groups INT[], c_colls TEXT[]
) RETURNS TABLE (grp INT, key TEXT, version BIGINT, data BYTEA)
LANGUAGE sql STABLE AS $$
    WITH given AS (
        SELECT g.grp, g.key, g.known FROM unnest(g_groups, g_keys, g_known) AS g(grp, key, known)
    )
    SELECT g.grp, g.key, COALESCE(p.version, 0), p.data
        FROM given g LEFT JOIN cloud_part p ON p.key = g.key
        WHERE COALESCE(p.version, 0) <> g.known
    UNION ALL
    SELECT c.grp, p.key, p.version, p.data
        FROM unnest(c_groups, c_colls) AS c(grp, coll)
        JOIN cloud_part p ON p.coll = c.coll
        WHERE p.data IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM given g WHERE g.grp = c.grp AND g.key = p.key)
$$;

-- Cloud requests' round trip, atomic: a batch of groups, each with the parts it changed
-- ("w": the version it changed, 0 if absent, and the new data), the parts it only read ("r":
-- the version it read) and the collections it read whole ("c"). For each group:
-- returns every part whose stored version is not the one given, with its data (``written``
-- false), and writes nothing of that group's; or, when all are current, writes the group's
-- changes and returns their new versions (``written`` true). Only the changed rows of groups
-- still current are locked, all in key order (no deadlock): a group already behind is
-- answered without waiting for a lock, and a batch of reads takes none. Groups do not share
-- a changed part.
-- The batch comes as JSON, ``{"w": [[group, key, collection, version], ...], "r": [[group, key,
-- version], ...], "c": [[group, collection], ...]}``, and the changes' data as an array in the
-- order of "w" (a client formats one JSON text much faster than ten arrays).
CREATE FUNCTION cloud_sync(batch JSONB, w_data BYTEA[])
RETURNS TABLE (batch_group INT, part TEXT, part_version BIGINT, part_data BYTEA, written BOOLEAN)
LANGUAGE plpgsql AS $$
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
    SELECT COALESCE(array_agg((e->>0)::INT ORDER BY n), '{}'),
           COALESCE(array_agg(e->>1 ORDER BY n), '{}'),
           COALESCE(array_agg(e->>2 ORDER BY n), '{}'),
           COALESCE(array_agg((e->>3)::BIGINT ORDER BY n), '{}')
        INTO w_groups, w_keys, w_colls, w_known
        FROM jsonb_array_elements(batch->'w') WITH ORDINALITY AS x(e, n);
    SELECT COALESCE(array_agg((e->>0)::INT), '{}'), COALESCE(array_agg(e->>1), '{}'),
           COALESCE(array_agg((e->>2)::BIGINT), '{}')
        INTO r_groups, r_keys, r_known
        FROM jsonb_array_elements(batch->'r') AS x(e);
    SELECT COALESCE(array_agg((e->>0)::INT), '{}'), COALESCE(array_agg(e->>1), '{}')
        INTO c_groups, c_colls
        FROM jsonb_array_elements(batch->'c') AS x(e);
    SELECT array_agg(s.grp), array_agg(s.key), array_agg(s.version), array_agg(s.data)
        INTO sg, sk, sv, sd
        FROM cloud_stale(w_groups || r_groups, w_keys || r_keys, w_known || r_known,
                         c_groups, c_colls) AS s;
    sg := COALESCE(sg, '{}');
    RETURN QUERY SELECT u.g, u.k, u.v, u.d, FALSE FROM unnest(sg, sk, sv, sd) AS u(g, k, v, d);
    IF cardinality(w_keys) = 0 THEN
        RETURN;
    END IF;
    -- A process stuck while holding a lock must not stall every instance for good.
    PERFORM set_config('lock_timeout', '10s', true);
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
