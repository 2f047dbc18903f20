/**
 * The reminder plan of a create's or a change's answer (REST and MCP): which reminders the reminders target
 * will schedule for the task and which it will not, and why, by the rules it applies to the task's event
 * (reminderPlanOf). The user's default reminders are read only when the task uses them.
 */
import { changeMovesReminders, reminderPlanOf, type ReminderPlan } from '../domain/reminders.ts';
import type { Task, Transition } from '../domain/task.ts';
import type { UserSettingsStore } from './user-settings.ts';

/** The plan of `task` as just written (its `updated_at` is the time of the create or change). */
export type ReminderPlanner = (userId: string, task: Task) => Promise<ReminderPlan>;

export function reminderPlanner(settings: UserSettingsStore, graceMs: number): ReminderPlanner {
  return async (userId, task) =>
    reminderPlanOf(
      task,
      task.reminders === null && task.due_date !== null ? await settings.defaultReminders(userId) : [],
      { asOf: new Date(task.updated_at), graceMs },
    );
}

/** The plan of a change that moved the task's reminders (changeMovesReminders), else undefined. */
export async function planOfChange(
  plan: ReminderPlanner,
  userId: string,
  t: Transition,
): Promise<ReminderPlan | undefined> {
  return changeMovesReminders(t) ? plan(userId, t.task) : undefined;
}

/**
 * A change's answer: the task, with `reminder_plan` when the change moved its reminders (a new due date or
 * reminders, completing, reopening); a change of other fields leaves them as they are and says nothing.
 */
export async function withPlanOfChange(
  plan: ReminderPlanner,
  userId: string,
  t: Transition,
): Promise<Task & { reminder_plan?: ReminderPlan }> {
  const reminder_plan = await planOfChange(plan, userId, t);
  return reminder_plan ? { ...t.task, reminder_plan } : t.task;
}
