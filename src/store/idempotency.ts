/**
 * Consumer idempotency: record the event id in the same transaction as the effect. `firstTime` is false when
 * the event was already processed by this consumer, and the caller then skips the effect.
 */
import type { Queryable } from './db.ts';

export async function firstTime(tx: Queryable, consumer: string, eventId: string): Promise<boolean> {
  const r = await tx.query(
    'INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING',
    [consumer, eventId],
  );
  return r.rowCount > 0;
}
