-- A transaction's category, set by rules (`bankbridge categorize`, or at
-- import when rules are configured). The raw label is never changed.
ALTER TABLE transactions ADD COLUMN category TEXT;
CREATE INDEX transactions_category ON transactions (category, booking_date, id) WHERE category IS NOT NULL;
