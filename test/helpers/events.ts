/** Valid events for transport tests. */
import { exampleOf } from '../../src/contracts/asyncapi.ts';
import { makeEvent, type CloudEvent } from '../../src/contracts/cloudevent.ts';
import type { TaskEventData } from '../../src/contracts/events.ts';
import { newTask, type Task, type TaskFields } from '../../src/domain/task.ts';
import type { TaskEventInput } from '../../src/services/reminders/store.ts';
import { uuidv7 } from '../../src/ids.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';

/** The fields of a plain pending task: no due date, tags, reminders or recurrence. */
export function plainFields(title: string, overrides: Partial<TaskFields> = {}): TaskFields {
  return {
    title,
    description: '',
    status: 'pending',
    priority: 'none',
    tags: [],
    due_date: null,
    reminders: null,
    recurrence: null,
    ...overrides,
  };
}

/**
 * A valid `task.created` event for `user` whose task title is `title` (tests put a sequence number in it);
 * `fields` overrides the plain task's other fields (a due date, reminders).
 */
export function taskCreated(
  user: string,
  title: string,
  fields: Partial<TaskFields> = {},
): CloudEvent<TaskEventData> {
  const task = newTask(uuidv7(), user, plainFields(title, fields), new Date('2026-03-01T12:00:00Z'));
  return makeEvent<TaskEventData>({
    type: 'task.created',
    source: '/taskflow/test',
    subject: task.id,
    key: user,
    data: { user_id: user, task, previous: null, changes: [] },
  });
}

export const titleOf = (e: CloudEvent) => (e.data as TaskEventData).task.title;

/** One key for each partition of a topic of `partitions` partitions (`<prefix>-<n>`), in partition order. */
export const keyPerPartition = (partitions: number, prefix: string) =>
  Array.from({ length: partitions }, (_, part) => {
    for (let n = 0; ; n++) if (partitionFor(`${prefix}-${n}`, partitions) === part) return `${prefix}-${n}`;
  });

/**
 * A copy of `event` under a new event id that every consumer of its topic handles as a new event, for use as a
 * barrier: published after events under test with the same key (so in the same partition, after them), its
 * effect proves the earlier ones were handled. A task event gets a new task (and, when recurring, a new
 * series) so that it changes nothing of the original task; a reminder event gets a new reminder id.
 */
export function sentinelOf<T>(event: CloudEvent<T>): CloudEvent<T> {
  const copy = structuredClone(event) as CloudEvent<any>;
  copy.id = uuidv7();
  const data = copy.data;
  if (data && typeof data === 'object' && 'task' in data && data.task) {
    const id = uuidv7();
    const wasSeries = data.task.series_id;
    data.task = { ...data.task, id, title: `sentinel ${id}`, ...(wasSeries ? { series_id: id } : {}) };
    if (data.previous) data.previous = { ...data.previous, id, ...(wasSeries ? { series_id: id } : {}) };
    copy.subject = id;
  } else if (data && typeof data === 'object' && 'reminder_id' in data) {
    data.reminder_id = uuidv7();
  }
  return copy as CloudEvent<T>;
}

/** A value with every property the schema names, the non-null branch of each choice, one item per array. */
export function fullExampleOf(schema: Record<string, any>): unknown {
  if (Array.isArray(schema.anyOf))
    return fullExampleOf(schema.anyOf.find((b: { type?: string }) => b.type !== 'null'));
  if (schema.type === 'array') return [fullExampleOf(schema.items)];
  if (schema.type === 'object')
    return Object.fromEntries(
      Object.entries(schema.properties as Record<string, any>).map(([k, v]) => [k, fullExampleOf(v)]),
    );
  return exampleOf(schema);
}

/** The reminders store's input of a task event of `type` for `task` as it is now, at `eventTime`. */
export function taskEventInput(
  type: string,
  task: Task,
  eventTime: Date,
  changes: string[] = [],
): TaskEventInput {
  const event = makeEvent<TaskEventData>({
    type,
    source: '/taskflow/test',
    subject: task.id,
    key: task.user_id,
    data: { user_id: task.user_id, task, previous: null, changes },
  });
  return { id: event.id, type, data: event.data, eventTime };
}
