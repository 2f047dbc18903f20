/**
 * A task as the routes answer it (the task API's and the recurrence routes'), for their OpenAPI documents: the
 * event contract's task schema, with the reminder plan a create or a change answers.
 */
import { taskSchema } from '../contracts/schemas.ts';
import { withHeaders } from './openapi.ts';
import { etagHeaderDoc } from './task-version.ts';

const { $id: _id, ...taskShape } = taskSchema;
export const taskDoc = { ...taskShape, additionalProperties: false } as const;

const plannedReminderDoc = (why: readonly string[], description: string) =>
  ({
    type: 'object',
    additionalProperties: false,
    required: ['remind_at', 'specs', 'why'],
    properties: {
      remind_at: { type: 'string', format: 'date-time' },
      specs: { type: 'array', items: { type: 'string' }, description: 'the offsets or instants behind it' },
      why: { type: 'string', enum: why, description },
    },
  }) as const;

/** The reminders the new task gets (domain/reminders.ts reminderPlanOf). */
export const reminderPlanDoc = {
  type: 'object',
  additionalProperties: false,
  required: ['scheduled', 'skipped'],
  description:
    'The reminders the reminders target schedules for the task from its event, by the same rules: the task’s own specs, or the user’s default reminders when `reminders` is null (those need a due date)',
  properties: {
    scheduled: {
      type: 'array',
      items: plannedReminderDoc(
        ['asked', 'at_due_instead'],
        'asked: from a spec; at_due_instead: every asked-for reminder was already past, so one at the due time',
      ),
    },
    skipped: {
      type: 'array',
      items: plannedReminderDoc(
        ['past'],
        'past: more than REMINDER_GRACE_MS in the past at the create or change (within it a reminder fires at once)',
      ),
    },
  },
} as const;

/** A create's answer: the task and its reminder plan. */
export const taskCreatedDoc = {
  ...taskDoc,
  required: [...taskDoc.required, 'reminder_plan'],
  properties: { ...taskDoc.properties, reminder_plan: reminderPlanDoc },
} as const;

/** A change's answer: the task, and its reminder plan when the change moved its reminders. */
export const taskChangedDoc = {
  ...taskDoc,
  properties: {
    ...taskDoc.properties,
    reminder_plan: {
      ...reminderPlanDoc,
      description: `Present when the change moved the reminders (a new due_date or reminders, completing, reopening). ${reminderPlanDoc.description}; a reminder already stored at the same instant keeps its state (dismissed by the user, snoozed, fired): GET /api/tasks/{id}/reminders has them`,
    },
  },
} as const;

/** A change's answer with its headers (a task API change, a skip): the task now, its version as the ETag. */
export const changedAnswer = withHeaders(
  { ...taskChangedDoc, description: 'The task now' },
  { ETag: etagHeaderDoc },
);
