/**
 * Reminder planning (pure): which reminders a task should have, with deterministic ids, and how to move a
 * stored reminder set to a new plan. The reminders service persists what these functions decide.
 *
 * Policies (see also the README section on reminders):
 * - A reminder spec is an ISO 8601 duration before `due_date` (`PT1H`, `P1D`; days and weeks count as exact
 *   24 h / 7 × 24 h, since instants are UTC) or an absolute instant. `task.reminders === null` means the
 *   user's default offsets. Offsets need a due date; instants do not.
 * - The id of a reminder is a UUID (version 5 layout) hashed from the task id and the instant it is for, so
 *   replanning the same task yields the same ids, and two specs that land on the same instant are one
 *   reminder. Changing the due date (or the offsets) changes the instants, hence the ids: the old reminders
 *   are dismissed and new ones scheduled.
 * - A completed (or deleted) task wants no reminders.
 * - "Live": a reminder is only newly scheduled (or re-activated) when its instant is not older than the grace
 *   window at the time of the change (`asOf`, the event's time). Reminders that were already more than the
 *   grace window in the past when the user made the change are skipped silently (creating a task due in 30
 *   minutes does not produce a "1 day before" reminder). One within the grace window fires at once. A
 *   reminder that was live when planned but whose time has passed by more than the grace window when the
 *   scheduler looks at it (downtime) is marked missed by the scheduler, not fired.
 * - "Never none": when every offset of a task is already past at the change (the task is due sooner than
 *   its nearest offset: "due in 40 minutes" with the defaults 1 day and 1 hour before) and the task would
 *   have no reminder at all, it gets one at its due time instead (`reconcileReminders`).
 */
import { hash } from 'node:crypto';
import type { Temporal } from 'temporal-polyfill';
import type { Result } from './errors.ts';
import { fail, ok } from './errors.ts';
import { parseBody, refuse } from './fields.ts';
import { instantDoc, offsetDoc } from './task-fields.ts';
import * as z from 'zod';
import {
  INSTANT_HINT,
  isOffsetSpec,
  parseInstant,
  parseReminderOffset,
  type Task,
  type Transition,
} from './task.ts';

export const DEFAULT_REMINDER_GRACE_MS = 15 * 60_000;
/** A snooze may move a reminder at most this far ahead. */
export const MAX_SNOOZE_MS = 366 * 86_400_000;

export const REMINDER_STATUSES = ['scheduled', 'triggered', 'missed', 'dismissed'] as const;
export type ReminderStatus = (typeof REMINDER_STATUSES)[number];
/** Why a reminder was dismissed: only a user's dismissal is final; the others may be re-activated. */
export const DISMISS_REASONS = ['user', 'task_completed', 'task_deleted', 'rescheduled'] as const;
export type DismissReason = (typeof DISMISS_REASONS)[number];

export interface PlannedReminder {
  id: string;
  /** The instant it fires (UTC ISO, `.000Z`). */
  remind_at: string;
  /** The specs (offsets or instants) that produced this instant. */
  specs: string[];
}

/** Fixed namespace of reminder ids (a random UUID chosen once; never change it: ids would change). */
const NAMESPACE = Buffer.from('8f6d4a2e5b1c4e7f9a3d2c1b0e9f8a7d', 'hex');

/** A name-based UUID (RFC 9562 version 5 layout: SHA-1 of namespace + name). */
export function reminderId(taskId: string, remindAt: string): string {
  const name = Buffer.from(`${taskId.toLowerCase()}|${remindAt}`);
  const b = hash('sha1', Buffer.concat([NAMESPACE, name]), 'buffer').subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Milliseconds of a duration of weeks/days/hours/minutes/seconds (days are 24 h). */
export function durationMs(d: Temporal.Duration): number {
  return (
    d.weeks * 7 * 86_400_000 +
    d.days * 86_400_000 +
    d.hours * 3_600_000 +
    d.minutes * 60_000 +
    d.seconds * 1_000 +
    d.milliseconds
  );
}

/** The instant a spec points at, or null (an offset without a due date, or an invalid spec). */
export function remindAtOf(spec: string, dueDate: string | null): string | null {
  if (isOffsetSpec(spec)) {
    if (dueDate === null) return null;
    const d = parseReminderOffset(spec);
    if (!d) return null;
    return new Date(Date.parse(dueDate) - durationMs(d)).toISOString();
  }
  return parseInstant(spec);
}

/** The reminders `task` should have, ordered by instant; none for a completed task. */
export function planReminders(
  task: Pick<Task, 'id' | 'status' | 'due_date' | 'reminders'>,
  defaultReminders: readonly string[],
): PlannedReminder[] {
  if (task.status === 'completed') return [];
  const specs = task.reminders ?? defaultReminders;
  const byInstant = new Map<string, string[]>();
  for (const spec of specs) {
    const at = remindAtOf(spec, task.due_date);
    if (at === null) continue;
    byInstant.set(at, [...(byInstant.get(at) ?? []), spec]);
  }
  return [...byInstant]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([remind_at, list]) => ({ id: reminderId(task.id, remind_at), remind_at, specs: list }));
}

