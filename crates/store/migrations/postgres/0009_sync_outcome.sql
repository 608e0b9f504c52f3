-- Sync outcomes as an enum, and credentials versions: a connection whose
-- credentials the bank refused is not synced again until they change
-- (same columns as migrations/sqlite/0009).
--
-- last_sync_status takes 'never', 'ok', 'needs_user', 'credentials_refused'
-- or 'failed'. credentials_version goes up with every change of the
-- credentials; last_sync_credentials_version says which version the last
-- sync used, so a refusal applies to those credentials only.
ALTER TABLE connections ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE connections ADD COLUMN last_sync_credentials_version BIGINT;
UPDATE connections SET last_sync_credentials_version = 1 WHERE last_sync_at IS NOT NULL;
-- Refusals were recorded as failures whose text started so.
UPDATE connections SET last_sync_status = 'credentials_refused'
    WHERE last_sync_status = 'failed' AND last_sync_error LIKE 'the bank refused the login: %';
ALTER TABLE connections ADD CONSTRAINT connections_last_sync_status_check
    CHECK (last_sync_status IN ('never', 'ok', 'needs_user', 'credentials_refused', 'failed'));
