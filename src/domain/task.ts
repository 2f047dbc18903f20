/**
 * The task aggregate: its shape on the wire (snake_case, as the seed clients use), validation of what clients
 * send, and the pure state transitions. No I/O here: the store persists what these functions decide.
 */
import { canonicalJson } from './canonical-json.ts';
import type { FieldIssue, Result } from './errors.ts';
import { ConflictError, UnprocessableError, fail, ok } from './errors.ts';
import { isObject, parseBody } from './fields.ts';
import {
  MAX_GAP_YEARS,
  nextOccurrence,
  parseRecurrence,
  previewOccurrences,
  seriesAnchor,
  type Recurrence,
} from './recurrence.ts';
import { isOffsetSpec, SETTINGS_FIELDS, TASK_FIELDS, type Priority, type TaskStatus } from './task-fields.ts';

export {
  INSTANT_HINT,
  INSTANT_MAX_MS,
  INSTANT_MIN_MS,
  isOffsetSpec,
  LIMITS,
  parseInstant,
  parseReminderOffset,
  PRIORITIES,
  STATUSES,
  type Priority,
  type TaskStatus,
} from './task-fields.ts';

/** Rank used for sorting by priority (higher is more urgent). */
export const PRIORITY_RANK: Record<Priority, number> = { none: 0, low: 1, medium: 2, high: 3, urgent: 4 };

/** The fields a client may set. */
export interface TaskFields {
  title: string;
  description: string;
  status: TaskStatus;
  priority: Priority;
  tags: string[];
  due_date: string | null;
  /** Offsets before due (ISO 8601 durations such as `PT1H`) or absolute instants; null = the user's default. */
  reminders: string[] | null;
  recurrence: Recurrence | null;
}

/** A task: the fields a client sets and those the service keeps. */
export interface Task extends TaskFields {
  id: string;
  user_id: string;
  series_id: string | null;
  created_at: string;
  updated_at: string;
  completed_at: string | null;
  version: number;
}

export type TaskPatch = Partial<TaskFields>;

/** The fields a client may set, in the order their schemas are listed (TASK_FIELDS). */
export const MUTABLE_FIELDS = Object.keys(TASK_FIELDS) as (keyof typeof TASK_FIELDS)[];
// Every field of TaskFields has a schema (and MUTABLE_FIELDS indexes a Task, so no schema is extra).
TASK_FIELDS satisfies Record<keyof TaskFields, unknown>;

export interface ValidationContext {
  /**
   * The user's IANA time zone, the default for recurrence rules: the only use of it, so it is needed only
   * when `needsTimeZone(input)` (callers skip the settings lookup otherwise).
   */
  timezone?: string;
  /**
   * The recurrence of the task being changed, when validating a change of it failed: the same rule sent back
   * (a client that sends the whole task) is taken even past today's limits, which it was stored before.
   */
  storedRecurrence?: Recurrence | null;
  /**
   * When the task is created: a rule that repeats after completion, or one of a task without a due date, has
   * its first repeat counted from then at the earliest (without it, such a rule is checked from the due date).
   */
  now?: Date;
}

/** Whether validating `input` reads the user's time zone: only a recurrence rule does. */
export const needsTimeZone = (input: unknown): boolean =>
  isObject(input) && input.recurrence !== undefined && input.recurrence !== null;

function validateFields(
  input: unknown,
  ctx: ValidationContext,
  required: readonly (keyof TaskFields)[],
): Result<TaskPatch> {
  const parsed = parseBody(input, TASK_FIELDS, { required });
  if (!isObject(input)) return parsed as Result<TaskPatch>;
  const issues = parsed.ok ? [] : [...parsed.issues];
  const patch: Record<string, unknown> = parsed.ok ? { ...parsed.value } : {};
  // The rule is read in the user's time zone (TASK_FIELDS only documents it).
  if (input.recurrence !== undefined) {
    delete patch.recurrence;
    const value = recurrenceOf(input.recurrence, ctx, issues);
    if (value !== undefined) patch.recurrence = value;
  }
  return issues.length ? fail(issues) : ok(patch as TaskPatch);
}

/**
 * A change of the user's settings (SETTINGS_FIELDS): the fields it sets (a field left out keeps its value;
 * null is not a value of either).
 */
