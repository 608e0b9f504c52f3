-- Work on flow checks that outlives the server that started it.
--
-- A scheduled round's claim becomes a lease: `until` is when the round
-- must have closed (its worst-case run time and a margin), `done_at` when
-- it did. A claim past `until` and not done belongs to a server that
-- stopped mid-round: another takes it over (a compare-and-set on
-- `claimed_by`) and runs the round. Claims without `until` (certificate
-- alerts, and rounds claimed before this migration) are never taken over.
ALTER TABLE check_claims ADD COLUMN until TEXT;
ALTER TABLE check_claims ADD COLUMN done_at TEXT;
CREATE INDEX check_claims_open ON check_claims (until) WHERE done_at IS NULL;

-- Jobs for check agents: a round's run at a location no server runs
-- itself. The server that opens the round queues them; an agent polling
-- any server takes them (one taker per job: the update re-checks
-- `taken_at IS NULL`); its report, sent to any server, is written here,
-- and the round's server collects it (one collector: `collected_at`).
-- Secrets are not stored: the server that hands a job out adds them.
CREATE TABLE check_jobs (
    job_id       TEXT PRIMARY KEY CHECK (job_id <> ''),
    round_id     TEXT NOT NULL,
    check_id     TEXT NOT NULL,
    location     TEXT NOT NULL,
    file         TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    deadline     TEXT NOT NULL,
    taken_by     TEXT,
    taken_at     TEXT,
    report       TEXT,
    reported_at  TEXT,
    collected_at TEXT
) STRICT;
CREATE INDEX check_jobs_waiting ON check_jobs (location, created_at) WHERE taken_at IS NULL;
CREATE INDEX check_jobs_reported ON check_jobs (created_by) WHERE reported_at IS NOT NULL AND collected_at IS NULL;
CREATE INDEX check_jobs_created_at ON check_jobs (created_at);

-- Alerts to deliver: written in the transaction that moves a check's
-- state (so a change of health and its alerts are stored together, once),
-- then sent by whichever server claims them. A claim lapses at
-- `claimed_until`: an alert whose server died before sending it is sent
-- by another. `done_at` is set once sent, or once its delivery failed
-- (a failed delivery waits for the next reminder, as on one server).
CREATE TABLE alert_outbox (
    id            TEXT PRIMARY KEY CHECK (id <> ''),
    channel       TEXT NOT NULL,
    alert         TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    claimed_by    TEXT,
    claimed_until TEXT,
    done_at       TEXT,
    error         TEXT
) STRICT;
CREATE INDEX alert_outbox_waiting ON alert_outbox (created_at) WHERE done_at IS NULL;
