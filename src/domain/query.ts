/** Validation of task list queries (filters, sort, cursor pagination), shared by REST and MCP. */
import { createHash } from 'node:crypto';
import * as z from 'zod';
import type { FieldIssue, Result } from './errors.ts';
import { fail, ok } from './errors.ts';
import { Temporal } from 'temporal-polyfill';
import { INSTANT_HINT, PRIORITIES, PRIORITY_RANK, type Priority, parseInstant } from './task.ts';
import { codePoints, commaList, isUuid, textProblem } from './text.ts';
import { LIMITS } from './task-fields.ts';
import { unknownParameters } from './fields.ts';
import { canonicalJson } from './canonical-json.ts';

export const SORT_FIELDS = ['due', 'priority', 'created', 'updated', 'title'] as const;

/**
 * Named due-date windows, in the user's time zone: today, tomorrow, the 7 days from today, and upcoming (from
 * tomorrow on, open-ended).
 */
export const DUE_WINDOWS = ['today', 'tomorrow', 'week', 'upcoming'] as const;
export type DueWindow = (typeof DUE_WINDOWS)[number];
export type SortField = (typeof SORT_FIELDS)[number];

export interface TaskQuery {
  status: 'pending' | 'completed' | 'all';
  priorities: Priority[];
  tags: string[];
  tagMode: 'any' | 'all';
  dueBefore: string | null;
  dueAfter: string | null;
  overdue: boolean | null;
  due: DueWindow | null;
  q: string | null;
  sort: SortField;
  order: 'asc' | 'desc';
  limit: number;
  cursor: Cursor | null;
  /** The filters as a cursor carries them (`Cursor.f`). */
  filters: string;
}

/** Position after the last item of a page: the sort key's value and the id that breaks ties. */
export interface Cursor {
  v: string | number | null;
  id: string;
  s: SortField;
  o: 'asc' | 'desc';
  /** A digest of the page's filters (filtersOf): a cursor used with others skipped tasks without a word. */
  f?: string;
}

/** A short digest of a query's filters, the same whatever their order or spelling in the query string. */
function filtersOf(q: Omit<TaskQuery, 'sort' | 'order' | 'limit' | 'cursor' | 'filters'>): string {
  const canonical = canonicalJson({
    ...q,
    priorities: [...new Set(q.priorities)].sort(),
    tags: [...q.tags].sort(),
  });
  return createHash('sha256').update(canonical).digest('base64url').slice(0, 12);
}

export const QUERY_KEYS = [
  'status',
  'priority',
  'tag',
  'tag_mode',
  'due_before',
  'due_after',
  'overdue',
  'due',
  'q',
  'sort',
  'order',
  'limit',
  'cursor',
] as const;

export const DEFAULT_LIMIT = 50;
/** The longest search text `q`, in code points. */
export const SEARCH_MAX = 200;
export const MAX_LIMIT = 200;

export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

const RANKS = new Set<unknown>(Object.values(PRIORITY_RANK));

/** Whether `v` is a sort key value the list query could have put in a cursor for `sort`. */
function cursorValueFits(sort: SortField, v: unknown): boolean {
  switch (sort) {
    case 'due':
      return v === 'infinity' || v === '-infinity' || (typeof v === 'string' && parseInstant(v) === v);
    case 'priority':
      return RANKS.has(v);
    case 'created':
    case 'updated':
      return typeof v === 'string' && parseInstant(v) === v;
    case 'title':
      return typeof v === 'string' && v.length <= 2_000 && textProblem(v) === null;
  }
}

/** A cursor this API returned, every field checked (type, range, uuid): anything else is null. */
function decodeCursor(raw: string): Cursor | null {
  try {
    const c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Partial<Cursor> | null;
    if (typeof c !== 'object' || c === null) return null;
    if (typeof c.id !== 'string' || !isUuid(c.id)) return null;
    if (!(SORT_FIELDS as readonly unknown[]).includes(c.s)) return null;
    if (c.o !== 'asc' && c.o !== 'desc') return null;
    if (!cursorValueFits(c.s as SortField, c.v)) return null;
    if (c.f !== undefined && (typeof c.f !== 'string' || c.f.length > 64)) return null;
    return { v: c.v as string | number, id: c.id, s: c.s as SortField, o: c.o, ...(c.f ? { f: c.f } : {}) };
  } catch {
    return null;
  }
}

/** Values may come repeated (`?tag=a&tag=b`) or comma separated (`?tag=a,b`). */
function list(value: unknown): string[] {
  const parts = Array.isArray(value) ? value : [value];
  return parts
    .flatMap((p) => String(p).split(','))
    .map((s) => s.trim())
    .filter(Boolean);
}

