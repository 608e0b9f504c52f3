-- Secrets of flow checks (`{ secret = "name" }` in a flow file): sealed with
-- the master key (purpose "check-secret:<name>"), never stored in clear.
CREATE TABLE check_secrets (
    name       TEXT PRIMARY KEY CHECK (name <> ''),
    sealed     BLOB NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
