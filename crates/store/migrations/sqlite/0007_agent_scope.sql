-- A token scope for flow-check agents: only the agent routes (their jobs
-- carry stored secrets), nothing else. SQLite cannot alter a CHECK, so the
-- table is rebuilt with its rows.
CREATE TABLE api_tokens_new (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin', 'agent')),
    hash         BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;
INSERT INTO api_tokens_new (id, name, scope, hash, created_at, last_used_at, revoked_at)
    SELECT id, name, scope, hash, created_at, last_used_at, revoked_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
