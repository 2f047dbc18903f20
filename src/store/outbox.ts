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
  const r = await tx.query<{ last_seq: string }>(
    `INSERT INTO event_streams (stream_key, last_seq) VALUES ($1, $2)
     ON CONFLICT (stream_key) DO UPDATE SET last_seq = event_streams.last_seq + $2
     RETURNING last_seq`,
    [key, count],
  );
  return Number(r.rows[0]!.last_seq) - count + 1;
}

export async function appendEvents(tx: Queryable, events: readonly CloudEvent[]): Promise<void> {
  if (events.length === 0) return;
  for (const e of events) assertValidEvent(e);
  const byKey = new Map<string, CloudEvent[]>();
  for (const e of events) {
    const key = e.partitionkey;
    if (!key) throw new Error(`event ${e.id} has no partitionkey`);
    byKey.set(key, [...(byKey.get(key) ?? []), e]);
  }
  for (const [key, list] of byKey) {
    let seq = await nextStreamSeq(tx, key, list.length);
    for (const e of list) {
      if (!isEventType(e.type)) throw new Error(`unknown event type ${e.type}`);
      await tx.query(
        `INSERT INTO outbox (topic, key, stream_seq, event_id, event_type, event) VALUES ($1, $2, $3, $4, $5, $6)`,
        [topicOf(e.type), key, seq++, e.id, e.type, JSON.stringify(e)],
      );
    }
  }
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
