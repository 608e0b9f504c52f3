-- The sync lease's fencing token: grows with each acquisition, and every
-- write of a sync checks it in its own transaction, so a sync whose lease
-- was taken over writes nothing.
ALTER TABLE connections ADD COLUMN lease_generation INTEGER NOT NULL DEFAULT 0;
