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
  changeMovesReminders,
  noReconciliation,
  reconcileReminders,
  type DismissReason,
  type ReminderStatus,
  snoozedAhead,
} from '../../domain/reminders.ts';
import { sameInstant } from '../../domain/time.ts';
import type { Queryable, Tx } from '../../store/db.ts';
import { deleteOldestFirst } from '../../store/oldest-first.ts';
import { eventWrite, runWithEvents } from '../../store/outbox.ts';
import { DEFAULT_REMINDERS } from '../../store/user-settings.ts';
import { remindersManifest } from './manifest.ts';

export const SOURCE = remindersManifest.sources[0];

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
    triggered_at?: Date | string | null;
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
  // A dismissal says when the reminder last fired: the notifications target drops what that firing still
  // holds by it, not by the clocks of two processes (a firing just before the dismissal was kept).
  const fired = extra.triggered_at ?? (type === 'reminder.dismissed' ? r.triggered_at : null);
  if (fired) data.triggered_at = iso(fired)!;
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
 * Whether a task event can move its reminders: any but an update that changes neither (changeMovesReminders,
 * the rule the API's answer follows); an event without its list of changes, from an older producer, can.
 */
const movesReminders = (input: TaskEventInput) =>
  input.type !== 'task.updated' ||
  !Array.isArray(input.data.changes) ||
  changeMovesReminders({ eventType: 'task.updated', changes: input.data.changes });

/** A task event as the schedule needs it. */
export interface TaskEventInput {
  /** The event id (the run's dedupe). */
  id: string;
  type: string;
  data: TaskEventData;
  /** When the event happened (reminders already past the grace window then are not scheduled). */
  eventTime: Date;
  traceparent?: string | undefined;
}

/** A reminder row as `json_agg` returns it (instants as text). */
type ReminderJson = Omit<ReminderRow, 'due_at' | 'planned_at' | 'remind_at' | 'triggered_at'> &
  Record<'due_at' | 'triggered_at', string | null> &
  Record<'planned_at' | 'remind_at', string>;

const fromJson = (r: ReminderJson): ReminderRow => ({
  ...r,
  due_at: r.due_at === null ? null : new Date(r.due_at),
  planned_at: new Date(r.planned_at),
  remind_at: new Date(r.remind_at),
  triggered_at: r.triggered_at === null ? null : new Date(r.triggered_at),
});

/**
 * Applies a run of task events to the schedule, in order, inside the consumer's transaction, and appends the
 * reminder events they cause; resolves those events. Two statements whatever the run's length: the first
 * records the run's new event ids in the `dedupe` consumer's ledger (the first occurrence of an id wins) and
 * reads (and locks) the tasks' applied versions, their reminders and their users' default offsets; the plan
 * is computed in memory event by event (so two events of one task in a run see each other); the second
 * writes the changes and the events. Events older than the task version already applied are ignored
 * (out-of-order safety), and nothing happens after the task was deleted.
 */
export async function applyTaskEvents(
  tx: Tx,
  inputs: readonly TaskEventInput[],
  opts: { dedupe: string; graceMs: number; now: Date; channels: readonly ReminderChannel[] },
): Promise<CloudEvent<ReminderEventData>[]> {
  if (inputs.length === 0) return [];
  const taskIds = [...new Set(inputs.map((i) => i.data.task.id))].sort();
  const users = [...new Set(inputs.map((i) => i.data.task.user_id))];
  const read = (
    await tx.query<{
      fresh: string[] | null;
      known: KnownTask[] | null;
      rows: ReminderJson[] | null;
      settings: { user_id: string; default_reminders: string[] }[] | null;
    }>(
      `WITH fresh AS (
         INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::text[])
         ON CONFLICT DO NOTHING RETURNING event_id
       ), known AS (
         SELECT task_id::text AS task_id, version, deleted, user_id FROM reminder_tasks
          WHERE task_id = ANY($3::uuid[]) ORDER BY task_id FOR UPDATE
       ), rows AS (
         SELECT ${ROW_COLUMNS} FROM reminder_schedule WHERE task_id = ANY($3::uuid[]) ORDER BY task_id, id FOR UPDATE
       )
       SELECT (SELECT array_agg(event_id) FROM fresh) AS fresh,
              (SELECT json_agg(known) FROM known) AS known,
              (SELECT json_agg(rows ORDER BY task_id, id) FROM rows) AS rows,
              (SELECT json_agg(json_build_object('user_id', user_id, 'default_reminders', default_reminders))
                 FROM user_settings WHERE user_id = ANY($4::text[])) AS settings`,
      [opts.dedupe, inputs.map((i) => i.id), taskIds, users],
    )
  ).rows[0]!;
  const fresh = new Set(read.fresh ?? []);
  const todo = inputs.filter((i) => fresh.delete(i.id)); // the first occurrence of an id wins
  if (todo.length === 0) return [];
  const known = new Map((read.known ?? []).map((k) => [k.task_id, k]));
  const rowsOf = new Map<string, ReminderRow[]>();
  for (const r of read.rows ?? []) rowsOf.set(r.task_id, [...(rowsOf.get(r.task_id) ?? []), fromJson(r)]);
  const defaults = new Map((read.settings ?? []).map((x) => [x.user_id, x.default_reminders]));

  const changedTasks = new Map<string, KnownTask>();
  const inserted = new Map<string, ReminderRow>();
  const updated = new Map<string, ReminderRow>();
  const touch = (r: ReminderRow) => {
    if (!inserted.has(r.id)) updated.set(r.id, r);
  };
  const events: CloudEvent<ReminderEventData>[] = [];
  for (const input of todo) {
    const task = input.data.task;
    const deleted = input.type === 'task.deleted';
    const k = known.get(task.id);
    if (k) {
      if (k.deleted || k.user_id !== task.user_id) continue;
      if (task.version < k.version || (task.version === k.version && !deleted)) continue;
    }
    const state: KnownTask = { task_id: task.id, user_id: task.user_id, version: task.version, deleted };
    known.set(task.id, state);
    changedTasks.set(task.id, state);
    const existing = rowsOf.get(task.id) ?? [];
    rowsOf.set(task.id, existing);
    // A change of other fields (a title, a priority) leaves the reminders as they are: replanned, a task
    // following the user's default reminders took defaults changed since, at an edit that answered no plan.
    // Only when this event follows the version the schedule last planned from: after a gap (an earlier event
    // arriving late, a replay), the newest version is planned from in full, or the gap's due date was lost.
    const follows = k !== undefined && k.version === task.version - 1;
    // The change's time, as far as this consumer has seen it: what is live is decided at it.
    const asOf = new Date(Math.min(input.eventTime.getTime(), opts.now.getTime()));
    let plan = noReconciliation();
    if (movesReminders(input) || !follows) {
      const desired = deleted
        ? []
        : planReminders(
            task,
            task.reminders === null ? (defaults.get(task.user_id) ?? DEFAULT_REMINDERS) : [],
          );
      plan = reconcileReminders(existing, desired, { asOf, graceMs: opts.graceMs, task });
    }
    const reason: DismissReason = dismissReasonFor(input.type, task);
    const ctx: EventContext = { now: opts.now, channels: opts.channels, traceparent: input.traceparent };
    const due = task.due_date === null ? null : new Date(task.due_date);

    for (const p of plan.dismiss) {
      const row = existing.find((e) => e.id === p.id)!;
      row.status = 'dismissed';
      row.dismiss_reason = reason;
      touch(row);
      events.push(reminderEvent('reminder.dismissed', { ...row, title: task.title }, ctx, { reason }));
    }
    // Fired and no longer wanted: it stays fired (its history), with the reason; the dismissal tells the
    // notifications target to drop what it still holds of it (quiet hours, retries, a dead delivery).
    for (const p of plan.retire) {
      const row = existing.find((e) => e.id === p.id)!;
      row.dismiss_reason = reason;
      touch(row);
      events.push(reminderEvent('reminder.dismissed', { ...row, title: task.title }, ctx, { reason }));
    }
    // Wanted again (reopened, its due date moved back): it applies again and can be snoozed. What of it was
    // dropped when it was retired stays dropped.
    for (const p of plan.unretire) {
      const row = existing.find((e) => e.id === p.id)!;
      row.dismiss_reason = null;
      touch(row);
    }
    const base = { task_id: task.id, user_id: task.user_id, title: task.title, due_at: task.due_date };
    for (const p of plan.reactivate) {
      const row = existing.find((e) => e.id === p.id)!;
      // Its snooze, when still ahead, comes back with it: completing and reopening moved no reminder.
      const snoozed = snoozedAhead(row, asOf, opts.graceMs);
      const remindAt = snoozed ?? p.remind_at;
      Object.assign(row, {
        status: 'scheduled',
        dismiss_reason: null,
        snoozed: snoozed !== undefined,
        remind_at: new Date(remindAt),
        planned_at: new Date(p.remind_at),
        title: task.title,
        due_at: due,
        specs: p.specs,
      } satisfies Partial<ReminderRow>);
      touch(row);
      events.push(
        reminderEvent('reminder.scheduled', { ...base, id: p.id, remind_at: remindAt }, ctx, {
          reason: 'rescheduled',
        }),
      );
    }
    for (const p of plan.schedule) {
      const row: ReminderRow = {
        id: p.id,
        task_id: task.id,
        user_id: task.user_id,
        title: task.title,
        specs: p.specs,
        due_at: due,
        planned_at: new Date(p.remind_at),
        remind_at: new Date(p.remind_at),
        status: 'scheduled',
        dismiss_reason: null,
        snoozed: false,
        fire_count: 0,
        triggered_at: null,
      };
      existing.push(row);
      inserted.set(row.id, row);
      events.push(reminderEvent('reminder.scheduled', { ...base, id: p.id, remind_at: p.remind_at }, ctx));
    }
    // Reminders that stay the task's (scheduled, or fired and snoozable) carry its current title and due date: a
    // fired one snoozed later fired again with the due date and title of when it first fired.
    for (const row of existing)
      if (
        row.status !== 'dismissed' &&
        row.dismiss_reason === null &&
        (row.title !== task.title || !sameInstant(row.due_at, due))
      ) {
        row.title = task.title;
        row.due_at = due;
        touch(row);
      }
    // A deleted task's title is not kept: its reminders' events above carry it, and nothing reads the rows for it
    // again (the marker ignores the task's later events; the API answers 404). They stayed, the title with them,
    // for good; the rows themselves go with the marker (pruneDeletedTasks).
    if (deleted)
      for (const row of existing)
        if (row.title !== '') {
          row.title = '';
          touch(row);
        }
  }
  await writeRun(tx, [...changedTasks.values()], [...inserted.values()], [...updated.values()], events);
  return events;
}

interface KnownTask {
  task_id: string;
  user_id: string;
  version: number;
  deleted: boolean;
}

const isoOrNull = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

/** Writes the run's changes, the tasks' applied versions, new and changed reminders, and its events, in one statement. */
async function writeRun(
  tx: Tx,
  tasks: readonly KnownTask[],
  inserted: readonly ReminderRow[],
  updated: readonly ReminderRow[],
  events: readonly CloudEvent[],
): Promise<void> {
  if (tasks.length === 0 && events.length === 0) return;
  const params: unknown[] = [
    tasks.map((t) => t.task_id),
    tasks.map((t) => t.user_id),
    tasks.map((t) => t.version),
    tasks.map((t) => t.deleted),
    inserted.map((r) => r.id),
    inserted.map((r) => r.task_id),
    inserted.map((r) => r.user_id),
    inserted.map((r) => r.title),
    inserted.map((r) => JSON.stringify(r.specs)),
    inserted.map((r) => isoOrNull(r.due_at)),
    inserted.map((r) => isoOrNull(r.planned_at)),
    inserted.map((r) => isoOrNull(r.remind_at)),
    updated.map((r) => r.id),
    updated.map((r) => r.status),
    updated.map((r) => r.dismiss_reason),
    updated.map((r) => r.snoozed),
    updated.map((r) => isoOrNull(r.remind_at)),
    updated.map((r) => isoOrNull(r.planned_at)),
    updated.map((r) => r.title),
    updated.map((r) => isoOrNull(r.due_at)),
    updated.map((r) => JSON.stringify(r.specs)),
    // A row inserted by this run is written as the run left it: a later event of the run may have dismissed it
    // (touch leaves inserted rows to this insert).
    inserted.map((r) => r.status),
    inserted.map((r) => r.dismiss_reason),
    inserted.map((r) => r.snoozed),
  ];
  const schedule = `applied AS (
       INSERT INTO reminder_tasks (task_id, user_id, version, deleted, updated_at)
       SELECT t.task_id, t.user_id, t.version, t.deleted, now()
         FROM unnest($1::uuid[], $2::text[], $3::int[], $4::boolean[]) AS t(task_id, user_id, version, deleted)
       ON CONFLICT (task_id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted, updated_at = now()
     ), added AS (
       INSERT INTO reminder_schedule (id, task_id, user_id, title, specs, due_at, planned_at, remind_at, status,
                                      dismiss_reason, snoozed)
       SELECT r.id, r.task_id, r.user_id, r.title, r.specs::jsonb, r.due_at, r.planned_at, r.remind_at, r.status,
              r.dismiss_reason, r.snoozed
         FROM unnest($5::uuid[], $6::uuid[], $7::text[], $8::text[], $9::text[], $10::timestamptz[],
                     $11::timestamptz[], $12::timestamptz[], $22::text[], $23::text[], $24::boolean[])
              AS r(id, task_id, user_id, title, specs, due_at, planned_at, remind_at, status, dismiss_reason, snoozed)
     ), changed AS (
       UPDATE reminder_schedule s SET status = u.status, dismiss_reason = u.dismiss_reason, snoozed = u.snoozed,
              remind_at = u.remind_at, planned_at = u.planned_at, title = u.title, due_at = u.due_at,
              specs = u.specs::jsonb, updated_at = now()
         FROM unnest($13::uuid[], $14::text[], $15::text[], $16::boolean[], $17::timestamptz[], $18::timestamptz[],
                     $19::text[], $20::timestamptz[], $21::text[])
              AS u(id, status, dismiss_reason, snoozed, remind_at, planned_at, title, due_at, specs)
        WHERE s.id = u.id
     )`;
  if (events.length === 0) {
    await tx.query(`WITH ${schedule} SELECT 1`, params);
    return;
  }
  const w = await eventWrite(tx, events, params.length + 1);
  await runWithEvents(tx, w, `WITH ${schedule}, ${w.ctes} ${w.insert}`, [...params, ...w.params]);
}

/**
 * Whether `userId` has the (not deleted) task `taskId` as far as this service knows. `lock`: until commit, so the
 * task's deletion is not applied meanwhile (a change of one of its reminders then wrote the event of a task
 * deleted, with the title its deletion clears).
 */
export async function ownsTask(
  q: Queryable,
  userId: string,
  taskId: string,
  opts: { lock?: boolean } = {},
): Promise<boolean> {
  const r = await q.query(
    `SELECT 1 FROM reminder_tasks WHERE task_id = $1 AND user_id = $2 AND NOT deleted${opts.lock ? ' FOR SHARE' : ''}`,
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

/** The deleted tasks one statement of pruneDeletedTasks forgets, with their reminders. */
const PRUNE_BATCH = 1_000;

/**
 * Forgets the tasks deleted more than `olderThanMs` ago (LEDGER_RETENTION_MS), with their reminders, a batch a
 * statement, oldest first, until a statement finds fewer or `goOn` says to stop (asked before each batch but the
 * first). Resolves what it deleted.
 *
 * A deleted task's marker (`deleted` in reminder_tasks) is what makes a late copy of one of its events (a
 * redelivery, a dead letter replayed) change nothing: without it a `task.updated` handled after the deletion
 * planned the task's reminders again, and they fired for a task that no longer exists. Kept for good, the markers
 * and the deleted tasks' reminders were a quarter of these tables in a 12-minute soak, growing with every task ever
 * deleted. Past the retention no copy of the task's events is left to arrive: it is longer than any topic keeps an
 * event, dead letters included, and the marker was written when the deletion was handled, after every earlier
 * event of the task was (one partition, in order). A copy that did arrive later (a dead letter replayed onto a
 * topic and not handled for that long) would plan the task's reminders again, as one arriving past the dedupe
 * ledger's retention is applied again: the same bound.
 */
export async function pruneDeletedTasks(
  q: Queryable,
  olderThanMs: number,
  batch = PRUNE_BATCH,
  goOn: () => boolean = () => true,
): Promise<{ tasks: number; reminders: number }> {
  const gone = await deleteOldestFirst<{ deleted: number; reminders: number }>(
    q,
    `WITH doomed AS (
       SELECT task_id, updated_at FROM reminder_tasks
        WHERE deleted AND updated_at >= $1::timestamptz
          AND updated_at < now() - ($2::bigint * interval '1 millisecond')
        ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED
     ), reminders AS (
       DELETE FROM reminder_schedule s USING doomed d WHERE s.task_id = d.task_id RETURNING 1
     ), tasks AS (
       DELETE FROM reminder_tasks t USING doomed d WHERE t.task_id = d.task_id RETURNING d.updated_at
     )
     SELECT (SELECT count(*) FROM tasks)::int AS deleted, (SELECT count(*) FROM reminders)::int AS reminders,
            (SELECT max(updated_at) FROM tasks)::text AS last`,
    [olderThanMs],
    batch,
    goOn,
  );
  return { tasks: gone.deleted, reminders: gone.reminders };
}
