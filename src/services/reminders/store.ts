/**
 * The reminders service's tables (migration 002_reminders.sql): the task versions it applied and the
 * reminder schedule. Every change that the outside world should know about returns the events to append to
 * the outbox in the caller's transaction.
 */
import { makeEvent, type CloudEvent } from '../../contracts/cloudevent.ts';
import type { ReminderChannel, ReminderEventData, TaskEventData } from '../../contracts/events.ts';
import {
  dismissReasonFor,
  planReminders,
  reconcileReminders,
  type DismissReason,
  type PlannedReminder,
  type ReminderStatus,
} from '../../domain/reminders.ts';
import type { Queryable } from '../../store/db.ts';

export const SOURCE = '/taskflow/reminders';

export type ReminderEventType =
  'reminder.scheduled' | 'reminder.triggered' | 'reminder.dismissed' | 'reminder.missed';

export interface ReminderRow {
  id: string;
  task_id: string;
  user_id: string;
  title: string;
  specs: string[];
  due_at: Date | null;
  planned_at: Date;
  remind_at: Date;
  status: ReminderStatus;
  dismiss_reason: DismissReason | null;
  snoozed: boolean;
  fire_count: number;
  triggered_at: Date | null;
}

export const ROW_COLUMNS = `id::text AS id, task_id::text AS task_id, user_id, title, specs, due_at, planned_at,
  remind_at, status, dismiss_reason, snoozed, fire_count, triggered_at`;

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

/** A reminder as the HTTP API shows it. */
export interface ReminderView {
  id: string;
  task_id: string;
  title: string;
  specs: string[];
  due_at: string | null;
  planned_at: string;
  remind_at: string;
  status: ReminderStatus;
  dismiss_reason: DismissReason | null;
  snoozed: boolean;
  fire_count: number;
  triggered_at: string | null;
}

export const toView = (r: ReminderRow): ReminderView => ({
  id: r.id,
  task_id: r.task_id,
  title: r.title,
  specs: r.specs,
  due_at: iso(r.due_at),
  planned_at: iso(r.planned_at)!,
  remind_at: iso(r.remind_at)!,
  status: r.status,
  dismiss_reason: r.dismiss_reason,
  snoozed: r.snoozed,
  fire_count: r.fire_count,
  triggered_at: iso(r.triggered_at),
});

export interface EventContext {
  now: Date;
  channels: readonly ReminderChannel[];
  traceparent?: string | undefined;
}

export function reminderEvent(
  type: ReminderEventType,
  r: Pick<ReminderRow, 'id' | 'task_id' | 'user_id' | 'title'> & {
    due_at: Date | string | null;
    remind_at: Date | string;
  },
  ctx: EventContext,
  extra: { reason?: string; triggered_at?: Date } = {},
): CloudEvent<ReminderEventData> {
  const data: ReminderEventData = {
    reminder_id: r.id,
    task_id: r.task_id,
    user_id: r.user_id,
    title: r.title,
    due_at: iso(r.due_at),
    remind_at: iso(r.remind_at)!,
    channels: [...ctx.channels],
  };
  if (extra.reason) data.reason = extra.reason;
  if (extra.triggered_at) data.triggered_at = extra.triggered_at.toISOString();
  return makeEvent<ReminderEventData>({
    type,
    source: SOURCE,
    subject: r.task_id,
    key: r.user_id,
    time: ctx.now,
    ...(ctx.traceparent ? { traceparent: ctx.traceparent } : {}),
    data,
  });
}

/**
 * Applies one task event to the schedule (inside the consumer's transaction) and returns the reminder
 * events to write. Events older than the task version already applied are ignored (out-of-order safety),
 * and nothing happens after the task was deleted.
 */
