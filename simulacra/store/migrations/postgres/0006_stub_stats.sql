-- 0006: a scenario's stub count, size and last recording (stub_stats, on every scenario
-- page and listing) read from this index alone, not from 100,000 rows of stub JSON.
-- The SQLite store creates the same index.
CREATE INDEX IF NOT EXISTS stub_stats ON stub(scenario, space_used, recorded);
