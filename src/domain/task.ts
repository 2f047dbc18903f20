/**
 * The task aggregate: its shape on the wire (snake_case, as the seed clients use), validation of what clients
 * send, and the pure state transitions. No I/O here: the store persists what these functions decide.
 */
import { Temporal } from 'temporal-polyfill';
import type { FieldIssue, Result } from './errors.ts';
import { ConflictError, fail, ok } from './errors.ts';
import { parseRecurrence, type Recurrence } from './recurrence.ts';
import { codePoints, textProblem } from './text.ts';

export const PRIORITIES = ['none', 'low', 'medium', 'high', 'urgent'] as const;
export type Priority = (typeof PRIORITIES)[number];
export const STATUSES = ['pending', 'completed'] as const;
export type TaskStatus = (typeof STATUSES)[number];

/** Rank used for sorting by priority (higher is more urgent). */
export const PRIORITY_RANK: Record<Priority, number> = { none: 0, low: 1, medium: 2, high: 3, urgent: 4 };

export const LIMITS = {
  titleMax: 500,
  descriptionMax: 10_000,
  tagsMax: 20,
  tagMax: 50,
  remindersMax: 10,
  reminderOffsetMaxDays: 366,
} as const;

export interface Task {
  id: string;
  user_id: string;
  title: string;
  description: string;
  status: TaskStatus;
  priority: Priority;
  tags: string[];
  due_date: string | null;
  /** Offsets before due (ISO 8601 durations such as `PT1H`) or absolute instants; null = the user's default. */
  reminders: string[] | null;
  recurrence: Recurrence | null;
  series_id: string | null;
  created_at: string;
  updated_at: string;
  completed_at: string | null;
  version: number;
}

/** The fields a client may set. */
export interface TaskFields {
  title: string;
  description: string;
  status: TaskStatus;
  priority: Priority;
  tags: string[];
  due_date: string | null;
  reminders: string[] | null;
  recurrence: Recurrence | null;
}
export type TaskPatch = Partial<TaskFields>;

export const MUTABLE_FIELDS = [
  'title',
  'description',
  'status',
  'priority',
  'tags',
  'due_date',
  'reminders',
  'recurrence',
] as const satisfies readonly (keyof TaskFields)[];

