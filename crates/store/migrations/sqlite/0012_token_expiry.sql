-- A token may be made to stop working at a set time (`token create
-- --expires 90d`); NULL never expires.
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;
