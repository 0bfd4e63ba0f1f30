-- 0002: the cloud mocks' state and virtual clock for --shared-cloud (simulacra/cloud/shared.py).
-- One row: every cloud request locks it (SELECT ... FOR UPDATE), so requests on all instances
-- run one at a time against the same state. ``data`` is NULL until the first change.
CREATE TABLE cloud_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL,
    data     BYTEA
);
-- Rewritten whole at each change: skip TOAST compression, which would cost more CPU than it saves.
ALTER TABLE cloud_state ALTER COLUMN data SET STORAGE EXTERNAL;
INSERT INTO cloud_state (id, version, data) VALUES (1, 0, NULL);
