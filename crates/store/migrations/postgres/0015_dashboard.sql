-- A category a person set by hand in the dashboard: category rules never
-- overwrite it (the bank's own fields are never touched either).
ALTER TABLE transactions ADD COLUMN category_manual BOOLEAN NOT NULL DEFAULT false;

-- One-time sign-in links for the dashboard (`token create --login`): only
-- the SHA-256 of the link's secret is kept; a link signs in once, as its
-- token, before it expires.
CREATE TABLE login_links (
    hash       BYTEA PRIMARY KEY,
    token_id   TEXT        NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);

-- PIN tries left as the card told at its last successful use (the card
-- team's admin page shows it); NULL until then, or when the card never says.
ALTER TABLE cards ADD COLUMN pin_tries_left INTEGER;
