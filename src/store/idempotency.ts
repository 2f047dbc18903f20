/**
 * Consumer idempotency: record the event id in the same transaction as the effect. `firstTime` is false when
 * the event was already processed by this consumer, and the caller then skips the effect.
 */
import type { Queryable } from './db.ts';
import { deleteOldestFirst } from './oldest-first.ts';

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

/** Whether a prune goes on with its next batch (see deleteOldestFirst); by default until nothing is left. */
type GoOn = () => boolean;
const toTheEnd: GoOn = () => true;

/**
 * Forgets processed events older than `olderThanMs`, in batches of `batch` rows, while `goOn` says so. Safe
 * once no copy of those events can be delivered again: past the retention of every topic they came from.
 * Resolves how many rows it deleted.
 */
export async function pruneProcessed(
  db: Queryable,
  olderThanMs: number,
  batch = PRUNE_BATCH,
  goOn = toTheEnd,
): Promise<number> {
  return (
    await deleteOldestFirst(
      db,
      `WITH doomed AS (
         SELECT consumer, event_id, processed_at FROM processed_events
          WHERE processed_at >= $1::timestamptz AND processed_at < now() - ($2::bigint * interval '1 millisecond')
          ORDER BY processed_at LIMIT $3),
       gone AS (
         DELETE FROM processed_events t USING doomed d
          WHERE t.consumer = d.consumer AND t.event_id = d.event_id RETURNING d.processed_at)
       SELECT count(*)::int AS deleted, max(processed_at)::text AS last FROM gone`,
      [olderThanMs],
      batch,
      goOn,
    )
  ).deleted;
}

/**
 * Forgets the idempotency keys of task creates older than 24 hours (their replay window), in batches, while
 * `goOn` says so.
 */
export async function pruneIdempotencyKeys(
  db: Queryable,
  batch = PRUNE_BATCH,
  goOn = toTheEnd,
): Promise<number> {
  return (
    await deleteOldestFirst(
      db,
      `WITH doomed AS (
         SELECT user_id, key, created_at FROM idempotency_keys
          WHERE created_at >= $1::timestamptz AND created_at < now() - interval '24 hours'
          ORDER BY created_at LIMIT $2),
       gone AS (
         DELETE FROM idempotency_keys t USING doomed d
          WHERE t.user_id = d.user_id AND t.key = d.key RETURNING d.created_at)
       SELECT count(*)::int AS deleted, max(created_at)::text AS last FROM gone`,
      [],
      batch,
      goOn,
    )
  ).deleted;
}
