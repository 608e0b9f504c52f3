-- Card hosts: readers on other machines, each served by a card agent
-- (same change as migrations/postgres/0017).
--
-- * cards.host: the card host whose reader holds the card ('' for the
--   server's own readers). One card per reader of a host, so a reader name
--   is unique per host, not across them (two hosts both have a
--   "Virtual PCD 00 00").
-- * api_tokens.scope gains 'card-agent': a card agent's token may only take
--   and answer its own host's card jobs (the host's name is the token's
--   `location`).
--
-- SQLite cannot alter a UNIQUE or a CHECK, so both tables are rebuilt with
-- their rows. Rebuilding api_tokens drops it, which would cascade to the
-- one-time sign-in links: they are kept aside and put back.
CREATE TABLE cards_new (
    id                TEXT    PRIMARY KEY,
    institution_id    TEXT    NOT NULL REFERENCES institutions (id),
    label             TEXT    NOT NULL,
    account_reference TEXT    NOT NULL,
    host              TEXT    NOT NULL DEFAULT '',
    reader            TEXT    NOT NULL,
    pan_last4         TEXT,
    psn               TEXT,
    records_digest    TEXT,
    application       TEXT,
    status            TEXT    NOT NULL CHECK (status IN ('active', 'disabled', 'blocked')),
    status_reason     TEXT,
    pin_refused       INTEGER NOT NULL DEFAULT 0 CHECK (pin_refused IN (0, 1)),
    pin_sealed        BLOB    NOT NULL,
    min_pin_tries     INTEGER NOT NULL CHECK (min_pin_tries BETWEEN 0 AND 255),
    last_used_at      TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    pin_tries_left    INTEGER,
    UNIQUE (host, reader),
    CHECK (pan_last4 IS NOT NULL OR records_digest IS NOT NULL)
) STRICT;
INSERT INTO cards_new (id, institution_id, label, account_reference, host, reader, pan_last4, psn,
        records_digest, application, status, status_reason, pin_refused, pin_sealed, min_pin_tries,
        last_used_at, created_at, updated_at, pin_tries_left)
    SELECT id, institution_id, label, account_reference, '', reader, pan_last4, psn,
        records_digest, application, status, status_reason, pin_refused, pin_sealed, min_pin_tries,
        last_used_at, created_at, updated_at, pin_tries_left
    FROM cards;
DROP TABLE cards;
ALTER TABLE cards_new RENAME TO cards;
CREATE INDEX cards_institution ON cards (institution_id, label, id);

CREATE TEMP TABLE login_links_kept AS SELECT * FROM login_links;
CREATE TABLE api_tokens_new (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin', 'agent', 'card-agent')),
    hash         BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT,
    location     TEXT,
    expires_at   TEXT
) STRICT;
INSERT INTO api_tokens_new (id, name, scope, hash, created_at, last_used_at, revoked_at, location,
        expires_at)
    SELECT id, name, scope, hash, created_at, last_used_at, revoked_at, location, expires_at
    FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
INSERT OR IGNORE INTO login_links SELECT * FROM login_links_kept;
DROP TABLE login_links_kept;
