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
  return deleteOldInBatches(
    db,
    { table: 'processed_events', key: ['consumer', 'event_id'], time: 'processed_at' },
    `now() - ($1::bigint * interval '1 millisecond')`,
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
  return deleteOldInBatches(
    db,
    { table: 'idempotency_keys', key: ['user_id', 'key'], time: 'created_at' },
    `now() - interval '24 hours'`,
    [],
    batch,
    goOn,
  );
}

/**
 * Deletes the rows of `of.table` whose `of.time` is before `before` (SQL over `params`), oldest first, at most
 * `batch` rows a statement, until a statement deletes fewer or `goOn` says to stop (asked before each batch
 * but the first): short statements, so on PGlite other work runs between them, and a prune of a million rows
 * (seconds) can end between two of them (the relay stopping). Each batch starts its walk of the time's index
 * where the last one ended: from the start each time, every batch stepped over the index entries of all those
 * deleted before it (not yet vacuumed): a million rows took 20.7 s, against 2.0 s for 300,000
 * (docs/benchmarks.md). Resolves the rows deleted.
 */
async function deleteOldInBatches(
  db: Queryable,
  of: { table: string; key: readonly [string, string]; time: string },
  before: string,
  params: readonly unknown[],
  batch: number,
  goOn: GoOn,
): Promise<number> {
  const [a, b] = of.key;
  const from = `$${params.length + 1}`;
  const limit = `$${params.length + 2}`;
  const sql = `WITH doomed AS (
       SELECT ${a}, ${b}, ${of.time} FROM ${of.table}
        WHERE ${of.time} >= ${from}::timestamptz AND ${of.time} < ${before}
        ORDER BY ${of.time} LIMIT ${limit}),
     gone AS (
       DELETE FROM ${of.table} t USING doomed d WHERE t.${a} = d.${a} AND t.${b} = d.${b} RETURNING d.${of.time})
     SELECT count(*)::int AS deleted, max(${of.time})::text AS last FROM gone`;
  let total = 0;
  // Not after the last one deleted: rows of the same time beyond the batch are still to go.
  let last = '-infinity';
  for (;;) {
    const r = await db.query<{ deleted: number; last: string | null }>(sql, [...params, last, batch]);
    const { deleted, last: reached } = r.rows[0]!;
    total += deleted;
    if (deleted < batch || !goOn() || reached === null) return total;
    last = reached;
  }
}
