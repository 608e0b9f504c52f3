-- Pages of one connection's transactions (`?connection=`) in the API's
-- order: served by an index with the filter and the order, instead of a walk
-- of every connection's rows by date.
CREATE INDEX transactions_connection_booking ON transactions (connection_id, booking_date, id);