function single(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  return Array.isArray(value) ? String(value[value.length - 1]) : String(value);
}

/** A Map, not an object: `sort=constructor` must find nothing (an object's prototype answered it). */
const SORT_ALIASES = new Map<string, SortField>([
  ['due', 'due'],
  ['due_date', 'due'],
  ['priority', 'priority'],
  ['created', 'created'],
  ['created_at', 'created'],
  ['updated', 'updated'],
  ['updated_at', 'updated'],
  ['title', 'title'],
]);

/**
 * The query of a Phase II/III client (`GET /api/{user_id}/tasks`) in this API's terms: `search` is `q`, and
 * `tags` is a comma list of which every tag must match (`tag` with `tag_mode=all`).
 */
export function fromCompatQuery(input: Record<string, unknown>): Result<Record<string, unknown>> {
  const { search, tags, ...rest } = input;
  const issues: FieldIssue[] = [];
  if (search !== undefined && rest.q !== undefined)
    issues.push({ path: 'search', message: 'use q or search, not both' });
  if (tags !== undefined && rest.tag !== undefined)
    issues.push({ path: 'tags', message: 'use tag or tags, not both' });
  if (issues.length) return fail(issues);
  return ok({
    ...rest,
    ...(search !== undefined ? { q: search } : {}),
    ...(tags !== undefined ? { tag: tags, tag_mode: rest.tag_mode ?? 'all' } : {}),
  });
}

/** The one field of the completion body (ADR 0014). */
export const COMPLETION_FIELDS = { completed: z.boolean() };

/** `{"completed": true|false}` sets the state of `PATCH /api/{user_id}/tasks/{id}/complete`; no body toggles. */
export function parseCompletionBody(body: unknown): Result<boolean | null> {
  if (body === undefined || body === '') return ok(null); // no body (JSON null is a body, and not one of these)
  const keys = typeof body === 'object' && body !== null && !Array.isArray(body) ? Object.keys(body) : null;
  const completed = COMPLETION_FIELDS.completed.safeParse(
    keys ? (body as { completed?: unknown }).completed : undefined,
  );
  if (!keys || keys.some((k) => k !== 'completed') || !completed.success)
    return fail([
      {
        path: 'completed',
        message: 'send {"completed": true} or {"completed": false}, or no body to toggle',
      },
    ]);
  return ok(completed.data);
}

// Each letter in either case ([hH][iI]...): the pattern says the same as the check's toLowerCase(), which no other
// character of these words lower-cases to.
const PRIORITY = `(?:${PRIORITIES.map((p) => [...p].map((c) => `[${c}${c.toUpperCase()}]`).join('')).join('|')})`;
/** The `priority` filter: priorities in any case joined by commas (also the OpenAPI pattern). */
export const PRIORITY_LIST_PATTERN = `^${commaList(PRIORITY)}$`;
const PRIORITY_LIST = new RegExp(PRIORITY_LIST_PATTERN);

