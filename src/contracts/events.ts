/** TypeScript shapes of the `data` of each event type; the JSON Schemas in schemas.ts are the contract. */
import type { Task } from '../domain/task.ts';
import type { CloudEvent } from './cloudevent.ts';

export interface TaskEventData {
  user_id: string;
  task: Task;
  previous: Task | null;
  changes: string[];
}
export type TaskEvent = CloudEvent<TaskEventData>;

export type ReminderChannel = 'email' | 'push' | 'in_app' | 'webhook';
export interface ReminderEventData {
  reminder_id: string;
  task_id: string;
  user_id: string;
  title: string;
  due_at: string | null;
  remind_at: string;
  channels: ReminderChannel[];
  reason?: string;
  triggered_at?: string;
}
export type ReminderEvent = CloudEvent<ReminderEventData>;

export interface TaskChangedData {
  task_id: string;
  user_id: string;
  change_type: 'created' | 'updated' | 'completed' | 'reopened' | 'deleted';
  task: Task;
  changes?: string[];
  sequence: number;
}
export type TaskChangedEvent = CloudEvent<TaskChangedData>;

/** An in-app notification as the inbox API shows it (GET /api/notifications). */
export interface InAppNotification {
  id: string;
  reminder_id: string;
  task_id: string;
  title: string;
  body: string;
  due_at: string | null;
  remind_at: string;
  created_at: string;
  read_at: string | null;
}
/**
 * On `task-updates` beside `task.changed`, for the user's connected clients: pushed live, without a sequence
 * (the inbox, GET /api/notifications, is the record; a client that reconnects reads it).
 */
export interface NotificationCreatedData {
  user_id: string;
  notification: InAppNotification;
}
