-- Card hosts: readers on other machines, each served by a card agent
-- (same change as migrations/sqlite/0017).
--
-- * cards.host: the card host whose reader holds the card ('' for the
--   server's own readers). One card per reader of a host.
-- * api_tokens.scope gains 'card-agent': a card agent's token may only take
--   and answer its own host's card jobs (the host's name is the token's
--   `location`).
ALTER TABLE cards ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE cards DROP CONSTRAINT cards_reader_key;
ALTER TABLE cards ADD CONSTRAINT cards_reader_key UNIQUE (host, reader);
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scope_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope_check
    CHECK (scope IN ('read', 'write', 'admin', 'agent', 'card-agent'));