export interface ValidationContext {
  /**
   * The user's IANA time zone, the default for recurrence rules: the only use of it, so it is needed only
   * when `needsTimeZone(input)` (callers skip the settings lookup otherwise).
   */
  timezone?: string;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether validating `input` reads the user's time zone: only a recurrence rule does. */
export const needsTimeZone = (input: unknown): boolean =>
  isObject(input) && input.recurrence !== undefined && input.recurrence !== null;

/** The instants both databases store and give back exactly, and ISO 8601 writes with four-digit years. */
export const INSTANT_MIN_MS = Date.parse('0001-01-01T00:00:00.000Z');
export const INSTANT_MAX_MS = Date.parse('9999-12-31T23:59:59.999Z');

/**
 * Parses an ISO 8601 instant that carries an offset or `Z`, within years 0001-9999 (UTC); returns the
 * canonical UTC form.
 */
export function parseInstant(value: unknown): string | null {
  if (typeof value !== 'string' || value.length > 64) return null;
  try {
    const ms = Temporal.Instant.from(value).epochMilliseconds;
    if (ms < INSTANT_MIN_MS || ms > INSTANT_MAX_MS) return null;
    return new Date(ms).toISOString();
  } catch {
    return null;
  }
}

/**
 * The instants the API documents (OpenAPI `pattern`, with `format: date-time`): written years 0002-9998, so
 * that any offset keeps them within the years 0001-9999 UTC that parseInstant accepts.
 */
export const INSTANT_DOC_PATTERN =
  '^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-';

export const INSTANT_HINT =
  'must be an ISO 8601 date-time with an offset, in years 0001-9999 (UTC), e.g. 2026-01-10T09:00:00Z';

/**
 * Offsets parsed so far, with their canonical text: every write and every reminder plan parses the same few
 * (P1D, PT1H...), and the Temporal polyfill's parse, total and toString cost about 0.05-0.1 ms each, a
 * noticeable share of a create (a Temporal.Duration is immutable: safe to share). Cleared when full, so
 * hostile input cannot grow it.
 */
const parsedOffsets = new Map<string, { duration: Temporal.Duration; text: string }>();
const PARSED_OFFSETS_MAX = 1_000;

function offsetOf(value: string): { duration: Temporal.Duration; text: string } | null {
  const known = parsedOffsets.get(value);
  if (known) return known;
  const duration = parseOffset(value);
  if (!duration) return null; // failures are not kept: a client could fill the memo with long junk
  const parsed = { duration, text: duration.toString() };
  if (parsedOffsets.size >= PARSED_OFFSETS_MAX) parsedOffsets.clear();
  parsedOffsets.set(value, parsed);
  return parsed;
}

/** Whether a reminder is written as an offset before due (an ISO 8601 duration, P...) rather than an instant. */
export const isOffsetSpec = (spec: string): boolean => /^P/i.test(spec);

/**
 * The reminder offsets the API documents (OpenAPI `pattern`): weeks (up to 52), days (up to 365) with hours
 * and minutes, or hours (up to 8,783) and minutes (up to 99,999): each one positive and at most a year, so
 * every string of it is accepted. The parser takes any positive duration of up to 366 days.
 */
export const OFFSET_DOC_PATTERN =
  '^P(?:(?:[1-9]|[1-4][0-9]|5[0-2])W' +
  '|(?:[1-9][0-9]?|[12][0-9]{2}|3[0-5][0-9]|36[0-5])D(?:T(?:(?:1?[0-9]|2[0-3])H(?:[1-5]?[0-9]M)?|[1-5]?[0-9]M))?' +
  '|T(?:(?:[1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-3])H(?:[1-5]?[0-9]M)?|[1-9][0-9]{0,4}M))$';

/** A reminder offset: a positive ISO 8601 duration of days/weeks/hours/minutes, at most a year. */
export function parseReminderOffset(value: string): Temporal.Duration | null {
  return offsetOf(value)?.duration ?? null;
}

function parseOffset(value: string): Temporal.Duration | null {
  if (!isOffsetSpec(value)) return null;
  try {
    const d = Temporal.Duration.from(value);
    if (d.years !== 0 || d.months !== 0 || d.sign <= 0) return null;
    // Weeks need a reference date to total; offsets carry no months or years, so any date is exact.
    const seconds = d.total({ unit: 'seconds', relativeTo: '2000-01-01T00:00:00' });
    if (seconds > LIMITS.reminderOffsetMaxDays * 86_400) return null;
    return d;
  } catch {
    return null;
  }
}

function validateField(key: keyof TaskFields, value: unknown, ctx: ValidationContext, issues: FieldIssue[]) {
  const issue = (message: string, path: string = key) => issues.push({ path, message });
  switch (key) {
    case 'title': {
      if (typeof value !== 'string') return issue('must be a string');
      const bad = textProblem(value);
      if (bad) return issue(bad);
      const title = value.trim();
      if (title.length === 0) return issue('must not be empty');
      if (codePoints(title) > LIMITS.titleMax) return issue(`must be at most ${LIMITS.titleMax} characters`);
      return title;
    }
    case 'description': {
      if (value === null) return '';
      if (typeof value !== 'string') return issue('must be a string');
      const bad = textProblem(value);
      if (bad) return issue(bad);
      if (codePoints(value) > LIMITS.descriptionMax)
        return issue(`must be at most ${LIMITS.descriptionMax} characters`);
      return value;
    }
    case 'status':
      if (typeof value !== 'string' || !(STATUSES as readonly string[]).includes(value))
        return issue(`must be one of ${STATUSES.join(', ')}`);
      return value;
    case 'priority':
      if (typeof value !== 'string' || !(PRIORITIES as readonly string[]).includes(value.toLowerCase()))
        return issue(`must be one of ${PRIORITIES.join(', ')}`);
      return value.toLowerCase();
    case 'tags': {
      if (!Array.isArray(value)) return issue('must be an array of strings');
      if (value.length > LIMITS.tagsMax) return issue(`must have at most ${LIMITS.tagsMax} tags`);
      const seen = new Set<string>();
      const tags: string[] = [];
      value.forEach((raw, i) => {
        const path = `tags[${i}]`;
        if (typeof raw !== 'string') return issue('must be a string', path);
        const bad = textProblem(raw);
        if (bad) return issue(bad, path);
        const tag = raw.trim();
        if (tag.length === 0) return issue('must not be empty', path);
        if (codePoints(tag) > LIMITS.tagMax)
          return issue(`must be at most ${LIMITS.tagMax} characters`, path);
        if (value.indexOf(raw) !== i) return issue('duplicates another tag', path);
        // Tags are case-insensitive: "Work" after "work" is the same tag, kept once as first written.
        const k = tag.toLowerCase();
        if (seen.has(k)) return;
        seen.add(k);
        tags.push(tag);
      });
      return tags;
    }
    case 'due_date': {
      if (value === null) return null;
      const due = parseInstant(value);
      if (due === null) return issue(INSTANT_HINT);
      return due;
    }
    case 'reminders': {
      if (value === null) return null;
      if (!Array.isArray(value))
        return issue('must be an array of ISO 8601 durations (PT1H) or instants, or null');
      if (value.length > LIMITS.remindersMax)
        return issue(`must have at most ${LIMITS.remindersMax} reminders`);
      const out: string[] = [];
      value.forEach((raw, i) => {
        const path = `reminders[${i}]`;
        if (typeof raw !== 'string') return issue('must be a string', path);
        if (isOffsetSpec(raw)) {
          const offset = offsetOf(raw);
          if (!offset)
            return issue(
              `must be a positive ISO 8601 duration of weeks, days, hours or minutes up to ${LIMITS.reminderOffsetMaxDays} days (e.g. PT1H, P1D)`,
              path,
            );
          out.push(offset.text);
        } else {
          const at = parseInstant(raw);
          if (at === null)
            return issue(`must be an ISO 8601 duration (PT1H) or an instant; ${INSTANT_HINT}`, path);
          out.push(at);
        }
      });
      return [...new Set(out)];
    }
    case 'recurrence': {
      if (value === null) return null;
      if (ctx.timezone === undefined)
        throw new Error('validating a recurrence needs the time zone (needsTimeZone)');
      const parsed = parseRecurrence(value, ctx.timezone);
      if (!parsed.ok) {
        issues.push(...parsed.issues);
        return undefined;
      }
      return parsed.value;
    }
  }
}

function validateFields(
  input: unknown,
  ctx: ValidationContext,
  required: readonly (keyof TaskFields)[],
): Result<TaskPatch> {
  if (!isObject(input)) return fail([{ path: '', message: 'body must be a JSON object' }]);
  const issues: FieldIssue[] = [];
  for (const key of Object.keys(input)) {
    if (!(MUTABLE_FIELDS as readonly string[]).includes(key))
      issues.push({ path: key, message: `unknown field; allowed: ${MUTABLE_FIELDS.join(', ')}` });
  }
  for (const key of required) {
    if (input[key] === undefined) issues.push({ path: key, message: 'is required' });
  }
  const patch: Record<string, unknown> = {};
  for (const key of MUTABLE_FIELDS) {
    if (!(key in input) || input[key] === undefined) continue;
    const before = issues.length;
    const value = validateField(key, input[key], ctx, issues);
    if (issues.length === before) patch[key] = value;
  }
  return issues.length ? fail(issues) : ok(patch as TaskPatch);
}

/** Rules that involve several fields, checked on the task as it would be after a change. */
export function checkInvariants(fields: Pick<TaskFields, 'due_date' | 'reminders'>): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (fields.due_date === null && fields.reminders?.some(isOffsetSpec))
    issues.push({ path: 'reminders', message: 'offsets before due (e.g. PT1H) need a due_date' });
  return issues;
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
  return issues.length ? fail(issues) : ok(fields);
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

const sameValue = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

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
  if (patch.recurrence !== undefined && next.recurrence && !next.series_id) next.series_id = task.id;
  if (task.status !== next.status) next.completed_at = next.status === 'completed' ? now.toISOString() : null;
  const changes = changedFields(task, next);
  if (changes.length === 0) return ok({ task, changes, eventType: null });
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