export async function applyTaskEvent(
  tx: Queryable,
  type: string,
  data: TaskEventData,
  opts: {
    eventTime: Date;
    graceMs: number;
    defaultReminders: (userId: string) => Promise<readonly string[]>;
    ctx: EventContext;
  },
): Promise<CloudEvent<ReminderEventData>[]> {
  const task = data.task;
  const deleted = type === 'task.deleted';
  const known = (
    await tx.query<{ version: number; deleted: boolean; user_id: string }>(
      'SELECT version, deleted, user_id FROM reminder_tasks WHERE task_id = $1 FOR UPDATE',
      [task.id],
    )
  ).rows[0];
  if (known) {
    if (known.deleted || known.user_id !== task.user_id) return [];
    if (task.version < known.version || (task.version === known.version && !deleted)) return [];
  }
  await tx.query(
    `INSERT INTO reminder_tasks (task_id, user_id, version, deleted, updated_at) VALUES ($1, $2, $3, $4, now())
     ON CONFLICT (task_id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted, updated_at = now()`,
    [task.id, task.user_id, task.version, deleted],
  );
  const existing = (
    await tx.query<ReminderRow>(
      `SELECT ${ROW_COLUMNS} FROM reminder_schedule WHERE task_id = $1 ORDER BY id FOR UPDATE`,
      [task.id],
    )
  ).rows;
  const defaults = !deleted && task.reminders === null ? await opts.defaultReminders(task.user_id) : [];
  const desired = deleted ? [] : planReminders(task, defaults);
  const asOf = new Date(Math.min(opts.eventTime.getTime(), opts.ctx.now.getTime()));
  const plan = reconcileReminders(existing, desired, { asOf, graceMs: opts.graceMs });
  const reason: DismissReason = dismissReasonFor(type, task);
  const events: CloudEvent<ReminderEventData>[] = [];
  const base = { task_id: task.id, user_id: task.user_id, title: task.title, due_at: task.due_date };

  for (const r of plan.dismiss) {
    await tx.query(
      `UPDATE reminder_schedule SET status = 'dismissed', dismiss_reason = $2, updated_at = now() WHERE id = $1`,
      [r.id, reason],
    );
    const row = existing.find((e) => e.id === r.id)!;
    events.push(reminderEvent('reminder.dismissed', { ...row, title: task.title }, opts.ctx, { reason }));
  }
  const schedule = async (p: PlannedReminder, reactivate: boolean) => {
    if (reactivate)
      await tx.query(
        `UPDATE reminder_schedule SET status = 'scheduled', dismiss_reason = NULL, snoozed = false, remind_at = $2,
           planned_at = $2, title = $3, due_at = $4, specs = $5, updated_at = now() WHERE id = $1`,
        [p.id, p.remind_at, task.title, task.due_date, JSON.stringify(p.specs)],
      );
    else
      await tx.query(
        `INSERT INTO reminder_schedule (id, task_id, user_id, title, specs, due_at, planned_at, remind_at, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 'scheduled')`,
        [p.id, task.id, task.user_id, task.title, JSON.stringify(p.specs), task.due_date, p.remind_at],
      );
    events.push(
      reminderEvent(
        'reminder.scheduled',
        { ...base, id: p.id, remind_at: p.remind_at },
        opts.ctx,
        reactivate ? { reason: 'rescheduled' } : {},
      ),
    );
  };
  for (const p of plan.reactivate) await schedule(p, true);
  for (const p of plan.schedule) await schedule(p, false);
  // Reminders that stay scheduled (same instant) carry the task's current title and due date.
  await tx.query(
    `UPDATE reminder_schedule SET title = $2, due_at = $3, updated_at = now()
      WHERE task_id = $1 AND status = 'scheduled' AND (title <> $2 OR due_at IS DISTINCT FROM $3::timestamptz)`,
    [task.id, task.title, task.due_date],
  );
  return events;
}

/** Whether `userId` has the (not deleted) task `taskId` as far as this service knows. */
export async function ownsTask(q: Queryable, userId: string, taskId: string): Promise<boolean> {
  const r = await q.query(
    'SELECT 1 FROM reminder_tasks WHERE task_id = $1 AND user_id = $2 AND NOT deleted',
    [taskId, userId],
  );
  return r.rows.length > 0;
}

export async function listForTask(q: Queryable, userId: string, taskId: string): Promise<ReminderRow[]> {
  const r = await q.query<ReminderRow>(
    `SELECT ${ROW_COLUMNS} FROM reminder_schedule WHERE task_id = $1 AND user_id = $2 ORDER BY planned_at, id`,
    [taskId, userId],
  );
  return r.rows;
}

export async function lockReminder(
  q: Queryable,
  userId: string,
  taskId: string,
  reminderId: string,
): Promise<ReminderRow | undefined> {
  const r = await q.query<ReminderRow>(
    `SELECT ${ROW_COLUMNS} FROM reminder_schedule WHERE id = $1 AND task_id = $2 AND user_id = $3 FOR UPDATE`,
    [reminderId, taskId, userId],
  );
  return r.rows[0];
}

export async function pendingCount(q: Queryable): Promise<number> {
  const r = await q.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM reminder_schedule WHERE status = 'scheduled'`,
  );
  return Number(r.rows[0]?.n ?? 0);
}
