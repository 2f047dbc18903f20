/**
 * The fields of a task as clients send them, one zod schema each: the one definition of each field's rules
 * (type, limits, what is refused with which message, how it is normalized), from which the REST validation
 * (task.ts validateCreate / validatePatch, used by the MCP tools too), the OpenAPI request bodies and the
 * MCP tool arguments (both through `fieldJsonSchema` of fields.ts) are made (docs/adr/0014-one-schema-per-body.md). A rule JSON Schema cannot say (a length in code points after
 * trimming, tags unique ignoring case) is checked by the schema and documented beside it with `meta`.
 */
import { Temporal } from 'temporal-polyfill';
import * as z from 'zod';
import {
  RECURRENCE_MODES,
  RECURRENCE_COUNT_MAX,
  RECURRENCE_NUMBER_MAX,
  RECURRENCE_PRESETS,
  RRULE_DOC_PATTERN,
} from './recurrence.ts';
import { codePoints, textProblem, TRIMMED_SPACE } from './text.ts';
import { canonicalTimeZone, isTimeZone } from './time.ts';
import { refuse } from './fields.ts';

export const PRIORITIES = ['none', 'low', 'medium', 'high', 'urgent'] as const;
export type Priority = (typeof PRIORITIES)[number];
export const STATUSES = ['pending', 'completed'] as const;
export type TaskStatus = (typeof STATUSES)[number];

export const LIMITS = {
  titleMax: 500,
  descriptionMax: 10_000,
  tagsMax: 20,
  tagMax: 50,
  remindersMax: 10,
  reminderOffsetMaxDays: 366,
} as const;

/**
 * Text the API stores: no NUL character (PostgreSQL refuses it). Unpaired surrogates are refused too (not
 * Unicode), which a pattern cannot say in a form schemathesis generates from.
 */
export const TEXT = '^[^\\u0000]*$';
/** Such text with something besides white space as String.prototype.trim sees it (no \\s: Python's differs). */
export const NON_BLANK = `^[^\\u0000]*[^\\u0000${TRIMMED_SPACE}][^\\u0000]*$`;
/** A tag: such text without a comma (tag filters, `?tag=a,b`, separate tags with commas). */
export const TAG = `^[^\\u0000,]*[^\\u0000,${TRIMMED_SPACE}][^\\u0000,]*$`;

/**
 * The instants the API documents (OpenAPI `pattern`, with `format: date-time`): written years 0002-9998, so
 * that any offset keeps them within the years 0001-9999 UTC that parseInstant accepts.
 */
export const INSTANT_DOC_PATTERN =
  '^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-';
export const instantDoc = { type: 'string', format: 'date-time', pattern: INSTANT_DOC_PATTERN } as const;

/**
 * The reminder offsets the API documents (OpenAPI `pattern`): weeks (up to 52), days (up to 365) with hours
 * and minutes, or hours (up to 8,783) and minutes (up to 99,999): each one positive and at most a year, so
 * every string of it is accepted. The parser takes any positive duration of up to 366 days.
 */
export const OFFSET_DOC_PATTERN =
  '^P(?:(?:[1-9]|[1-4][0-9]|5[0-2])W' +
  '|(?:[1-9][0-9]?|[12][0-9]{2}|3[0-5][0-9]|36[0-5])D(?:T(?:(?:1?[0-9]|2[0-3])H(?:[1-5]?[0-9]M)?|[1-5]?[0-9]M))?' +
  '|T(?:(?:[1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-3])H(?:[1-5]?[0-9]M)?|[1-9][0-9]{0,4}M))$';

/** A reminder offset before the due time. */
export const offsetDoc = {
  type: 'string',
  pattern: OFFSET_DOC_PATTERN,
  description: `a positive ISO 8601 duration of weeks, days, hours and minutes, at most ${LIMITS.reminderOffsetMaxDays} days`,
  example: 'PT1H',
} as const;

/**
 * Every IANA time zone this runtime knows, listed once for every route that takes one; with `UTC`, the default
 * of every zone field, which Node's list leaves out (it names only the zones of places).
 */
const TIME_ZONES = [...new Set(['UTC', ...Intl.supportedValuesOf('timeZone')])];
/** A time zone field of the document, `null` allowed too when `nullable`. */
export const timeZoneDoc = (description: string, nullable = false) =>
  nullable
    ? { type: ['string', 'null'], enum: [...TIME_ZONES, null], description }
    : { type: 'string', enum: TIME_ZONES, description };

/** The instants both databases store and give back exactly, and ISO 8601 writes with four-digit years. */
export const INSTANT_MIN_MS = Date.parse('0001-01-01T00:00:00.000Z');
export const INSTANT_MAX_MS = Date.parse('9999-12-31T23:59:59.999Z');

/**
 * Parses an ISO 8601 instant that carries an offset or `Z`, within years 0001-9999 (UTC); returns the
 * canonical UTC form, to the millisecond: a finer instant is taken at the millisecond before it, or after it
 * with `ceil` (a bound that instants stored to the millisecond are compared with: `due < T` and `at >= T`
 * keep the instant at T's millisecond when T is a little later).
 */
