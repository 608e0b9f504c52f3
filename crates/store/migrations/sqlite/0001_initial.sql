-- bankbridge schema, SQLite flavour (same tables and columns as migrations/postgres).
--
-- Conventions:
-- * STRICT tables: a value of the wrong type is an error, never silently converted.
-- * Money is TEXT holding an exact decimal string ("-12.30"), never REAL.
-- * Dates are TEXT 'YYYY-MM-DD'; instants are TEXT RFC 3339 in UTC
--   ('2024-03-01T10:00:00.123456+00:00'), which sort correctly as text.
-- * JSON is TEXT, kept byte for byte as written.

CREATE TABLE connections (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    name               TEXT    NOT NULL UNIQUE,
    connector          TEXT    NOT NULL,
    settings           TEXT    NOT NULL,
    credentials_sealed BLOB    NOT NULL,
    session_sealed     BLOB,
    created_at         TEXT    NOT NULL,
    last_sync_at       TEXT,
    last_sync_status   TEXT    NOT NULL DEFAULT 'never',
    last_sync_error    TEXT,
    lease_owner        TEXT,
    lease_until        TEXT
) STRICT;

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id INTEGER NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider_id   TEXT    NOT NULL,
    iban          TEXT,
    currency      TEXT    NOT NULL,
    name          TEXT,
    kind          TEXT,
    raw           TEXT    NOT NULL,
    first_seen    TEXT    NOT NULL,
    last_seen     TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    UNIQUE (connection_id, provider_id)
) STRICT;

CREATE TABLE balances (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind           TEXT    NOT NULL,
    amount         TEXT    NOT NULL,
    currency       TEXT    NOT NULL,
    reference_date TEXT    NOT NULL,
    fetched_at     TEXT    NOT NULL,
    UNIQUE (account_id, kind, reference_date)
) STRICT;

CREATE TABLE transactions (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id       INTEGER NOT NULL,
    account_id          INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    provider_id         TEXT    NOT NULL,
    pending_provider_id TEXT,
    fingerprint         TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'booked', 'void')),
    booking_date        TEXT    NOT NULL,
    value_date          TEXT,
    transaction_date    TEXT,
    amount              TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    original_amount     TEXT,
    original_currency   TEXT,
    raw_label           TEXT    NOT NULL,
    label               TEXT    NOT NULL,
    counterparty_name   TEXT,
    counterparty_iban   TEXT,
    remittance_info     TEXT,
    bank_code           TEXT,
    running_balance     TEXT,
    raw                 TEXT    NOT NULL,
    -- Lower-cased (Unicode) label, raw label, counterparty and remittance
    -- information, for case-insensitive text search in any script.
    search_text         TEXT    NOT NULL,
    first_seen          TEXT    NOT NULL,
    last_seen           TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    UNIQUE (account_id, provider_id)
) STRICT;

CREATE INDEX transactions_account_booking ON transactions (account_id, booking_date, id);
CREATE INDEX transactions_booking ON transactions (booking_date, id);
CREATE INDEX transactions_updated ON transactions (updated_at);

CREATE TABLE checkpoints (
    account_id     INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    oldest_covered TEXT,
    newest_covered TEXT,
    backfill_done  INTEGER NOT NULL DEFAULT 0,
    empty_streak   INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT    NOT NULL
) STRICT;

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    hash         BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;

CREATE TABLE sync_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id INTEGER NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    status        TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    summary       TEXT,
    error         TEXT
) STRICT;

CREATE INDEX sync_jobs_connection ON sync_jobs (connection_id);
