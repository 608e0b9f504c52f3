-- Documents (account statements, notices), SQLite flavour (same tables and
-- columns as migrations/postgres/0003_documents.sql). Conventions as in 0001.
--
-- Bytes are content-addressed: one `document_blobs` row per SHA-256, however
-- many documents (of any connection) have those bytes. A document is one row
-- per (connection, provider key): listed again in a later sync, it is
-- neither downloaded nor stored again. Blobs no document refers to any more
-- are deleted with the last connection that used them.

CREATE TABLE document_blobs (
    -- Lower-case hex SHA-256 of `content`.
    sha256     TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL CHECK (size >= 0),
    content    BLOB    NOT NULL,
    created_at TEXT    NOT NULL
) STRICT;

CREATE TABLE documents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id INTEGER NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    -- The account the bank says it belongs to, if any.
    account_id    INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    -- The connector's stable key (e.g. derived from the bank's download token).
    provider_id   TEXT    NOT NULL,
    -- 'statement', 'document', 'notice', …
    kind          TEXT    NOT NULL,
    -- The bank's own category.
    category      TEXT,
    title         TEXT    NOT NULL,
    -- 'YYYY-MM-DD': the date the bank gives the document.
    date          TEXT,
    content_type  TEXT    NOT NULL,
    sha256        TEXT    NOT NULL REFERENCES document_blobs (sha256),
    size          INTEGER NOT NULL CHECK (size >= 0),
    first_seen    TEXT    NOT NULL,
    UNIQUE (connection_id, provider_id)
) STRICT;

CREATE INDEX documents_date ON documents (date, id);
CREATE INDEX documents_account ON documents (account_id, date);
CREATE INDEX documents_sha256 ON documents (sha256);
