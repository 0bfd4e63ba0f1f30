-- 0001: the virtualization domain, as in the SQLite store, plus sequence counters.
CREATE TABLE scenario (
    name     TEXT PRIMARY KEY,
    created  TEXT NOT NULL,
    version  BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE stub (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    scenario       TEXT NOT NULL REFERENCES scenario(name) ON DELETE CASCADE,
    matchers_hash  TEXT NOT NULL,
    priority       INTEGER,
    recorded       TEXT NOT NULL,
    space_used     BIGINT NOT NULL,
    request        TEXT NOT NULL,
    responses      TEXT NOT NULL,
    args           TEXT NOT NULL
);
CREATE INDEX stub_scenario ON stub(scenario, seq);
CREATE INDEX stub_hash ON stub(scenario, matchers_hash);
CREATE TABLE session (
    host       TEXT NOT NULL,
    name       TEXT NOT NULL,
    scenario   TEXT NOT NULL REFERENCES scenario(name) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    loaded     TEXT,
    last_used  TEXT,
    PRIMARY KEY (host, name)
);
CREATE TABLE delay_policy (
    host      TEXT NOT NULL,
    name      TEXT NOT NULL,
    document  TEXT NOT NULL,
    PRIMARY KEY (host, name)
);
-- Several instances insert concurrently, so ids are increasing but may have gaps:
-- the cap is applied by rank, not by id arithmetic.
CREATE TABLE tracker (
    id           BIGSERIAL PRIMARY KEY,
    function     TEXT NOT NULL,
    scenario     TEXT,
    session      TEXT,
    host         TEXT NOT NULL,
    return_code  INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    delay        INTEGER NOT NULL,
    detail       BYTEA NOT NULL
);
-- Stateful response sequences, advanced atomically whichever instance answers.
CREATE TABLE sequence_counter (
    session_key  TEXT NOT NULL,
    stub_id      TEXT NOT NULL,
    n            BIGINT NOT NULL,
    PRIMARY KEY (session_key, stub_id)
);
