-- The `serve` processes sharing this database, each under its name: a
-- heartbeat moves `expires_at` on every few seconds, so an instance that
-- died shows as gone once it passes, and its name is free again.
CREATE TABLE instances (
    name         TEXT PRIMARY KEY CHECK (name <> ''),
    owner        TEXT NOT NULL,
    version      TEXT NOT NULL,
    listen       TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    stopped_at   TIMESTAMPTZ
);