export function validateSettings(
  input: unknown,
): Result<Partial<{ timezone: string; default_reminders: string[] }>> {
  return parseBody(input, SETTINGS_FIELDS) as Result<
    Partial<{ timezone: string; default_reminders: string[] }>
  >;
}

/** Whether two recurrences are the same rule (the preset, kept for display, aside). */
const sameRecurrence = (a: Recurrence, b: Recurrence): boolean =>
  a.rrule === b.rrule && a.mode === b.mode && a.timezone === b.timezone;

/** A recurrence rule in the user's time zone (TASK_FIELDS documents the field; this reads it). */
function recurrenceOf(value: unknown, ctx: ValidationContext, issues: FieldIssue[]) {
  if (value === null) return null;
  if (ctx.timezone === undefined)
    throw new Error('validating a recurrence needs the time zone (needsTimeZone)');
  const parsed = parseRecurrence(value, ctx.timezone);
  if (parsed.ok) return parsed.value;
  if (ctx.storedRecurrence) {
    const unlimited = parseRecurrence(value, ctx.timezone, { stored: true });
    if (unlimited.ok && sameRecurrence(unlimited.value, ctx.storedRecurrence)) return unlimited.value;
  }
  issues.push(...parsed.issues);
  return undefined;
}

/** Rules that involve several fields, checked on the task as it would be after a change. */
export function checkInvariants(fields: Pick<TaskFields, 'due_date' | 'reminders'>): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (fields.due_date === null && fields.reminders?.some(isOffsetSpec))
    issues.push({ path: 'reminders', message: 'offsets before due (e.g. PT1H) need a due_date' });
  return issues;
}

/**
 * A rule being set that has no repeat: the task would never repeat (a preview of none, a skip refused as the
 * last occurrence), which is a mistake, not a series. Its UNTIL ends it before the first repeat, or its days
 * never come (monthly on the 31st every 12 months from April; every 999,999,999 days). In `schedule` mode the
 * first repeat is the one after the due date (after `now` for a task without one: its series starts when it is
 * first completed); in `after_completion` mode the one after a completion `now`, the earliest a completion can
 * come (a later one only moves the repeat later). Not checked: COUNT=1 (once, as asked), and without `now`
 * (a caller with no clock) `after_completion` rules and tasks without a due date.
 */
function ruleIssues(fields: Pick<TaskFields, 'due_date' | 'recurrence'>, now?: Date): FieldIssue[] {
  const rule = fields.recurrence;
  if (!rule || /(?:^|;)COUNT=1(?:;|$)/.test(rule.rrule)) return [];
  const at = now?.toISOString();
  const due = fields.due_date;
  let after: string;
  if (rule.mode === 'after_completion') {
    if (at === undefined) return [];
    const next = nextOccurrence(rule, {
      anchor: seriesAnchor(due, at),
      previousDue: due,
      completedAt: at,
      occurrencesSoFar: 1,
    });
    if (next !== null) return [];
    after = `a completion now (${at})`;
  } else {
    const from = due ?? (at === undefined ? null : seriesAnchor(null, at));
    if (from === null) return [];
    if (previewOccurrences(rule, from, from, 1).length > 0) return [];
    after = due === null ? `now (${from})` : `the due date (${due})`;
  }
  const until = /(?:^|;)UNTIL=/.test(rule.rrule);
  return [
    {
      path: until ? 'recurrence.until' : 'recurrence',
      message: until
        ? `ends before the first repeat after ${after}: the task would never repeat`
        : `has no repeat after ${after} within ${MAX_GAP_YEARS} years: the task would never repeat`,
    },
  ];
}

export function validateCreate(input: unknown, ctx: ValidationContext): Result<TaskFields> {
  const parsed = validateFields(input, ctx, ['title']);
  if (!parsed.ok) return parsed;
  const fields: TaskFields = {
    title: parsed.value.title ?? '',
    description: parsed.value.description ?? '',
    status: parsed.value.status ?? 'pending',
    priority: parsed.value.priority ?? 'none',
    tags: parsed.value.tags ?? [],
    due_date: parsed.value.due_date ?? null,
    reminders: parsed.value.reminders ?? null,
    recurrence: parsed.value.recurrence ?? null,
  };
  const issues = checkInvariants(fields);
  if (issues.length) return fail(issues);
  const never = ruleIssues(fields, ctx.now);
  if (never.length) throw new UnprocessableError(never);
  return ok(fields);
}

