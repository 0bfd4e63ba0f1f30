-- 0003: the TCP port a session is bound to (NULL: not bound), so that after a restart the
-- port is served again. The SQLite store adds the same column (sqlite.ADDED_COLUMNS).
ALTER TABLE session ADD COLUMN port INTEGER;
