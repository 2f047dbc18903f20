-- The dedupe ledger is pruned by age (relay housekeeping, LEDGER_RETENTION_MS): find old rows by index.
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
