/**
 * The `broadcaster` target: turns every task event into a `task.changed` on `task-updates` (what the
 * real-time clients need) with a gap-free per-user `sequence`. The counter increment, the outbox append and
 * the processed-event record share one transaction, so a redelivered event neither re-sends nor burns a
 * sequence number, and the relay publishes a user's updates in sequence order (outbox order per key).
 */
import { makeEvent } from '../../contracts/cloudevent.ts';
import type { TaskChangedData, TaskEventData } from '../../contracts/events.ts';
import { GROUPS, TOPICS } from '../../contracts/topics.ts';
import { childTraceparent } from '../../observability/trace.ts';
import type { Queryable } from '../../store/db.ts';
import { firstTime } from '../../store/idempotency.ts';
import { appendEvents, notifyOutbox } from '../../store/outbox.ts';
import { consumerTarget } from '../consumer-target.ts';

export const SOURCE = '/taskflow/broadcaster';

/** The next sequence number of a user (1, 2, 3...), taken under the counter row's lock. */
export async function nextSequence(tx: Queryable, userId: string): Promise<number> {
  const r = await tx.query<{ last_seq: string }>(
    `INSERT INTO broadcaster_sequences (user_id, last_seq) VALUES ($1, 1)
     ON CONFLICT (user_id) DO UPDATE SET last_seq = broadcaster_sequences.last_seq + 1
     RETURNING last_seq::text`,
    [userId],
  );
  return Number(r.rows[0]!.last_seq);
}

const CHANGE_TYPES: Record<string, TaskChangedData['change_type']> = {
  'task.created': 'created',
  'task.updated': 'updated',
  'task.completed': 'completed',
  'task.reopened': 'reopened',
  'task.deleted': 'deleted',
};

export const broadcasterTarget = consumerTarget({
  name: 'broadcaster',
  description: 'task-events -> task.changed on task-updates, with a gap-free per-user sequence',
  group: GROUPS.broadcaster,
  topics: [TOPICS.taskEvents],
  async setup(rt) {
    return {
      async handle(message) {
        const event = message.event;
        const changeType = CHANGE_TYPES[event.type];
        if (!changeType) return; // a future task event type: nothing to broadcast
        const data = event.data as TaskEventData;
        const wrote = await rt.db.transaction(async (tx) => {
          if (!(await firstTime(tx, GROUPS.broadcaster, event.id))) return false;
          const sequence = await nextSequence(tx, data.user_id);
          await appendEvents(tx, [
            makeEvent<TaskChangedData>({
              type: 'task.changed',
              source: SOURCE,
              subject: data.task.id,
              key: data.user_id,
              time: rt.clock.now(),
              traceparent: childTraceparent(event.traceparent),
              data: {
                task_id: data.task.id,
                user_id: data.user_id,
                change_type: changeType,
                task: data.task,
                changes: data.changes ?? [],
                sequence,
              },
            }),
          ]);
          return true;
        });
        if (wrote) notifyOutbox(rt.db);
      },
    };
  },
});