export function parseTaskQuery(input: Record<string, unknown>): Result<TaskQuery> {
  const issues: FieldIssue[] = unknownParameters(input, QUERY_KEYS);
  const issue = (path: string, message: string) => issues.push({ path, message });
  // A parameter of one value given twice is refused: which one to take is a guess (the last was taken).
  const one = (key: string): string | undefined => {
    const value = input[key];
    if (Array.isArray(value) && value.length > 1) issue(key, 'must be given once');
    return single(value);
  };

  const status = one('status') ?? 'all';
  if (!['pending', 'completed', 'all'].includes(status))
    issue('status', 'must be one of pending, completed, all');

  // As the document states it: priorities joined by commas, nothing else (the parameter may repeat). Any case
  // is taken, as a task's priority is ("HIGH" was a 400 here while a create took it).
  const rawPriorities = input.priority === undefined ? [] : [input.priority].flat().map(String);
  if (rawPriorities.some((p) => !PRIORITY_LIST.test(p)))
    issue('priority', `must be among ${PRIORITIES.join(', ')}, joined by commas`);
  const priorities = rawPriorities.flatMap((p) => p.toLowerCase().split(','));

  const written = list(input.tag ?? []).map((t) => t.normalize('NFC'));
  const tags = [...new Set(written.map((t) => t.toLowerCase()))]; // a tag given twice is one tag
  if (tags.length > LIMITS.tagsMax) issue('tag', `at most ${LIMITS.tagsMax} tags`);
  for (const t of written) {
    const bad = textProblem(t);
    if (bad) issue('tag', bad);
    // In code points, as a stored tag's length (an emoji is one), before lower-casing: "İ" becomes two.
    else if (codePoints(t) > LIMITS.tagMax) issue('tag', `must be at most ${LIMITS.tagMax} characters`);
  }
  const tagMode = one('tag_mode') ?? 'any';
  if (tagMode !== 'any' && tagMode !== 'all') issue('tag_mode', 'must be any or all');

  const instant = (key: 'due_before' | 'due_after') => {
    const raw = one(key);
    if (raw === undefined) return null;
    // `due_date < due_before`: a bound finer than a millisecond (due dates are stored to one) rounds up.
    const v = parseInstant(raw, key === 'due_before' ? 'ceil' : 'floor');
    if (v === null) issue(key, INSTANT_HINT);
    return v;
  };
  const dueBefore = instant('due_before');
  const dueAfter = instant('due_after');

  let overdue: boolean | null = null;
  const rawOverdue = one('overdue');
  if (rawOverdue !== undefined) {
    if (rawOverdue === 'true' || rawOverdue === '1') overdue = true;
    else if (rawOverdue === 'false' || rawOverdue === '0') overdue = false;
    else issue('overdue', 'must be true or false');
  }

  const due = one('due') ?? null;
  if (due !== null && !(DUE_WINDOWS as readonly string[]).includes(due))
    issue('due', `must be one of ${DUE_WINDOWS.join(', ')}`);

  const q = one('q')?.trim().normalize('NFC') || null;
  if (q !== null && codePoints(q) > SEARCH_MAX) issue('q', `must be at most ${SEARCH_MAX} characters`);
  else if (q !== null && textProblem(q)) issue('q', textProblem(q)!);

  const rawSort = one('sort') ?? 'created';
  const sort = SORT_ALIASES.get(rawSort.replace(/^-/, ''));
  if (!sort) issue('sort', `must be one of ${SORT_FIELDS.join(', ')}`);
  // Soonest due and A to Z first; newest and highest priority first.
  const defaultOrder =
    rawSort.startsWith('-') || sort === 'priority'
      ? 'desc'
      : sort === 'due' || sort === 'title'
        ? 'asc'
        : 'desc';
  const order = one('order') ?? defaultOrder;
  if (order !== 'asc' && order !== 'desc') issue('order', 'must be asc or desc');
  else if (rawSort.startsWith('-') && order === 'asc')
    issue('order', 'asc contradicts the "-" (descending) of sort; give one of them');

  let limit = DEFAULT_LIMIT;
  const rawLimit = one('limit');
  if (rawLimit !== undefined) {
    limit = Number(rawLimit);
    if (!/^\d+$/.test(rawLimit) || limit < 1 || limit > MAX_LIMIT)
      issue('limit', `must be an integer 1-${MAX_LIMIT}`);
  }

  const filtered = {
    status: status as TaskQuery['status'],
    priorities: priorities as Priority[],
    tags,
    tagMode: tagMode as 'any' | 'all',
    dueBefore,
    dueAfter,
    overdue,
    due: due as DueWindow | null,
    q,
  };
  const filters = filtersOf(filtered);
  let cursor: Cursor | null = null;
  const rawCursor = one('cursor');
  if (rawCursor !== undefined && rawCursor !== '') {
    cursor = decodeCursor(rawCursor);
    if (!cursor) issue('cursor', 'is not a cursor this API returned');
    else if (cursor.s !== sort || cursor.o !== order)
      issue('cursor', 'belongs to another sort order; keep sort and order when paging');
    // A cursor of the version before (no `f`) is taken as it was.
    else if (cursor.f !== undefined && cursor.f !== filters)
      issue('cursor', 'belongs to other filters; keep the filters (and q) when paging');
  }

  if (issues.length) return fail(issues);
  return ok({
    ...filtered,
    sort: sort as SortField,
    order: order as 'asc' | 'desc',
    limit,
    cursor,
    filters,
  });
}

/**
 * The instants [from, to) of a due window for a user in `timeZone` at `now`: from the start of the local day
 * (today, or tomorrow) to the start of the day after the window, so a day is 23 or 25 hours long across a
 * DST change and a window always covers whole local days.
 */
export function dueWindowRange(
  window: DueWindow,
  now: Date,
  timeZone: string,
): { from: string; to: string | null } {
  const today = Temporal.Instant.fromEpochMilliseconds(now.getTime())
    .toZonedDateTimeISO(timeZone)
    .toPlainDate();
  const first = window === 'tomorrow' || window === 'upcoming' ? today.add({ days: 1 }) : today;
  const end = first.add({ days: window === 'week' ? 7 : 1 });
  const startOf = (d: Temporal.PlainDate) =>
    new Date(d.toZonedDateTime({ timeZone }).epochMilliseconds).toISOString();
  return { from: startOf(first), to: window === 'upcoming' ? null : startOf(end) };
}