export function parseInstant(value: unknown, round: 'floor' | 'ceil' = 'floor'): string | null {
  if (typeof value !== 'string' || value.length > 64) return null;
  try {
    const instant = Temporal.Instant.from(value);
    const finer = round === 'ceil' && instant.epochNanoseconds % 1_000_000n !== 0n;
    const ms = instant.epochMilliseconds + (finer ? 1 : 0);
    if (ms < INSTANT_MIN_MS || ms > INSTANT_MAX_MS) return null;
    return new Date(ms).toISOString();
  } catch {
    return null;
  }
}

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

/**
 * The first thing wrong with a text of at most `max` code points (trimmed first when `trim`), or null. Counted
 * as stored, in NFC: a few letters take more code points composed (U+FB2C is three).
 */
function textIssue(value: string, max: number, trim: boolean): string | null {
  const bad = textProblem(value);
  if (bad) return bad;
  const text = trim ? value.normalize('NFC').trim() : value.normalize('NFC');
  if (trim && text.length === 0) return 'must not be empty';
  if (codePoints(text) > max) return `must be at most ${max} characters`;
  return null;
}

const mustBe = (what: string) => ({
  error: (issue: { input?: unknown }) => (issue.input === undefined ? 'is required' : `must be ${what}`),
});

const oneOf = (values: readonly string[]) => `must be one of ${values.join(', ')}`;

/** The recurrence field's document: a preset, or an object with rrule or preset and options. */
const recurrenceDoc = {
  description:
    'A preset (daily, weekdays, weekly, monthly, yearly) or {rrule|preset, interval, mode, timezone, until, count}; null fields are left out',
  oneOf: [
    { type: 'string', enum: RECURRENCE_PRESETS },
    {
      type: 'object',
      additionalProperties: false,
      // One of rrule and preset; COUNT and UNTIL not both (RFC 5545). A null field counts as left out.
      oneOf: [
        { required: ['rrule'], properties: { rrule: { type: 'string' }, preset: { type: 'null' } } },
        { required: ['preset'], properties: { preset: { type: 'string' }, rrule: { type: 'null' } } },
      ],
      not: {
        required: ['count', 'until'],
        properties: { count: { type: 'integer' }, until: { type: 'string' } },
      },
      properties: {
        rrule: {
          type: ['string', 'null'],
          pattern: RRULE_DOC_PATTERN,
          description:
            'RFC 5545 RRULE: FREQ=DAILY|WEEKLY|MONTHLY|YEARLY, then BYMONTH, BYMONTHDAY (1-28 or -28..-1; with MONTHLY and no BYMONTH 1-31 or -31..-1, a month without that day skipped), BYDAY (MO..SU; with MONTHLY or YEARLY also 1MO..4MO, -1FR..), BYHOUR, BYMINUTE, WKST in that order. INTERVAL, COUNT and UNTIL are the fields interval, count and until. (Also accepted: any part order, INTERVAL/COUNT/UNTIL/BYSETPOS in the rule, several BYMINUTE values as long as BYHOUR x BYMINUTE gives at most 24 times a day.)',
          example: 'FREQ=MONTHLY;BYMONTHDAY=-1',
        },
        preset: { type: ['string', 'null'], enum: [...RECURRENCE_PRESETS, null] },
        interval: { type: ['integer', 'null'], minimum: 1, maximum: RECURRENCE_NUMBER_MAX },
        mode: { type: ['string', 'null'], enum: [...RECURRENCE_MODES, null] },
        timezone: timeZoneDoc("the rule's IANA time zone (default: yours)", true),
        until: {
          type: ['string', 'null'],
          format: 'date-time',
          pattern: '^(?:19[89][0-9]|[2-8][0-9]{3})-',
          description: 'the last instant an occurrence may fall on (years 1980-8999)',
        },
        count: { type: ['integer', 'null'], minimum: 1, maximum: RECURRENCE_COUNT_MAX },
      },
    },
    { type: 'null' },
  ],
};

/**
 * The schema of each field a client may set. `recurrence` is documented here; its value is read by
 * parseRecurrence, which needs the user's time zone (task.ts).
 */
