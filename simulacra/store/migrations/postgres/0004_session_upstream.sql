-- 0004: a recording session's upstream and record rules (JSON; NULL: recorded by PUT), so
-- that after a restart its port forwards and records again. The SQLite store adds the same
-- column (sqlite.ADDED_COLUMNS).
ALTER TABLE session ADD COLUMN upstream TEXT;
