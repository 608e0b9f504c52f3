-- Card-reader authentication (EMV-CAP), SQLite flavour (same tables and
-- columns as migrations/postgres/0002_cards.sql). Conventions as in 0001.
--
-- A card sits in one USB reader; its PIN is stored only AEAD-sealed (the
-- store never sees it in plaintext). Ids of institutions and cards are
-- chosen by the caller (`fi_…`, `card_…`).

CREATE TABLE institutions (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    -- ISO 3166-1 alpha-2.
    country    TEXT,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE cards (
    id                TEXT    PRIMARY KEY,
    -- No cascade: an institution that still has cards cannot be deleted.
    institution_id    TEXT    NOT NULL REFERENCES institutions (id),
    label             TEXT    NOT NULL,
    account_reference TEXT    NOT NULL,
    -- One registered card per reader.
    reader            TEXT    NOT NULL UNIQUE,
    pan_last4         TEXT    NOT NULL,
    -- PAN sequence number, two hex digits.
    psn               TEXT,
    -- The EMV application label or mode (e.g. 'CAP').
    application       TEXT,
    status            TEXT    NOT NULL CHECK (status IN ('active', 'disabled', 'blocked')),
    status_reason     TEXT,
    pin_sealed        BLOB    NOT NULL,
    min_pin_tries     INTEGER NOT NULL CHECK (min_pin_tries BETWEEN 0 AND 255),
    last_used_at      TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL
) STRICT;

CREATE INDEX cards_institution ON cards (institution_id, label, id);

-- Every use of a card. No foreign key: the audit outlives deleted cards.
CREATE TABLE card_audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             TEXT    NOT NULL,
    token_name     TEXT    NOT NULL,
    card_id        TEXT    NOT NULL,
    institution_id TEXT    NOT NULL,
    -- 'm1', 'm2', 'register', …
    mode           TEXT    NOT NULL,
    -- 'ok', 'wrong_pin', 'blocked', 'busy', 'card_removed', 'error', …
    outcome        TEXT    NOT NULL,
    detail         TEXT,
    -- Application transaction counter read from the card.
    atc            INTEGER CHECK (atc BETWEEN 0 AND 4294967295),
    duration_ms    INTEGER NOT NULL CHECK (duration_ms >= 0)
) STRICT;

CREATE INDEX card_audit_card ON card_audit (card_id, id);
CREATE INDEX card_audit_at ON card_audit (at);
