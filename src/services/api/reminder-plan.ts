/**
 * The reminder plan of a create's answer (REST and MCP): which reminders the reminders target will schedule
 * for the new task and which it will not, and why, by the rules it applies to the task's event
 * (newTaskReminderPlan). The user's default reminders are read only when the task uses them.
 */
import { newTaskReminderPlan, type ReminderPlan } from '../../domain/reminders.ts';
import type { Task } from '../../domain/task.ts';
import type { UserSettingsStore } from '../../store/user-settings.ts';

export type ReminderPlanner = (userId: string, task: Task) => Promise<ReminderPlan>;

export function reminderPlanner(settings: UserSettingsStore, graceMs: number): ReminderPlanner {
  return async (userId, task) =>
    newTaskReminderPlan(
      task,
      task.reminders === null && task.due_date !== null ? await settings.defaultReminders(userId) : [],
      { asOf: new Date(task.created_at), graceMs },
    );
}
