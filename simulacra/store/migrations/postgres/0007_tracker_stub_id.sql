-- 0007: the id of the stub that answered a tracked playback (NULL: no stub did: a miss,
-- an error, a proxied or recorded call). The SQLite store adds the same column.
ALTER TABLE tracker ADD COLUMN stub_id TEXT;