/** True when a reminder at `remindAt` may still be scheduled by a change made at `asOf`. */
export function isLive(remindAt: string, asOf: Date, graceMs: number): boolean {
  return Date.parse(remindAt) >= asOf.getTime() - graceMs;
}

export interface StoredReminderState {
  id: string;
  status: ReminderStatus;
  dismiss_reason: DismissReason | null;
  /** Snoozed to `remind_at` (kept through a dismissal by a task change: a reopen brings the snooze back). */
  snoozed?: boolean;
  remind_at?: Date | string;
}

/** When a stored reminder snoozed and put aside by a task change would fire, if still live; else undefined. */
export const snoozedAhead = (
  r: StoredReminderState | undefined,
  asOf: Date,
  graceMs: number,
): string | undefined => {
  if (!r?.snoozed || r.remind_at === undefined) return undefined;
  const at = new Date(r.remind_at).toISOString();
  return isLive(at, asOf, graceMs) ? at : undefined;
};

export interface Reconciliation {
  /** New reminders to insert (and announce with `reminder.scheduled`). */
  schedule: PlannedReminder[];
  /** Dismissed (not by the user) reminders that are wanted again. */
  reactivate: PlannedReminder[];
  /** Scheduled reminders that are no longer wanted. */
  dismiss: StoredReminderState[];
  /**
   * Reminders that fired and are no longer wanted (the task completed, deleted, or moved): they stay fired,
   * and what of them is not delivered yet (held by quiet hours, retrying) must not be any more.
   */
  retire: StoredReminderState[];
  /** Fired reminders retired by an earlier change and wanted again (a reopen, a due date moved back). */
  unretire: StoredReminderState[];
}

/** A reconciliation that changes nothing. */
export const noReconciliation = (): Reconciliation => ({
  schedule: [],
  reactivate: [],
  dismiss: [],
  retire: [],
  unretire: [],
});

/**
 * Moves the stored reminders of a task to the `desired` plan. Reminders that fired or were missed are
 * history and stay as they are (one that fired and is no longer wanted is retired, once); a user's dismissal
 * is final; a scheduled (or snoozed) reminder that is still wanted is kept as it is.
 */
export function reconcileReminders(
  existing: readonly StoredReminderState[],
  planned: readonly PlannedReminder[],
  opts: { asOf: Date; graceMs: number; task?: Pick<Task, 'id' | 'due_date'> },
): Reconciliation {
  const byId = new Map(existing.map((r) => [r.id, r]));
  const desired = [...planned, ...atDueInstead(planned, byId, opts)];
  const wanted = new Set(desired.map((d) => d.id));
  const out = noReconciliation();
  for (const d of desired) {
    const row = byId.get(d.id);
    // A snooze that is still ahead keeps it live (completed and reopened: neither moved the reminders).
    const live =
      isLive(d.remind_at, opts.asOf, opts.graceMs) ||
      snoozedAhead(row, opts.asOf, opts.graceMs) !== undefined;
    if (!row) {
      if (live) out.schedule.push(d);
    } else if (row.status === 'dismissed' && row.dismiss_reason !== 'user' && live) {
      out.reactivate.push(d);
    } else if ((row.status === 'triggered' || row.status === 'missed') && row.dismiss_reason !== null) {
      out.unretire.push(row);
    }
  }
  for (const r of existing) {
    if (wanted.has(r.id)) continue;
    if (r.status === 'scheduled') out.dismiss.push(r);
    // A missed one too: no longer the task's, it can no more be snoozed (it fired for a completed task).
    else if ((r.status === 'triggered' || r.status === 'missed') && r.dismiss_reason === null)
      out.retire.push(r);
  }
  return out;
}

/**
 * Whether a stored reminder stands for one the user has or had: scheduled (snoozed ahead), fired, or dismissed
 * by the user. Not one a task change dismissed before it fired (completed, then reopened after its time), nor
 * one missed while the scheduler was down: those never reached the user, and the task was left with none.
 */
const reachedUser = (r: StoredReminderState | undefined): boolean =>
  r !== undefined && r.status !== 'missed' && !(r.status === 'dismissed' && r.dismiss_reason !== 'user');

/**
 * "Never none": a reminder at the due time when every planned reminder is an offset already past (more than
 * the grace window) and none is stored, so the task would otherwise get no reminder; the due time must still
 * be live. Stable across later changes of the task: the same due time gives the same reminder id.
 */
function atDueInstead(
  planned: readonly PlannedReminder[],
  stored: ReadonlyMap<string, StoredReminderState>,
  opts: { asOf: Date; graceMs: number; task?: Pick<Task, 'id' | 'due_date'> },
): PlannedReminder[] {
  const due = opts.task?.due_date;
  if (!due || planned.length === 0 || !isLive(due, opts.asOf, opts.graceMs)) return [];
  const missed = planned.every(
    (p) =>
      !reachedUser(stored.get(p.id)) &&
      !isLive(p.remind_at, opts.asOf, opts.graceMs) &&
      p.specs.every(isOffsetSpec),
  );
  if (!missed) return [];
  // Offsets are positive, so no planned reminder is at the due time itself.
  const remind_at = new Date(Date.parse(due)).toISOString();
  return [{ id: reminderId(opts.task!.id, remind_at), remind_at, specs: planned.flatMap((p) => p.specs) }];
}

