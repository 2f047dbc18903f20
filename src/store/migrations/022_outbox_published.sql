-- taskflow:no-transaction
-- Outbox rows marked published by relays before 2026-12-05, which set published_at and kept the row a day (a
-- relay now deletes what it publishes), found by index for the relay's once-a-minute prune (pruneOutbox):
-- without it the prune read every pending row each minute, millions through a broker outage (0.5-0.8 s a
-- million). Pending rows are not in it: a write costs nothing more. Built CONCURRENTLY: a plain build held
-- every write to the outbox (every API write of the running version) for as long as it read the table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
