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
import type { Queryable, Tx } from '../../store/db.ts';
import { firstTimeMany } from '../../store/idempotency.ts';
import { appendEvents } from '../../store/outbox.ts';
import { consumerTarget } from '../consumer-target.ts';

export const SOURCE = '/taskflow/broadcaster';

/**
 * Takes the next `count` sequence numbers of each user (1, 2, 3...) under the counter rows' locks, in user
 * order (no deadlock between instances); returns each user's first new number.
 */
export async function nextSequences(
  tx: Queryable,
  counts: ReadonlyMap<string, number>,
): Promise<Map<string, number>> {
  const users = [...counts.keys()].sort();
  const r = await tx.query<{ user_id: string; last_seq: string }>(
    `INSERT INTO broadcaster_sequences (user_id, last_seq)
     SELECT u, n FROM unnest($1::text[], $2::bigint[]) AS t(u, n) ORDER BY u
     ON CONFLICT (user_id) DO UPDATE SET last_seq = broadcaster_sequences.last_seq + excluded.last_seq
     RETURNING user_id, last_seq::text`,
    [users, users.map((u) => counts.get(u)!)],
  );
  return new Map(r.rows.map((row) => [row.user_id, Number(row.last_seq) - counts.get(row.user_id)! + 1]));
}

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
 * Broadcasts a run of task events in one transaction: the new ones (by event id) of a broadcastable type
 * get consecutive per-user sequence numbers in the run's order. Resolves how many events it wrote.
 */
export async function broadcastRun(
  tx: Tx,
  items: readonly { event: CloudEvent; traceparent: string }[],
  now: Date,
): Promise<number> {
  const relevant = items.filter((i) => CHANGE_TYPES[i.event.type]); // other task events: nothing to do
  if (relevant.length === 0) return 0;
  const fresh = await firstTimeMany(
    tx,
    GROUPS.broadcaster,
    relevant.map((i) => i.event.id),
  );
  // The first occurrence of an id in the run wins (a redelivered event can appear twice in one run).
  const todo = relevant.filter((i) => fresh.delete(i.event.id));
  if (todo.length === 0) return 0;
  const counts = new Map<string, number>();
  for (const { event } of todo) {
    const user = (event.data as TaskEventData).user_id;
    counts.set(user, (counts.get(user) ?? 0) + 1);
  }
  const next = await nextSequences(tx, counts);
  const changes = todo.map(({ event, traceparent }) => {
    const user = (event.data as TaskEventData).user_id;
    const sequence = next.get(user)!;
    next.set(user, sequence + 1);
    return changeOf(event, sequence, now, traceparent);
  });
  await appendEvents(tx, changes);
  return changes.length;
}

export const broadcasterTarget = consumerTarget({
  name: 'broadcaster',
  description: 'task-events -> task.changed on task-updates, with a gap-free per-user sequence',
  group: GROUPS.broadcaster,
  topics: [TOPICS.taskEvents],
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
