-- SimpleFIN access for other tools. A token starts as a one-time claim
-- code (only its SHA-256 kept); the claim turns it into access credentials
-- (user = id, only the SHA-256 of the password kept). `accounts` is the
-- JSON array of the account ids it may read.
CREATE TABLE simplefin_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    accounts     TEXT NOT NULL,
    base_url     TEXT NOT NULL,
    claim_hash   BLOB NOT NULL UNIQUE,
    access_hash  BLOB,
    created_at   TEXT NOT NULL,
    claimed_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;

-- Incremental exports (`export --since-last NAME`): per name, the newest
-- change already written and the ledger accounts already opened.
CREATE TABLE export_marks (
    name       TEXT PRIMARY KEY,
    format     TEXT NOT NULL,
    mark       TEXT NOT NULL,
    opened     TEXT NOT NULL,
    exports    INTEGER NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