export const TASK_FIELDS = {
  title: z
    .string(mustBe('a string'))
    .check((ctx) => {
      const issue = textIssue(ctx.value, LIMITS.titleMax, true);
      if (issue) refuse(ctx, issue);
    })
    .meta({ minLength: 1, maxLength: LIMITS.titleMax, pattern: NON_BLANK })
    .transform((v) => v.trim().normalize('NFC')),
  description: z
    .string(mustBe('a string'))
    .check((ctx) => {
      const issue = textIssue(ctx.value, LIMITS.descriptionMax, false);
      if (issue) refuse(ctx, issue);
    })
    .meta({ maxLength: LIMITS.descriptionMax, pattern: TEXT })
    .nullable()
    .transform((v) => (v ?? '').normalize('NFC')),
  status: z.enum(STATUSES, { error: oneOf(STATUSES) }),
  // Any case is taken; the document names the canonical spelling.
  priority: z
    .string({ error: oneOf(PRIORITIES) })
    .check((ctx) => {
      if (!(PRIORITIES as readonly string[]).includes(ctx.value.toLowerCase()))
        refuse(ctx, oneOf(PRIORITIES));
    })
    .meta({ enum: [...PRIORITIES] })
    .transform((v) => v.toLowerCase() as Priority),
  // The array's rules in one check, in order: the count first (alone), then each tag once.
  tags: z
    .array(z.unknown(), { error: 'must be an array of strings' })
    .check((ctx) => {
      const value = ctx.value;
      if (value.length > LIMITS.tagsMax) return refuse(ctx, `must have at most ${LIMITS.tagsMax} tags`);
      value.forEach((raw, i) => {
        if (typeof raw !== 'string') return refuse(ctx, 'must be a string', [i]);
        const issue = textIssue(raw, LIMITS.tagMax, true);
        if (issue) return refuse(ctx, issue, [i]);
        if (raw.includes(','))
          return refuse(ctx, 'must not contain a comma (a tag filter separates tags with commas)', [i]);
        if (value.indexOf(raw) !== i) refuse(ctx, 'duplicates another tag', [i]);
      });
    })
    .meta({
      maxItems: LIMITS.tagsMax,
      uniqueItems: true,
      description: 'unique ignoring case; no commas',
      items: { type: 'string', minLength: 1, maxLength: LIMITS.tagMax, pattern: TAG },
    })
    // Tags are case-insensitive: "Work" after "work" is the same tag, kept once as first written.
    .transform((value) => {
      const seen = new Set<string>();
      const tags: string[] = [];
      for (const raw of value as string[]) {
        const tag = raw.trim().normalize('NFC');
        if (seen.has(tag.toLowerCase())) continue;
        seen.add(tag.toLowerCase());
        tags.push(tag);
      }
      return tags;
    }),
  due_date: z
    .unknown()
    .transform((value, ctx) => {
      if (value === null) return null;
      const due = parseInstant(value);
      if (due === null) refuse(ctx, INSTANT_HINT);
      return due;
    })
    .meta({ ...instantDoc, type: ['string', 'null'] }),
  reminders: z
    .unknown()
    .transform((value, ctx) => {
      if (value === null) return null;
      if (!Array.isArray(value))
        return refuse(ctx, 'must be an array of ISO 8601 durations (PT1H) or instants, or null');
      if (value.length > LIMITS.remindersMax)
        return refuse(ctx, `must have at most ${LIMITS.remindersMax} reminders`);
      const out: string[] = [];
      value.forEach((raw: unknown, i) => {
        if (typeof raw !== 'string') return refuse(ctx, 'must be a string', [i]);
        const canonical = isOffsetSpec(raw) ? (offsetOf(raw)?.text ?? null) : parseInstant(raw);
        if (canonical !== null) return out.push(canonical);
        refuse(
          ctx,
          isOffsetSpec(raw)
            ? `must be a positive ISO 8601 duration of weeks, days, hours or minutes up to ${LIMITS.reminderOffsetMaxDays} days (e.g. PT1H, P1D)`
            : `must be an ISO 8601 duration (PT1H) or an instant; ${INSTANT_HINT}`,
          [i],
        );
      });
      return [...new Set(out)];
    })
    .meta({
      type: ['array', 'null'],
      maxItems: LIMITS.remindersMax,
      items: { anyOf: [offsetDoc, instantDoc] },
      description: 'Offsets before due (ISO 8601 durations: PT1H, P1D) or instants; null = your default',
    }),
  recurrence: z.unknown().meta(recurrenceDoc),
} as const;

/**
 * The fields of the user's settings (PUT /api/me/settings, the MCP tool update_settings): their time zone
 * and the reminder offsets of tasks that name none.
 */
export const SETTINGS_FIELDS = {
  timezone: z
    .unknown()
    .check((ctx) => {
      if (!isTimeZone(ctx.value)) refuse(ctx, 'must be an IANA time zone such as Europe/Berlin');
    })
    .transform((v) => canonicalTimeZone(v as string) ?? (v as string)) // stored as IANA spells it
    .meta(timeZoneDoc('an IANA time zone')),
  default_reminders: z
    .unknown()
    .check((ctx) => {
      const value = ctx.value;
      if (!Array.isArray(value) || value.length > LIMITS.remindersMax)
        return refuse(ctx, `must be an array of up to ${LIMITS.remindersMax} ISO 8601 durations`);
      value.forEach((r: unknown, i) => {
        if (typeof r !== 'string' || !offsetOf(r))
          refuse(ctx, 'must be a positive ISO 8601 duration such as PT1H', [i]);
      });
    })
    .meta({ type: 'array', maxItems: LIMITS.remindersMax, items: offsetDoc }),
} as const;
