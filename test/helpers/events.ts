/** Valid events for transport tests. */
import { makeEvent, type CloudEvent } from '../../src/contracts/cloudevent.ts';
import type { TaskEventData } from '../../src/contracts/events.ts';
import { newTask, type TaskFields } from '../../src/domain/task.ts';
import { uuidv7 } from 'uuidv7';

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

/** A valid `task.created` event for `user` whose task title is `title` (tests put a sequence number in it). */
export function taskCreated(user: string, title: string): CloudEvent<TaskEventData> {
  const task = newTask(uuidv7(), user, plainFields(title), new Date('2026-03-01T12:00:00Z'));
  return makeEvent<TaskEventData>({
    type: 'task.created',
    source: '/taskflow/test',
    subject: task.id,
    key: user,
    data: { user_id: user, task, previous: null, changes: [] },
  });
}

export const titleOf = (e: CloudEvent) => (e.data as TaskEventData).task.title;
