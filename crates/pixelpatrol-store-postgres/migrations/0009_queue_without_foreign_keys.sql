-- The queue tables keep no foreign keys on PostgreSQL. Each one made every
-- delivery written (two: its event, its endpoint) and every attempt recorded
-- (one: its delivery) run a referential check: a query of its own, planned
-- again and again, that also takes a KEY SHARE lock on the referenced row,
-- so that concurrent submissions to one site's endpoints share locks on the
-- same few rows. Profiled under the throughput benchmark these checks were
-- a fifth of the database's CPU time.
--
-- What the cascades did, the store now does itself, in the same
-- transactions: deleting an endpoint deletes its deliveries and their
-- attempts; deleting a site, those of its endpoints; retention deletes an
-- event's deliveries and attempts with it. A delivery written by a
-- submission that raced the deletion of its endpoint (or a resend that
-- raced its event's retention) is never sent (the claim joins both) and is
-- swept by the worker's upkeep. SQLite keeps its foreign keys: there a check
-- is an in-process index probe with no locking, and one writer at a time
-- leaves no such race.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_endpoint_id_fkey;
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_delivery_id_fkey;
