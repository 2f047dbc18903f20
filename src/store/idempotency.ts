/**
 * Consumer idempotency: record the event id in the same transaction as the effect. `firstTime` is false when
 * the event was already processed by this consumer, and the caller then skips the effect.
 */
import type { Queryable } from './db.ts';

export async function firstTime(tx: Queryable, consumer: string, eventId: string): Promise<boolean> {
  return (await firstTimeMany(tx, consumer, [eventId])).size > 0;
}

/**
 * `firstTime` for many events in one statement: the ids among `eventIds` not processed before by this
 * consumer, now recorded. An id repeated within `eventIds` counts once (the caller keeps its first
 * occurrence).
 */
export async function firstTimeMany(
  tx: Queryable,
  consumer: string,
  eventIds: readonly string[],
): Promise<Set<string>> {
  const r = await tx.query<{ event_id: string }>(
    `INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::text[])
     ON CONFLICT DO NOTHING RETURNING event_id`,
    [consumer, eventIds],
  );
  return new Set(r.rows.map((row) => row.event_id));
}

/** Rows a prune deletes per statement. */
const PRUNE_BATCH = 5_000;

/** Whether a prune goes on with its next batch (see deleteInBatches); by default until nothing is left. */
type GoOn = () => boolean;
const toTheEnd: GoOn = () => true;

/**
 * Forgets processed events older than `olderThanMs`, in batches of `batch` rows, while `goOn` says so. Safe
 * once no copy of those events can be delivered again: past the retention of every topic they came from.
 * Resolves how many rows it deleted.
 */
export function pruneProcessed(
  db: Queryable,
  olderThanMs: number,
  batch = PRUNE_BATCH,
  goOn = toTheEnd,
): Promise<number> {
  return deleteInBatches(
    db,
    `DELETE FROM processed_events WHERE (consumer, event_id) IN (
       SELECT consumer, event_id FROM processed_events
        WHERE processed_at < now() - ($1::bigint * interval '1 millisecond') LIMIT $2)`,
    [olderThanMs],
    batch,
    goOn,
  );
}

/**
 * Forgets the idempotency keys of task creates older than 24 hours (their replay window), in batches, while
 * `goOn` says so.
 */
export function pruneIdempotencyKeys(db: Queryable, batch = PRUNE_BATCH, goOn = toTheEnd): Promise<number> {
  return deleteInBatches(
    db,
    `DELETE FROM idempotency_keys WHERE (user_id, key) IN (
       SELECT user_id, key FROM idempotency_keys WHERE created_at < now() - interval '24 hours' LIMIT $1)`,
    [],
    batch,
    goOn,
  );
}

/**
 * Runs `sql`, a DELETE of at most its last parameter's number of rows (`batch`, appended to `params`), until
 * it deletes fewer or `goOn` says to stop (asked before each batch but the first): short statements, so on
 * PGlite other work runs between them, and a prune of a million rows (seconds) can end between two of them
 * (the relay stopping). Resolves the rows deleted.
 */
async function deleteInBatches(
  db: Queryable,
  sql: string,
  params: readonly unknown[],
  batch: number,
  goOn: GoOn,
): Promise<number> {
  let total = 0;
  for (;;) {
    const r = await db.query(sql, [...params, batch]);
    total += r.rowCount;
    if (r.rowCount < batch || !goOn()) return total;
  }
}