export interface ReminderPlan {
  /** What the reminders target schedules for the task, by instant. */
  scheduled: { remind_at: string; specs: string[]; why: 'asked' | 'at_due_instead' }[];
  /** What it asked for but is not scheduled: more than the grace window in the past at the change. */
  skipped: { remind_at: string; specs: string[]; why: 'past' }[];
}

/**
 * What the reminders target schedules for `task` from its event at `asOf` (the change's time), by its rules
 * (reconcileReminders) with no reminder stored at the plan's instants: the case of a new task, and of a
 * change that moves the reminders (a new due date or reminders, completing, reopening). For the answer of
 * that create or change, so a reminder that will not exist does not go unnoticed. A stored reminder at the
 * same instant keeps its state (dismissed by the user, snoozed, already fired). `defaults`: the user's
 * default offsets (used when `task.reminders` is null).
 */
export function reminderPlanOf(
  task: Pick<Task, 'id' | 'status' | 'due_date' | 'reminders'>,
  defaults: readonly string[],
  opts: { asOf: Date; graceMs: number },
): ReminderPlan {
  const planned = planReminders(task, defaults);
  const { schedule } = reconcileReminders([], planned, { ...opts, task });
  const asked = new Set(planned.map((p) => p.id));
  return {
    scheduled: schedule.map((r) => ({
      remind_at: r.remind_at,
      specs: r.specs,
      why: asked.has(r.id) ? ('asked' as const) : ('at_due_instead' as const),
    })),
    skipped: planned
      .filter((p) => !schedule.some((r) => r.id === p.id))
      .map((p) => ({ remind_at: p.remind_at, specs: p.specs, why: 'past' as const })),
  };
}

/** Whether a task change moves its reminders, so its answer carries the new plan (reminderPlanOf). */
export function changeMovesReminders(t: Pick<Transition, 'eventType' | 'changes'>): boolean {
  if (t.eventType === 'task.completed' || t.eventType === 'task.reopened') return true;
  return t.eventType !== null && t.changes.some((f) => f === 'due_date' || f === 'reminders');
}

/**
 * Why a reminder was dismissed, in words, from a reason (a DismissReason, or a reminder.dismissed event's
 * `reason`): what a dropped delivery records and what a refused snooze says.
 */
export function dismissedBecause(reason: string | undefined): string {
  switch (reason) {
    case 'task_completed':
      return 'the task was completed';
    case 'task_deleted':
      return 'the task was deleted';
    case 'rescheduled':
      return "the task's due date or reminders changed";
    default:
      return 'the reminder was dismissed';
  }
}

/** The reason recorded on reminders dismissed because of a task event. */
export function dismissReasonFor(eventType: string, task: Pick<Task, 'status'>): DismissReason {
  if (eventType === 'task.deleted') return 'task_deleted';
  if (task.status === 'completed') return 'task_completed';
  return 'rescheduled';
}

/** The fields of a snooze request (ADR 0014): each validates, and documents itself for the OpenAPI body. */
export const SNOOZE_FIELDS = {
  duration: z
    .unknown()
    .transform((v, ctx) => {
      const d = typeof v === 'string' ? parseReminderOffset(v) : null;
      if (!d) refuse(ctx, 'must be a positive ISO 8601 duration such as PT10M or PT1H');
      return d ?? undefined;
    })
    .meta({ ...offsetDoc, example: 'PT10M' }),
  until: z
    .unknown()
    .transform((v, ctx) => {
      const until = parseInstant(v);
      if (until === null) refuse(ctx, INSTANT_HINT);
      return until ?? undefined;
    })
    .meta({ ...instantDoc, description: 'an instant in the next 366 days' }),
};

/**
 * A snooze request: `{ "duration": "PT10M" }` (from now) or `{ "until": "<instant>" }`. Returns the new
 * instant of the reminder, in the future and at most a year ahead.
 */
export function parseSnooze(body: unknown, now: Date): Result<Date> {
  const parsed = parseBody(body, SNOOZE_FIELDS);
  if (!parsed.ok) return parsed;
  const { duration, until } = parsed.value;
  const hasDuration = duration !== undefined;
  if (hasDuration === (until !== undefined))
    return fail([{ path: '', message: 'set exactly one of duration (e.g. PT10M) or until (an instant)' }]);
  const at = duration ? now.getTime() + durationMs(duration) : Date.parse(until!);
  if (!hasDuration && at <= now.getTime()) return fail([{ path: 'until', message: 'must be in the future' }]);
  if (at - now.getTime() > MAX_SNOOZE_MS)
    return fail([{ path: hasDuration ? 'duration' : 'until', message: 'must be at most 366 days ahead' }]);
  return ok(new Date(at));
}
