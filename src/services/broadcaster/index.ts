/**
 * The `broadcaster` target: turns every task event into a `task.changed` on `task-updates` (what the
 * real-time clients need) with a gap-free per-user `sequence`. The counter increment, the outbox append and
 * the processed-event record share one transaction, so a redelivered event neither re-sends nor burns a
 * sequence number, and the relay publishes a user's updates in sequence order (outbox order per key).
 * Events that arrive together (a backlog) are handled as one run in one transaction (`handleBatch`).
 */
import { makeEvent, type CloudEvent } from '../../contracts/cloudevent.ts';
import type { TaskChangedData, TaskEventData } from '../../contracts/events.ts';
import { GROUPS, TOPICS } from '../../contracts/topics.ts';
import { childTraceparent } from '../../observability/trace.ts';
import type { Tx } from '../../store/db.ts';
import { appendEvents } from '../../store/outbox.ts';
import { consumerTarget } from '../consumer-target.ts';

export const SOURCE = '/taskflow/broadcaster';

const CHANGE_TYPES: Record<string, TaskChangedData['change_type']> = {
  'task.created': 'created',
  'task.updated': 'updated',
  'task.completed': 'completed',
  'task.reopened': 'reopened',
  'task.deleted': 'deleted',
};

/** The `task.changed` of a task event of one of the CHANGE_TYPES. */
function changeOf(
  event: CloudEvent,
  sequence: number,
  now: Date,
  traceparent: string,
): CloudEvent<TaskChangedData> {
  const data = event.data as TaskEventData;
  return makeEvent<TaskChangedData>({
    type: 'task.changed',
    source: SOURCE,
    subject: data.task.id,
    key: data.user_id,
    time: now,
    traceparent,
    data: {
      task_id: data.task.id,
      user_id: data.user_id,
      change_type: CHANGE_TYPES[event.type]!,
      task: data.task,
      changes: data.changes ?? [],
      sequence,
    },
  });
}

/**
 * Broadcasts a run of task events in one transaction, in two statements: the first records the new event
 * ids (the first occurrence of an id in the run wins) and takes the next sequence numbers of each of their
 * users under the counter rows' locks (in user order: no deadlock between instances); the second appends the
 * `task.changed` events, numbered consecutively per user in the run's order. Resolves how many it wrote.
 */
export async function broadcastRun(
  tx: Tx,
  items: readonly { event: CloudEvent; traceparent: string }[],
  now: Date,
): Promise<number> {
  const relevant = items.filter((i) => CHANGE_TYPES[i.event.type]); // other task events: nothing to do
  if (relevant.length === 0) return 0;
  const userOf = (e: CloudEvent) => (e.data as TaskEventData).user_id;
  const r = await tx.query<{ fresh: string[] | null; seqs: { user_id: string; last_seq: number }[] | null }>(
    `WITH input AS (
       SELECT * FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(event_id, user_id, ord)
     ), fresh AS (
       INSERT INTO processed_events (consumer, event_id) SELECT $1, event_id FROM input ORDER BY ord
       ON CONFLICT DO NOTHING RETURNING event_id
     ), counts AS (
       SELECT user_id, count(*) AS n
         FROM (SELECT DISTINCT i.event_id, i.user_id FROM input i JOIN fresh f ON f.event_id = i.event_id) d
        GROUP BY user_id
     ), seqs AS (
       INSERT INTO broadcaster_sequences (user_id, last_seq) SELECT user_id, n FROM counts ORDER BY user_id
       ON CONFLICT (user_id) DO UPDATE SET last_seq = broadcaster_sequences.last_seq + excluded.last_seq
       RETURNING user_id, last_seq
     )
     SELECT (SELECT array_agg(event_id) FROM fresh) AS fresh,
            (SELECT json_agg(seqs) FROM seqs) AS seqs`,
    [GROUPS.broadcaster, relevant.map((i) => i.event.id), relevant.map((i) => userOf(i.event))],
  );
  const fresh = new Set(r.rows[0]?.fresh ?? []);
  const todo = relevant.filter((i) => fresh.delete(i.event.id));
  if (todo.length === 0) return 0;
  const counts = new Map<string, number>();
  for (const { event } of todo) counts.set(userOf(event), (counts.get(userOf(event)) ?? 0) + 1);
  const next = new Map(
    (r.rows[0]?.seqs ?? []).map((x) => [x.user_id, Number(x.last_seq) - counts.get(x.user_id)! + 1]),
  );
  const changes = todo.map(({ event, traceparent }) => {
    const sequence = next.get(userOf(event))!;
    next.set(userOf(event), sequence + 1);
    return changeOf(event, sequence, now, traceparent);
  });
  await appendEvents(tx, changes);
  return changes.length;
}

export const broadcasterTarget = consumerTarget({
  name: 'broadcaster',
  group: GROUPS.broadcaster,
  topics: [TOPICS.taskEvents],
  // On the real-time path: batches form within 20 ms (a small part of the latency budget).
  batchIntervalMs: 20,
  realTime: true,
  async setup(rt) {
    const run = async (items: readonly { event: CloudEvent; traceparent: string }[]) => {
      await rt.db.transaction((tx) => broadcastRun(tx, items, rt.clock.now()));
    };
    return {
      // The handler runs in the message's CONSUMER span: the task.changed continues from it.
      handle: (message) =>
        run([{ event: message.event, traceparent: childTraceparent(message.event.traceparent) }]),
      handleBatch: (items) =>
        run(
          items.map(({ message, traceparent }) => ({
            event: message.event,
            traceparent: traceparent ?? childTraceparent(message.event.traceparent),
          })),
        ),
    };
  },
});
