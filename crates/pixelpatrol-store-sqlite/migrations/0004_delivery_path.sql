-- The claim now returns the rows it leases (UPDATE ... RETURNING), so no
-- query looks deliveries up by lease token any more: the index only cost a
-- write on every claim and every recorded attempt.
DROP INDEX deliveries_lease;

-- endpoints.alert_flip is no longer written (the worker works out alert
-- transitions from the stored streak and state); it stays, unused, so that
-- processes of the previous release still running against this database
-- keep recording attempts until they are replaced.