export function validatePatch(input: unknown, ctx: ValidationContext): Result<TaskPatch> {
  const parsed = validateFields(input, ctx, []);
  if (!parsed.ok) return parsed;
  if (Object.keys(parsed.value).length === 0)
    return fail([{ path: '', message: `body must set at least one of ${MUTABLE_FIELDS.join(', ')}` }]);
  return parsed;
}

export function newTask(
  id: string,
  userId: string,
  fields: TaskFields,
  now: Date,
  seriesId?: string | null,
): Task {
  const at = now.toISOString();
  return {
    id,
    user_id: userId,
    ...fields,
    series_id: seriesId ?? (fields.recurrence ? id : null),
    created_at: at,
    updated_at: at,
    completed_at: fields.status === 'completed' ? at : null,
    version: 1,
  };
}

// Key order aside: a recurrence read back from jsonb has its keys in another order than one just parsed.
const sameValue = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

/** The names of the client-visible fields that differ. */
export function changedFields(before: Task, after: Task): string[] {
  return MUTABLE_FIELDS.filter((k) => !sameValue(before[k], after[k]));
}

export type TaskEventType =
  'task.created' | 'task.updated' | 'task.completed' | 'task.reopened' | 'task.deleted';

export interface Transition {
  task: Task;
  changes: string[];
  /** null when nothing changed (no version bump, no event). */
  eventType: TaskEventType | null;
}

/** Applies a validated patch; a status change makes it a completion or a reopening. */
export function applyPatch(task: Task, patch: TaskPatch, now: Date): Result<Transition> {
  const next: Task = { ...task, ...patch };
  const issues = checkInvariants(next);
  if (issues.length) {
    // The body alone breaks the rule (400), or only together with what the task already has (409: offsets
    // for a task without a due date, or the due date taken from a task with offsets).
    const inBody = checkInvariants({ due_date: patch.due_date ?? null, reminders: patch.reminders ?? null });
    if (patch.due_date === null && inBody.length) return fail(issues);
    throw new ConflictError(
      "reminders before due (e.g. PT1H) need a due_date, and this task's would have none; send both together",
    );
  }
  // A rule set now that would never repeat. A rule sent back unchanged (a client's whole task, on the last
  // occurrence of its series) and a due date moved past the end of a rule kept are not refused: that ends it.
  const ruleChanged = !!patch.recurrence && !sameValue(task.recurrence, next.recurrence);
  const ruleProblems = ruleChanged ? ruleIssues(next, now) : [];
  if (ruleProblems.length) throw new UnprocessableError(ruleProblems);
  if (patch.recurrence !== undefined && next.recurrence && !next.series_id) next.series_id = task.id;
  if (task.status !== next.status) next.completed_at = next.status === 'completed' ? now.toISOString() : null;
  const changes = changedFields(task, next);
  if (changes.length === 0) return ok({ task, changes, eventType: null });
  // A completed occurrence's series goes on in its next occurrence: a rule changed here would reach nothing.
  if (task.status === 'completed' && next.status === 'completed' && changes.includes('recurrence'))
    throw new ConflictError(
      'this task is completed: its repeat rule is no longer read (a repeating series goes on in its next occurrence); change the pending occurrence, or reopen this one first',
    );
  next.updated_at = now.toISOString();
  next.version = task.version + 1;
  let eventType: TaskEventType = 'task.updated';
  if (task.status !== next.status)
    eventType = next.status === 'completed' ? 'task.completed' : 'task.reopened';
  return ok({ task: next, changes, eventType });
}

export const complete = (task: Task, now: Date) => applyPatch(task, { status: 'completed' }, now);
export const reopen = (task: Task, now: Date) => applyPatch(task, { status: 'pending' }, now);
export const toggle = (task: Task, now: Date) =>
  applyPatch(task, { status: task.status === 'completed' ? 'pending' : 'completed' }, now);
