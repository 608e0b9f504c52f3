-- BankID gateway orders, so that any `serve` instance sharing this
-- database can answer for an order another one started: its events, its QR
-- code, its cancellation. The instance that started an order drives it
-- (collects from BankID) and writes each change here; the others read.
-- `sealed` holds what must not sit in clear (the QR start secret and the
-- order's state, whose completion data is personal): the master key seals
-- it. The events key is kept only as its SHA-256.
CREATE TABLE bankid_orders (
    id              TEXT PRIMARY KEY CHECK (id <> ''),
    order_ref       TEXT NOT NULL,
    events_key_hash BLOB NOT NULL,
    qr_start_token  TEXT,
    started_at      TEXT NOT NULL,
    status          TEXT NOT NULL,
    sealed          BLOB NOT NULL,
    driver          TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
) STRICT;
CREATE INDEX bankid_orders_updated_at ON bankid_orders (updated_at);
