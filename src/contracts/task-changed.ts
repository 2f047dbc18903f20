/**
 * The `task.changed` a task event implies: what real-time clients need, on `task-updates`. It is written by
 * the same statement as its task event (docs/adr/0011-task-changed-with-its-write.md), so it commits with the
 * change or not at all, and reaches the gateway in one hop. Its `data.sequence` is assigned by the event sink
 * in that statement (`keySequenced`): gap-free per user, in commit order.
 */
import { makeEvent, type CloudEvent } from './cloudevent.ts';
import type { TaskChangedData, TaskEventData } from './events.ts';

const CHANGE_TYPES: Record<string, TaskChangedData['change_type']> = {
  'task.created': 'created',
  'task.updated': 'updated',
  'task.completed': 'completed',
  'task.reopened': 'reopened',
  'task.deleted': 'deleted',
};

/**
 * Placeholder of `data.sequence` until the sink numbers the event (a valid value, so the event can be
 * validated before the write; the sinks replace it in the statement that writes it).
 */
export const UNNUMBERED = 1;

/** The `task.changed` of a task event, or undefined for an event that is not a task change. */
export function taskChangedOf(event: CloudEvent): CloudEvent<TaskChangedData> | undefined {
  const changeType = CHANGE_TYPES[event.type];
  if (!changeType) return undefined;
  const data = event.data as TaskEventData;
  return makeEvent<TaskChangedData>({
    type: 'task.changed',
    source: event.source,
    subject: data.task.id,
    key: data.user_id,
    time: new Date(event.time),
    ...(event.traceparent ? { traceparent: event.traceparent } : {}),
    data: {
      task_id: data.task.id,
      user_id: data.user_id,
      change_type: changeType,
      task: data.task,
      changes: data.changes ?? [],
      sequence: UNNUMBERED,
    },
  });
}

/** Task events followed each by the `task.changed` it implies, in order. */
export function withTaskChanges(events: readonly CloudEvent[]): CloudEvent[] {
  const out: CloudEvent[] = [];
  for (const e of events) {
    out.push(e);
    const change = taskChangedOf(e);
    if (change) out.push(change);
  }
  return out;
}
