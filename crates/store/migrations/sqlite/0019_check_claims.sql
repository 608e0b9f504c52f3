-- Servers sharing one database each run the flow-check scheduler: a round
-- of a check's schedule slot (or a once-a-day certificate alert) is done by
-- whichever server inserts its row here first. `slot_ms` is the slot's
-- instant in milliseconds since the epoch; every server computes the same
-- slots from the check's id and period.
CREATE TABLE check_claims (
    check_id   TEXT    NOT NULL CHECK (check_id <> ''),
    slot_ms    INTEGER NOT NULL,
    claimed_by TEXT    NOT NULL,
    claimed_at TEXT    NOT NULL,
    PRIMARY KEY (check_id, slot_ms)
) STRICT;
CREATE INDEX check_claims_claimed_at ON check_claims (claimed_at);
