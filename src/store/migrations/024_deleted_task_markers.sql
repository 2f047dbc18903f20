-- taskflow:no-transaction
-- The reminders target's markers of deleted tasks (reminder_tasks.deleted), found by age for its hourly prune
-- (pruneDeletedTasks): it forgets a marker, with the task's reminders, once no copy of the task's events can
-- arrive any more (LEDGER_RETENTION_MS). Without it the prune read every task the target knows, each hour; the
-- tasks that exist are not in it, so a write of one costs nothing more. Built CONCURRENTLY: a plain build held
-- every write of the running version's reminders target for as long as it read the table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS reminder_tasks_deleted ON reminder_tasks (updated_at) WHERE deleted;
