/**
 * The transactional outbox. `appendEvents` runs inside the caller's transaction, after validating each
 * event against its schema: the state change and its events commit or roll back together.
 */
import type { CloudEvent } from '../contracts/cloudevent.ts';
import { assertValidEvent, isEventType, topicOf } from '../contracts/schemas.ts';
import type { Db, Queryable } from './db.ts';

/** In-process wake-up of the relay after a commit that wrote events (other processes poll). */
export const OUTBOX_SIGNAL = 'outbox-append';
export const notifyOutbox = (db: Db) => db.signals.emit(OUTBOX_SIGNAL);

/**
 * Takes the per-key stream lock (held until commit) and returns the next sequence numbers. Transactions of
 * one key are serialized, so for a key outbox ids and sequences follow commit order.
 */
export async function nextStreamSeq(tx: Queryable, key: string, count = 1): Promise<number> {
  return (await nextStreamSeqs(tx, new Map([[key, count]]))).get(key)!;
}

/**
 * `nextStreamSeq` for many keys in one statement. Rows are upserted in key order, so two transactions that
 * share keys lock them in the same order and cannot deadlock.
 */
async function nextStreamSeqs(
  tx: Queryable,
  counts: ReadonlyMap<string, number>,
): Promise<Map<string, number>> {
  const keys = [...counts.keys()].sort();
  const r = await tx.query<{ stream_key: string; last_seq: string }>(
    `INSERT INTO event_streams (stream_key, last_seq)
     SELECT k, n FROM unnest($1::text[], $2::bigint[]) AS t(k, n) ORDER BY k
     ON CONFLICT (stream_key) DO UPDATE SET last_seq = event_streams.last_seq + excluded.last_seq
     RETURNING stream_key, last_seq`,
    [keys, keys.map((k) => counts.get(k)!)],
  );
  return new Map(
    r.rows.map((row) => [row.stream_key, Number(row.last_seq) - counts.get(row.stream_key)! + 1]),
  );
}

/**
 * Writes events to the outbox: one statement for the stream sequences and one for the rows, whatever the
 * batch size (a scheduler claim writes hundreds). Rows are inserted in the given order, so for each key the
 * outbox ids follow its sequence numbers.
 */
export async function appendEvents(tx: Queryable, events: readonly CloudEvent[]): Promise<void> {
  if (events.length === 0) return;
  const counts = new Map<string, number>();
  const topics: string[] = [];
  for (const e of events) {
    assertValidEvent(e);
    if (!isEventType(e.type)) throw new Error(`unknown event type ${e.type}`);
    if (!e.partitionkey) throw new Error(`event ${e.id} has no partitionkey`);
    counts.set(e.partitionkey, (counts.get(e.partitionkey) ?? 0) + 1);
    topics.push(topicOf(e.type));
  }
  const next = await nextStreamSeqs(tx, counts);
  const cols = {
    topic: topics,
    key: [] as string[],
    seq: [] as number[],
    id: [] as string[],
    type: [] as string[],
    body: [] as string[],
  };
  for (const e of events) {
    const key = e.partitionkey!;
    const seq = next.get(key)!;
    next.set(key, seq + 1);
    cols.key.push(key);
    cols.seq.push(seq);
    cols.id.push(e.id);
    cols.type.push(e.type);
    cols.body.push(JSON.stringify(e));
  }
  await tx.query(
    `INSERT INTO outbox (topic, key, stream_seq, event_id, event_type, event)
     SELECT topic, key, seq, id, type, body::jsonb
       FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
            WITH ORDINALITY AS t(topic, key, seq, id, type, body, ord)
      ORDER BY ord`,
    [cols.topic, cols.key, cols.seq, cols.id, cols.type, cols.body],
  );
}

export interface OutboxRow {
  id: string;
  topic: string;
  key: string;
  event: CloudEvent;
  attempts: number;
}

export async function pendingOutbox(db: Queryable, limit: number): Promise<OutboxRow[]> {
  const r = await db.query<{ id: string; topic: string; key: string; event: CloudEvent; attempts: number }>(
    `SELECT id::text AS id, topic, key, event, attempts FROM outbox WHERE published_at IS NULL ORDER BY outbox.id LIMIT $1`,
    [limit],
  );
  return r.rows;
}

export async function markPublished(db: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length)
    await db.query(`UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])`, [ids]);
}

export async function recordPublishFailure(
  db: Queryable,
  ids: readonly string[],
  error: string,
): Promise<void> {
  if (ids.length)
    await db.query(
      `UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1::bigint[])`,
      [ids, error.slice(0, 2000)],
    );
}

export interface OutboxStats {
  pending: number;
  oldestPendingAgeSeconds: number;
}

export async function outboxStats(db: Queryable): Promise<OutboxStats> {
  const r = await db.query<{ pending: string; oldest: string | null }>(
    `SELECT count(*)::text AS pending, extract(epoch FROM now() - min(created_at))::text AS oldest
       FROM outbox WHERE published_at IS NULL`,
  );
  return {
    pending: Number(r.rows[0]?.pending ?? 0),
    oldestPendingAgeSeconds: Number(r.rows[0]?.oldest ?? 0),
  };
}

/** Deletes published rows older than `olderThanMs` (the bus keeps them for its retention). */
export async function pruneOutbox(db: Queryable, olderThanMs: number): Promise<number> {
  const r = await db.query(
    `DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < now() - ($1::bigint * interval '1 millisecond')`,
    [olderThanMs],
  );
  return r.rowCount;
}
