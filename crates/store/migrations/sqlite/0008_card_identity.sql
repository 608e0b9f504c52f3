-- Cards whose CAP application carries no card number, and cards that may
-- have refused their PIN (same columns as migrations/postgres/0008).
--
-- * pan_last4 becomes optional; records_digest (SHA-256 hex of the AID and
--   the static records without card-number data) identifies a card without
--   a number and double-checks one with. One of the two is always present.
-- * pin_refused: VERIFY went out and no 9000 came back, so the card may
--   have counted a wrong PIN; it stays out of use until a new PIN is set.
--   Cards already disabled for a refused PIN keep that meaning.
--
-- SQLite cannot drop a NOT NULL, so the table is rebuilt with its rows.
CREATE TABLE cards_new (
    id                TEXT    PRIMARY KEY,
    institution_id    TEXT    NOT NULL REFERENCES institutions (id),
    label             TEXT    NOT NULL,
    account_reference TEXT    NOT NULL,
    reader            TEXT    NOT NULL UNIQUE,
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
    CHECK (pan_last4 IS NOT NULL OR records_digest IS NOT NULL)
) STRICT;
INSERT INTO cards_new (id, institution_id, label, account_reference, reader, pan_last4, psn,
        records_digest, application, status, status_reason, pin_refused, pin_sealed, min_pin_tries,
        last_used_at, created_at, updated_at)
    SELECT id, institution_id, label, account_reference, reader, pan_last4, psn,
        NULL, application, status, status_reason,
        CASE WHEN status = 'disabled' AND status_reason LIKE 'the card refused the stored PIN%'
             THEN 1 ELSE 0 END,
        pin_sealed, min_pin_tries, last_used_at, created_at, updated_at
    FROM cards;
DROP TABLE cards;
ALTER TABLE cards_new RENAME TO cards;
CREATE INDEX cards_institution ON cards (institution_id, label, id);
