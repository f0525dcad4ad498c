-- A strict-order endpoint's first pending delivery (and each endpoint's oldest
-- pending one, for the queue gauges) is looked up as `endpoint_id >= e.id AND
-- endpoint_id <= e.id ORDER BY endpoint_id, seq`, an order that, without a
-- sort, only an ascending (endpoint_id, seq) index gives. With statistics that
-- lag behind a draining queue, the planner assumes pending rows are spread
-- evenly over seq and may read this index instead of the pending one, that is
-- the endpoint's whole delivered history before its head. Descending on seq
-- (as the delivery log reads it, newest first), this index can no longer give
-- that order, so only deliveries_endpoint_pending can.
--
-- The new index is built before the old one is dropped: building blocks only
-- writes to deliveries (seconds for a million rows), while DROP INDEX locks
-- out readers too, here only for the moment before the migration commits.
CREATE INDEX deliveries_log_desc ON deliveries (endpoint_id, seq DESC);
DROP INDEX deliveries_log;
ALTER INDEX deliveries_log_desc RENAME TO deliveries_log;
