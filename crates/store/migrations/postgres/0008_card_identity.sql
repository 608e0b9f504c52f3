-- Cards whose CAP application carries no card number, and cards that may
-- have refused their PIN (same columns as migrations/sqlite/0008).
--
-- * pan_last4 becomes optional; records_digest (SHA-256 hex of the AID and
--   the static records without card-number data) identifies a card without
--   a number and double-checks one with. One of the two is always present.
-- * pin_refused: VERIFY went out and no 9000 came back, so the card may
--   have counted a wrong PIN; it stays out of use until a new PIN is set.
--   Cards already disabled for a refused PIN keep that meaning.
ALTER TABLE cards ALTER COLUMN pan_last4 DROP NOT NULL;
ALTER TABLE cards ADD COLUMN records_digest TEXT;
ALTER TABLE cards ADD COLUMN pin_refused BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE cards ADD CONSTRAINT cards_identity_check
    CHECK (pan_last4 IS NOT NULL OR records_digest IS NOT NULL);
UPDATE cards SET pin_refused = TRUE
    WHERE status = 'disabled' AND status_reason LIKE 'the card refused the stored PIN%';
