-- Secrets of flow checks (`{ secret = "name" }` in a flow file): sealed with
-- the master key (purpose "check-secret:<name>"), never stored in clear.
CREATE TABLE check_secrets (
    name       TEXT        PRIMARY KEY CHECK (name <> ''),
    sealed     BYTEA       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
