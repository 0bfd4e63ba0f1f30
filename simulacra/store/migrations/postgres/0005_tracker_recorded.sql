-- 0005: whether a tracked call was forwarded upstream by a recording session (1) or not
-- (0), for the query `recorded:true`. The SQLite store adds the same column.
ALTER TABLE tracker ADD COLUMN recorded INTEGER NOT NULL DEFAULT 0;
