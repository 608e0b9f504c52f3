-- Flow checks (scheduled monitoring of multi-step bank API flows), SQLite
-- flavour (same tables and columns as migrations/postgres/0005_checks.sql).
-- Conventions as in 0001.
--
-- A run is one execution of one flow at one location; its steps are stored
-- with it in the same transaction and go with it (cascade) when retention
-- prunes it. Runs are not tied to any other table: the flows live in files.

CREATE TABLE check_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The flow's id (its file stem).
    check_id     TEXT    NOT NULL CHECK (check_id <> ''),
    check_name   TEXT    NOT NULL,
    -- 'local' or an agent's location name.
    location     TEXT    NOT NULL CHECK (location <> ''),
    -- Shared by every location's run of one scheduled round.
    round_id     TEXT    NOT NULL CHECK (round_id <> ''),
    -- 'schedule' or 'manual' (the column is not named "trigger": a keyword).
    triggered_by TEXT    NOT NULL CHECK (triggered_by IN ('schedule', 'manual')),
    started_at   TEXT    NOT NULL,
    finished_at  TEXT    NOT NULL,
    duration_ms  INTEGER NOT NULL CHECK (duration_ms >= 0),
    outcome      TEXT    NOT NULL CHECK (outcome IN ('passed', 'degraded', 'failed')),
    -- 1 + retries made.
    attempts     INTEGER NOT NULL CHECK (attempts >= 1),
    failed_step  TEXT,
    -- Redacted by the runner before it gets here.
    error        TEXT
) STRICT;

-- A check's history, newest first (and retention's per-check ranking).
CREATE INDEX check_runs_check ON check_runs (check_id, id);
-- Every location's run of one round.
CREATE INDEX check_runs_round ON check_runs (round_id);

CREATE TABLE check_steps (
    run_id      INTEGER NOT NULL REFERENCES check_runs (id) ON DELETE CASCADE,
    -- The step's position in the flow ("index" is a keyword).
    step_index  INTEGER NOT NULL CHECK (step_index >= 0),
    name        TEXT    NOT NULL,
    -- 'http', 'encrypted_form', 'wait_until', …
    kind        TEXT    NOT NULL CHECK (kind <> ''),
    outcome     TEXT    NOT NULL CHECK (outcome IN ('passed', 'degraded', 'failed', 'skipped')),
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    -- JSON (request/response, asserts, captures), redacted and truncated by
    -- the runner; kept byte for byte.
    detail      TEXT    NOT NULL,
    PRIMARY KEY (run_id, step_index)
) STRICT;

-- The scheduler's per-check state (health, streaks, last alerts), so that a
-- restart resumes without alerting again.
CREATE TABLE check_states (
    check_id   TEXT PRIMARY KEY CHECK (check_id <> ''),
    -- JSON, kept byte for byte.
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
