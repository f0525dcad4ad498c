-- The claim now returns the rows it leases (UPDATE ... RETURNING), so no
-- query looks deliveries up by lease token any more: the index only cost a
-- write on every claim and every recorded attempt.
DROP INDEX deliveries_lease;

-- Alert transitions are worked out by the worker from the stored streak and
-- state; the batch token that used to mark a flip is no longer written.
ALTER TABLE endpoints DROP COLUMN alert_flip;
