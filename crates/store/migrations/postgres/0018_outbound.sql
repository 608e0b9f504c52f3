-- SimpleFIN access for other tools. A token starts as a one-time claim
-- code (only its SHA-256 kept); the claim turns it into access credentials
-- (user = id, only the SHA-256 of the password kept). `accounts` is the
-- JSON array of the account ids it may read.
CREATE TABLE simplefin_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT        NOT NULL UNIQUE,
    accounts     TEXT        NOT NULL,
    base_url     TEXT        NOT NULL,
    claim_hash   BYTEA       NOT NULL UNIQUE,
    access_hash  BYTEA,
    created_at   TIMESTAMPTZ NOT NULL,
    claimed_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- Incremental exports (`export --since-last NAME`): per name, the newest
-- change already written and the ledger accounts already opened.
CREATE TABLE export_marks (
    name       TEXT PRIMARY KEY,
    format     TEXT        NOT NULL,
    mark       TIMESTAMPTZ NOT NULL,
    opened     TEXT        NOT NULL,
    exports    BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
