-- An agent token is bound to the check location it was created for: its
-- jobs carry stored secrets, so a token for one location must not fetch
-- another's. NULL for other scopes.
ALTER TABLE api_tokens ADD COLUMN location TEXT;
