-- Facts about the database itself, by name (same table as
-- migrations/postgres/0010). `master_key_check`: the check value of the
-- master key that seals this database's secrets, so that starting with
-- another key fails at once.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
