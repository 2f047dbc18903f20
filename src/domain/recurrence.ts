/**
 * Recurrence engine: a small, pure RFC 5545 RRULE evaluator over wall-clock time in an IANA zone.
 *
 * Pure: no I/O and no clock reads; every instant is passed in. See docs/adr/0003-recurrence-engine.md for
 * the policies (month-end, DST, schedule vs after_completion, limits).
 *
 * Internally, calendar dates are plain integers (days since 1970-01-01, proleptic Gregorian), which keeps the
 * per-day rule matching cheap; Temporal is used only to map local date-times to instants in the rule's zone.
 */
import { Temporal } from 'temporal-polyfill';
import { commaList } from './text.ts';
import { canonicalTimeZone } from './time.ts';

// ---------------------------------------------------------------------------------------------------------
// Public types

/** The largest `interval` and `count` a rule may have (RRULE gives no bound; nine digits keep them exact). */
export const RECURRENCE_NUMBER_MAX = 999_999_999;
/** What INTERVAL may be, as an error says it. */
const NUMBER_RANGE = `must be an integer from 1 to ${RECURRENCE_NUMBER_MAX.toLocaleString('en-US')}`;
/**
 * The largest COUNT a new rule may have (27 years of a daily task). The next occurrence of a COUNT rule is found
 * by counting the occurrences from its anchor, so COUNT bounds that work: a rule of 24 times a day anchored in
 * year 1 with COUNT=999999999 counted 17.5 million occurrences, and held the event loop 8 s at each skip and
 * completion. A rule stored before this limit is read back without it.
 */
export const RECURRENCE_COUNT_MAX = 10_000;
const COUNT_RANGE = `must be an integer from 1 to ${RECURRENCE_COUNT_MAX.toLocaleString('en-US')}`;
export type RecurrencePreset = 'daily' | 'weekdays' | 'weekly' | 'monthly' | 'yearly';
export type RecurrenceMode = 'schedule' | 'after_completion';

export const RECURRENCE_PRESETS: readonly RecurrencePreset[] = [
  'daily',
  'weekdays',
  'weekly',
  'monthly',
  'yearly',
];
export const RECURRENCE_MODES: readonly RecurrenceMode[] = ['schedule', 'after_completion'];

/** The normalized recurrence stored on a task. */
export interface Recurrence {
  /** Canonical RRULE value (no `RRULE:` prefix), e.g. `FREQ=WEEKLY;INTERVAL=2;BYDAY=MO`. UNTIL is always UTC. */
  rrule: string;
  /** Default `schedule`. */
  mode: RecurrenceMode;
  /** IANA zone in which the rule's wall-clock times are evaluated. */
  timezone: string;
  /** Kept when the input was a preset, for display. */
  preset?: RecurrencePreset;
}

/** A problem with client input; `path` is like `recurrence.rrule`. */
export interface RecurrenceIssue {
  path: string;
  message: string;
}

export type ParseRecurrenceResult =
  { ok: true; value: Recurrence } | { ok: false; issues: RecurrenceIssue[] };

/** Where a series stands when one of its tasks is completed. All instants are ISO-8601 with offset/`Z`. */
export interface RecurrenceSeries {
  /** The first occurrence's due instant (DTSTART); fixes the local time of day and the default day/month. */
  anchor: string;
  /** Due instant of the task just completed (null: treat as the anchor). */
  previousDue: string | null;
  /** When the task was completed. */
  completedAt: string;
  /** Occurrences created so far, including the completed one (checked against COUNT). */
  occurrencesSoFar: number;
}

// ---------------------------------------------------------------------------------------------------------
// Limits

/** The years without any occurrence after which the search gives up (the series ended)... */
export const MAX_GAP_YEARS = 100;
const MAX_EMPTY_DAYS = MAX_GAP_YEARS * 366;
/** ...provided at least this many consecutive periods were empty (so rules with a huge INTERVAL still work). */
const MIN_EMPTY_PERIODS = 2;
/** No occurrence is produced after this year (keeps output in plain `YYYY-...Z` form). */
const MAX_YEAR = 9999;
/** The epoch day of MAX_YEAR's last day. */
const LAST_DAY = daysFromCivil(MAX_YEAR, 12, 31);
/** The last instant an occurrence may be (ADR 0003: nothing after year 9999, in UTC as it is stored). */
const LAST_INSTANT = Date.UTC(MAX_YEAR, 11, 31, 23, 59, 59, 999);
/** previewOccurrences returns at most this many instants. */
export const MAX_PREVIEW = 1000;
/**
 * The most times a day a rule given to the API may occur (BYHOUR values x BYMINUTE values): hourly. A to-do
 * recurs at most daily (FREQ), a few times a day with BYHOUR; with COUNT, the next occurrence is found by
 * counting every one since the anchor, so a rule firing every minute from a date decades back took seconds.
 */
export const MAX_TIMES_A_DAY = 24;
/**
 * ...and walks at most this many days from where its search starts (200 years: twice the longest gap the
 * search accepts between two occurrences). The search walks the calendar day by day (about 0.4 µs a day), so
 * a rule that occurs once in decades (a Monday that is 29 February) made a preview of 100 occurrences walk
 * 2,700 years: 0.4 s of the event loop per call. Bounded, a preview costs at most about 30 ms; a sparse
 * rule previews what falls within the 200 years.
 */
export const PREVIEW_HORIZON_DAYS = 2 * MAX_EMPTY_DAYS;

// ---------------------------------------------------------------------------------------------------------
// Parsed rule

type Freq = 'DAILY' | 'WEEKLY' | 'MONTHLY' | 'YEARLY';
const FREQS: readonly Freq[] = ['DAILY', 'WEEKLY', 'MONTHLY', 'YEARLY'];

/** ISO weekday numbers: 1 = Monday ... 7 = Sunday. */
/** RFC 5545 day codes, Monday first (Temporal's dayOfWeek 1-7). */
export const WEEKDAY_CODES = ['MO', 'TU', 'WE', 'TH', 'FR', 'SA', 'SU'] as const;

/**
 * The RRULE grammar the API documents (OpenAPI `pattern`): FREQ first, then the BYxxx parts in the order
 * this engine writes them back, each with values that always give a rule that occurs. INTERVAL, COUNT and
 * UNTIL are documented as fields of the recurrence object. The parser accepts more (any part order, lower
 * case, INTERVAL/COUNT/UNTIL/BYSETPOS inside the rule, days 29-31 with BYMONTH or YEARLY, several BYMINUTE values within
 * MAX_TIMES_A_DAY): every string of this grammar is accepted,
 * so a client that keeps to the document is never refused (schemathesis checks it both ways).
 */
export const RRULE_DOC_PATTERN = (() => {
  const day = `(?:${WEEKDAY_CODES.join('|')})`;
  const byMonth = `(?:;BYMONTH=${commaList('(?:[1-9]|1[0-2])')})?`;
  // 1-28 from either end of the month: every month has those days, so any BYMONTH combination occurs.
  const byMonthDay = `;BYMONTHDAY=${commaList('-?(?:[1-9]|1[0-9]|2[0-8])')}`;
  // Every month, any day: some month has each of 29-31 ("monthly on the 31st" skips the shorter months).
  const anyMonthDay = `;BYMONTHDAY=${commaList('-?(?:[1-9]|[12][0-9]|3[01])')}`;
  const byDay = `;BYDAY=${commaList(day)}`;
  // Any, or the 1st-4th or last-4th, weekday of a month or year: every month has four of each weekday.
  const byOrdinalDay = `;BYDAY=${commaList(`(?:-?[1-4])?${day}`)}`;
  // One minute: 24 hours at most, the times a day a rule may give (MAX_TIMES_A_DAY).
  const tail = `(?:;BYHOUR=${commaList('(?:1?[0-9]|2[0-3])')})?(?:;BYMINUTE=[1-5]?[0-9])?(?:;WKST=${day})?`;
  return (
    `^(?:FREQ=DAILY${byMonth}(?:${byMonthDay})?(?:${byDay})?${tail}` +
    `|FREQ=WEEKLY${byMonth}(?:${byDay})?${tail}` +
    `|FREQ=MONTHLY${anyMonthDay}(?:${byDay})?${tail}` +
    `|FREQ=(?:MONTHLY|YEARLY)${byMonth}(?:${byMonthDay}(?:${byDay})?|${byOrdinalDay})?${tail})$`
  );
})();

interface ByDay {
  weekday: number;
  /** e.g. 2 for 2TU, -1 for -1FR; null for a plain weekday. */
  ordinal: number | null;
}

interface ParsedRule {
  freq: Freq;
  interval: number;
  count: number | null;
  /** Inclusive upper bound, epoch milliseconds (whole seconds). */
  untilMs: number | null;
  byMonth: number[] | null;
  byMonthDay: number[] | null;
  byDay: ByDay[] | null;
  byHour: number[] | null;
  byMinute: number[] | null;
  bySetPos: number[] | null;
  wkst: number;
}

type PartName =
  | 'FREQ'
  | 'INTERVAL'
  | 'COUNT'
  | 'UNTIL'
  | 'BYMONTH'
  | 'BYMONTHDAY'
  | 'BYDAY'
  | 'BYHOUR'
  | 'BYMINUTE'
  | 'BYSETPOS'
  | 'WKST';

const KNOWN_PARTS: readonly PartName[] = [
  'FREQ',
  'INTERVAL',
  'COUNT',
  'UNTIL',
  'BYMONTH',
  'BYMONTHDAY',
  'BYDAY',
  'BYHOUR',
  'BYMINUTE',
  'BYSETPOS',
  'WKST',
];
const UNSUPPORTED_PARTS = ['BYSECOND', 'BYYEARDAY', 'BYWEEKNO'];

export const PRESET_RRULES: Record<RecurrencePreset, string> = {
  daily: 'FREQ=DAILY',
  weekdays: 'FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR',
  weekly: 'FREQ=WEEKLY',
  monthly: 'FREQ=MONTHLY',
  yearly: 'FREQ=YEARLY',
};

/** A rule without its INTERVAL, COUNT and UNTIL, upper case, to compare with a preset's (PRESET_RRULES). */
function presetRuleOf(rrule: string): string {
  return rrule
    .toUpperCase()
    .replace(/^RRULE:/, '')
    .split(';')
    .filter((part) => part !== '' && !/^(?:INTERVAL|COUNT|UNTIL)=/.test(part))
    .join(';');
}

// ---------------------------------------------------------------------------------------------------------
// Civil-date arithmetic (proleptic Gregorian, days since 1970-01-01)

const DAY_MS = 86_400_000;

function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const mp = (m + 9) % 12;
  const doy = Math.floor((153 * mp + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

interface CivilDate {
  y: number;
  m: number;
  d: number;
}

function civilFromDays(days: number): CivilDate {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return { y: yoe + era * 400 + (m <= 2 ? 1 : 0), m, d };
}

const isLeapYear = (y: number): boolean => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;

function daysInMonth(y: number, m: number): number {
  if (m === 2) return isLeapYear(y) ? 29 : 28;
  return m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
}

/** ISO weekday of an epoch day (1970-01-01 was a Thursday = 4). */
const weekdayOf = (days: number): number => ((((days + 3) % 7) + 7) % 7) + 1;

// ---------------------------------------------------------------------------------------------------------
// Time zones and instants

const ZONE_SHAPE = /^[A-Za-z][A-Za-z0-9_+-]*(?:\/[A-Za-z0-9_+-]+)*$/;

/** The canonical id of an IANA zone name (case-normalized), or null. Offsets like `+05:30` are rejected. */
function normalizeTimeZone(tz: unknown): string | null {
  if (typeof tz !== 'string' || tz.length > 64 || !ZONE_SHAPE.test(tz)) return null;
  return canonicalTimeZone(tz);
}

/** A wall-clock date-time with its epoch day. */
interface LocalDateTime {
  day: number;
  y: number;
  m: number;
  d: number;
  hour: number;
  minute: number;
  second: number;
  millisecond: number;
}

function toLocal(epochMs: number, tz: string): LocalDateTime {
  const z = Temporal.Instant.fromEpochMilliseconds(epochMs).toZonedDateTimeISO(tz);
  return {
    day: daysFromCivil(z.year, z.month, z.day),
    y: z.year,
    m: z.month,
    d: z.day,
    hour: z.hour,
    minute: z.minute,
    second: z.second,
    millisecond: z.millisecond,
  };
}

/**
 * Local wall-clock time → instant. DST policy: `disambiguation: 'compatible'` — a time inside a spring-forward
 * gap is shifted forward by the gap length (02:30 → 03:30), an ambiguous fall-back time takes the earlier
 * instant (the first 01:30).
 */
function localToEpochMs(
  tz: string,
  y: number,
  m: number,
  d: number,
  hour: number,
  minute: number,
  second: number,
  millisecond: number,
): number {
  return new Temporal.PlainDateTime(y, m, d, hour, minute, second, millisecond).toZonedDateTime(tz, {
    disambiguation: 'compatible',
  }).epochMilliseconds;
}

/**
 * `localToEpochMs` for the times of one day after another, at `second` and `millisecond` past each minute: a
 * day 24 hours long (no DST transition in it) gives each of its times by arithmetic from its midnight, one or
 * two conversions per day instead of one per time (about 5 µs each). With COUNT, a rule that fires hourly from an
 * anchor decades back counts every occurrence since (1.8 s for 40 years before this).
 */
function localClock(tz: string, second: number, millisecond: number) {
  const midnightOf = (day: number) => {
    const c = civilFromDays(day);
    return localToEpochMs(tz, c.y, c.m, c.d, 0, 0, 0, 0);
  };
  let cachedDay = Number.NaN;
  let midnight = 0;
  let nextMidnight = 0;
  let regular = false;
  return {
    instant(day: number, hour: number, minute: number): number {
      if (day !== cachedDay) {
        midnight = day === cachedDay + 1 ? nextMidnight : midnightOf(day); // day after day: one conversion
        nextMidnight = midnightOf(day + 1);
        cachedDay = day;
        regular = nextMidnight - midnight === DAY_MS;
      }
      if (regular) return midnight + ((hour * 60 + minute) * 60 + second) * 1000 + millisecond;
      const c = civilFromDays(day);
      return localToEpochMs(tz, c.y, c.m, c.d, hour, minute, second, millisecond);
    },
  };
}

/** Parses an ISO-8601 instant (offset or `Z` required) to epoch ms, or null. */
function instantMs(value: unknown): number | null {
  if (typeof value !== 'string') return null;
  try {
    return Temporal.Instant.from(value).epochMilliseconds;
  } catch {
    return null;
  }
}

function requireInstant(value: string, name: string): number {
  const ms = instantMs(value);
  if (ms === null)
    throw new RangeError(`${name} must be an ISO-8601 instant with offset, got ${JSON.stringify(value)}`);
  return ms;
}

const toIso = (epochMs: number): string => new Date(epochMs).toISOString();

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** RFC 5545 UTC date-time form: 20260331T235959Z. */
function formatUntil(epochMs: number): string {
  const t = new Date(epochMs);
  return (
    `${pad(t.getUTCFullYear(), 4)}${pad(t.getUTCMonth() + 1)}${pad(t.getUTCDate())}` +
    `T${pad(t.getUTCHours())}${pad(t.getUTCMinutes())}${pad(t.getUTCSeconds())}Z`
  );
}

// ---------------------------------------------------------------------------------------------------------
// RRULE parsing

interface RRuleParse {
  rule: ParsedRule | null;
  errors: string[];
  explicit: Set<PartName>;
}

function parseIntList(
  name: string,
  raw: string,
  min: number,
  max: number,
  allowNegative: boolean,
  errors: string[],
): number[] | null {
  const out: number[] = [];
  for (const item of raw.split(',')) {
    const n = Number(item);
    const inRange = (n >= min && n <= max) || (allowNegative && n >= -max && n <= -min);
    if (!/^[+-]?\d{1,3}$/.test(item) || !inRange) {
      const range = allowNegative ? `${min}..${max} or -${max}..-${min}` : `${min}..${max}`;
      errors.push(`${name} values must be integers in ${range}, got ${JSON.stringify(item)}`);
      return null;
    }
    if (!out.includes(n)) out.push(n);
  }
  return out.sort((a, b) => a - b);
}

function parsePositiveInt(name: string, raw: string, errors: string[]): number | null {
  if (!/^\d{1,9}$/.test(raw) || Number(raw) < 1) {
    errors.push(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
    return null;
  }
  return Number(raw);
}

function parseWeekdayCode(code: string): number | null {
  const i = (WEEKDAY_CODES as readonly string[]).indexOf(code);
  return i < 0 ? null : i + 1;
}

function parseByDay(raw: string, errors: string[]): ByDay[] | null {
  const out: ByDay[] = [];
  for (const item of raw.split(',')) {
    const match = /^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$/.exec(item);
    const weekday = match?.[2] === undefined ? null : parseWeekdayCode(match[2]);
    if (!match || weekday === null) {
      errors.push(`BYDAY values must be weekdays like MO or 2TU or -1FR, got ${JSON.stringify(item)}`);
      return null;
    }
    const ordinal = match[1] === undefined ? null : Number(match[1]);
    if (ordinal !== null && (ordinal === 0 || Math.abs(ordinal) > 53)) {
      errors.push(`BYDAY ordinal must be 1..53 or -53..-1, got ${JSON.stringify(item)}`);
      return null;
    }
    if (!out.some((b) => b.weekday === weekday && b.ordinal === ordinal)) out.push({ weekday, ordinal });
  }
  return out.sort((a, b) => a.weekday - b.weekday || (a.ordinal ?? -100) - (b.ordinal ?? -100));
}

/** UNTIL: `YYYYMMDDTHHMMSSZ` (UTC), `YYYYMMDDTHHMMSS` (local in the rule zone) or `YYYYMMDD` (end of that local day). */
function parseUntil(raw: string, tz: string, errors: string[]): number | null {
  const match = /^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z?))?$/.exec(raw);
  const bad = (): null => {
    errors.push(
      `UNTIL must be a date-time like 20261231T235959Z (or a date like 20261231), got ${JSON.stringify(raw)}`,
    );
    return null;
  };
  if (!match) return bad();
  const [y, m, d] = [Number(match[1]), Number(match[2]), Number(match[3])];
  if (m < 1 || m > 12 || d < 1 || d > daysInMonth(y, m)) return bad();
  if (match[4] === undefined) {
    // Date form: inclusive through the end of that local day.
    const nextDay = civilFromDays(daysFromCivil(y, m, d) + 1);
    const ms =
      Temporal.PlainDate.from({ year: nextDay.y, month: nextDay.m, day: nextDay.d }).toZonedDateTime({
        timeZone: tz,
      }).epochMilliseconds - 1000;
    return withinYears(ms, raw, tz, errors);
  }
  const [hh, mm, ss] = [Number(match[4]), Number(match[5]), Number(match[6])];
  if (hh > 23 || mm > 59 || ss > 59) return bad();
  // By calendar arithmetic, not Date.UTC, which reads a year 0-99 as 1900-1999 (UNTIL=00991231 became 1999).
  const ms =
    match[7] === 'Z'
      ? daysFromCivil(y, m, d) * DAY_MS + ((hh * 60 + mm) * 60 + ss) * 1000
      : localToEpochMs(tz, y, m, d, hh, mm, ss, 0);
  return withinYears(ms, raw, tz, errors);
}

/**
 * UNTIL is stored in UTC (YYYYMMDDTHHMMSSZ), so one read in a zone west of UTC past 9999-12-31 would be stored
 * as year 10000, and one east of UTC before year 1 as a negative year ("00-1"): forms no parser reads back
 * (every later read of the task's rule failed; the create's own check answered 500).
 */
function withinYears(ms: number, raw: string, tz: string, errors: string[]): number | null {
  const year = new Date(ms).getUTCFullYear();
  if (year >= 1 && year <= MAX_YEAR) return ms;
  errors.push(
    year < 1
      ? `UNTIL ${raw} (in ${tz}) is before 0001-01-01T00:00:00Z; UNTIL is kept in UTC, so it must be at least that`
      : `UNTIL ${raw} (in ${tz}) is after 9999-12-31T23:59:59Z; UNTIL is kept in UTC, so it must be at most that`,
  );
  return null;
}

function parseRRule(text: string, tz: string): RRuleParse {
  const errors: string[] = [];
  const explicit = new Set<PartName>();
  const body = text.trim().replace(/^RRULE:/i, '');
  if (body.trim() === '')
    return { rule: null, errors: ['must not be empty (e.g. FREQ=WEEKLY;BYDAY=MO)'], explicit };

  let freq: Freq | null = null;
  const rule: Omit<ParsedRule, 'freq'> = {
    interval: 1,
    count: null,
    untilMs: null,
    byMonth: null,
    byMonthDay: null,
    byDay: null,
    byHour: null,
    byMinute: null,
    bySetPos: null,
    wkst: 1,
  };

  for (const segment of body.split(';')) {
    if (segment.trim() === '') continue;
    const eq = segment.indexOf('=');
    if (eq <= 0) {
      errors.push(`malformed part ${JSON.stringify(segment)} (expected NAME=VALUE)`);
      continue;
    }
    const rawName = segment.slice(0, eq).trim().toUpperCase();
    const value = segment
      .slice(eq + 1)
      .trim()
      .toUpperCase();
    if (UNSUPPORTED_PARTS.includes(rawName)) {
      errors.push(`${rawName} is not supported`);
      continue;
    }
    if (!(KNOWN_PARTS as readonly string[]).includes(rawName)) {
      errors.push(`unknown part ${JSON.stringify(rawName)}; supported: ${KNOWN_PARTS.join(', ')}`);
      continue;
    }
    const name = rawName as PartName;
    if (explicit.has(name)) {
      errors.push(`${name} appears more than once`);
      continue;
    }
    explicit.add(name);
    if (value === '') {
      errors.push(`${name} has no value`);
      continue;
    }
    switch (name) {
      case 'FREQ':
        if ((FREQS as readonly string[]).includes(value)) freq = value as Freq;
        else if (value === 'SECONDLY' || value === 'MINUTELY' || value === 'HOURLY')
          errors.push(
            `FREQ=${value} is not supported: tasks recur at most daily (use FREQ=DAILY, with BYHOUR for several times a day)`,
          );
        else errors.push(`FREQ must be one of ${FREQS.join(', ')}, got ${JSON.stringify(value)}`);
        break;
      case 'INTERVAL': {
        const n = parsePositiveInt('INTERVAL', value, errors);
        if (n !== null) rule.interval = n;
        break;
      }
      case 'COUNT':
        rule.count = parsePositiveInt('COUNT', value, errors);
        break;
      case 'UNTIL':
        rule.untilMs = parseUntil(value, tz, errors);
        break;
      case 'BYMONTH':
        rule.byMonth = parseIntList('BYMONTH', value, 1, 12, false, errors);
        break;
      case 'BYMONTHDAY':
        rule.byMonthDay = parseIntList('BYMONTHDAY', value, 1, 31, true, errors);
        break;
      case 'BYDAY':
        rule.byDay = parseByDay(value, errors);
        break;
      case 'BYHOUR':
        rule.byHour = parseIntList('BYHOUR', value, 0, 23, false, errors);
        break;
      case 'BYMINUTE':
        rule.byMinute = parseIntList('BYMINUTE', value, 0, 59, false, errors);
        break;
      case 'BYSETPOS':
        rule.bySetPos = parseIntList('BYSETPOS', value, 1, 366, true, errors);
        break;
      case 'WKST': {
        const wd = parseWeekdayCode(value);
        if (wd === null) errors.push(`WKST must be a weekday (MO..SU), got ${JSON.stringify(value)}`);
        else rule.wkst = wd;
        break;
      }
    }
  }

  if (!explicit.has('FREQ')) errors.push('FREQ is required (DAILY, WEEKLY, MONTHLY or YEARLY)');
  if (freq === null) return { rule: null, errors, explicit };
  const parsed: ParsedRule = { freq, ...rule };
  errors.push(...crossCheck(parsed, explicit));
  return { rule: errors.length === 0 ? parsed : null, errors, explicit };
}

/** RFC 5545 constraints between parts. */
function crossCheck(rule: ParsedRule, explicit: Set<PartName>): string[] {
  const errors: string[] = [];
  if (explicit.has('COUNT') && explicit.has('UNTIL'))
    errors.push('COUNT and UNTIL must not both be set (RFC 5545)');
  if (rule.freq === 'WEEKLY' && explicit.has('BYMONTHDAY'))
    errors.push('BYMONTHDAY is not allowed with FREQ=WEEKLY (RFC 5545)');
  const ordinals = (rule.byDay ?? []).filter((b) => b.ordinal !== null);
  if (ordinals.length > 0) {
    if (rule.freq === 'DAILY' || rule.freq === 'WEEKLY')
      errors.push(`BYDAY ordinals like 2TU are only allowed with FREQ=MONTHLY or FREQ=YEARLY`);
    else if (
      (rule.freq === 'MONTHLY' || explicit.has('BYMONTH')) &&
      ordinals.some((b) => Math.abs(b.ordinal ?? 0) > 5)
    )
      errors.push('BYDAY ordinal must be 1..5 or -5..-1 within a month');
  }
  if (!monthDaysPossible(rule.byMonth, rule.byMonthDay))
    errors.push(
      `BYMONTHDAY=${rule.byMonthDay?.join(',')} never occurs in BYMONTH=${rule.byMonth?.join(',')}`,
    );
  if (
    explicit.has('BYSETPOS') &&
    !['BYMONTH', 'BYMONTHDAY', 'BYDAY', 'BYHOUR', 'BYMINUTE'].some((p) => explicit.has(p as PartName))
  )
    errors.push('BYSETPOS requires another BYxxx part (e.g. BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1)');
  return errors;
}

/** Whether some month in `byMonth` (all months if null) has one of the days in `byMonthDay`. */
function monthDaysPossible(byMonth: number[] | null, byMonthDay: number[] | null): boolean {
  if (byMonthDay === null) return true;
  const longest = (m: number): number => (m === 2 ? 29 : daysInMonth(2001, m));
  return (byMonth ?? [1]).some((m) => byMonthDay.some((v) => Math.abs(v) <= longest(m)));
}

function formatRRule(rule: ParsedRule): string {
  const parts = [`FREQ=${rule.freq}`];
  if (rule.interval > 1) parts.push(`INTERVAL=${rule.interval}`);
  if (rule.count !== null) parts.push(`COUNT=${rule.count}`);
  if (rule.untilMs !== null) parts.push(`UNTIL=${formatUntil(rule.untilMs)}`);
  if (rule.byMonth) parts.push(`BYMONTH=${rule.byMonth.join(',')}`);
  if (rule.byMonthDay) parts.push(`BYMONTHDAY=${rule.byMonthDay.join(',')}`);
  if (rule.byDay)
    parts.push(
      `BYDAY=${rule.byDay.map((b) => `${b.ordinal ?? ''}${WEEKDAY_CODES[b.weekday - 1] ?? ''}`).join(',')}`,
    );
  if (rule.byHour) parts.push(`BYHOUR=${rule.byHour.join(',')}`);
  if (rule.byMinute) parts.push(`BYMINUTE=${rule.byMinute.join(',')}`);
  if (rule.bySetPos) parts.push(`BYSETPOS=${rule.bySetPos.join(',')}`);
  if (rule.wkst !== 1) parts.push(`WKST=${WEEKDAY_CODES[rule.wkst - 1] ?? 'MO'}`);
  return parts.join(';');
}

// ---------------------------------------------------------------------------------------------------------
// parseRecurrence

const OBJECT_KEYS = ['rrule', 'preset', 'interval', 'mode', 'timezone', 'until', 'count'] as const;

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export const isRecurrencePreset = (v: unknown): v is RecurrencePreset =>
  typeof v === 'string' && (RECURRENCE_PRESETS as readonly string[]).includes(v);

/**
 * Validates and normalizes a client's `recurrence` value (a preset string or an object, see the ADR).
 * `null` fields in the object count as absent. Never throws; all problems are reported as issues.
 * `stored`: the rule was stored before the limits of a new one (MAX_TIMES_A_DAY, RECURRENCE_COUNT_MAX) and is
 * read back without them.
 */
export function parseRecurrence(
  input: unknown,
  defaultTimezone: string,
  opts: { stored?: boolean } = {},
): ParseRecurrenceResult {
  try {
    return parseRecurrenceUnchecked(
      input,
      defaultTimezone,
      opts.stored ? Infinity : MAX_TIMES_A_DAY,
      opts.stored ? RECURRENCE_NUMBER_MAX : RECURRENCE_COUNT_MAX,
    );
  } catch (err) {
    // Defensive: nothing above is expected to throw, but bad input must never escape as an exception.
    return { ok: false, issues: [{ path: 'recurrence', message: `is invalid: ${(err as Error).message}` }] };
  }
}

function parseRecurrenceUnchecked(
  input: unknown,
  defaultTimezone: string,
  timesADayMax: number,
  countMax: number,
): ParseRecurrenceResult {
  const issues: RecurrenceIssue[] = [];
  const issue = (path: string, message: string): void => {
    issues.push({ path: path === '' ? 'recurrence' : `recurrence.${path}`, message });
  };
  const presetList = RECURRENCE_PRESETS.join(', ');

  if (typeof input === 'string') {
    if (!isRecurrencePreset(input)) {
      issue('', `unknown preset ${JSON.stringify(input)}; expected one of ${presetList} or an object`);
      return { ok: false, issues };
    }
    input = { preset: input };
  }
  if (!isPlainObject(input)) {
    issue('', `must be a preset string (${presetList}) or an object with rrule or preset`);
    return { ok: false, issues };
  }

  const obj = input;
  for (const key of Object.keys(obj)) {
    if (!(OBJECT_KEYS as readonly string[]).includes(key))
      issue(key, `unknown field; allowed: ${OBJECT_KEYS.join(', ')}`);
  }
  const field = (key: (typeof OBJECT_KEYS)[number]): unknown => (obj[key] === null ? undefined : obj[key]);

  // timezone
  const tzInput = field('timezone');
  let timezone: string | null;
  if (tzInput === undefined) {
    timezone = normalizeTimeZone(defaultTimezone);
    if (timezone === null)
      issue(
        'timezone',
        `the default time zone ${JSON.stringify(defaultTimezone)} is not a valid IANA zone; set timezone`,
      );
  } else {
    timezone = normalizeTimeZone(tzInput);
    if (timezone === null)
      issue('timezone', `must be an IANA time zone name like Europe/Berlin, got ${JSON.stringify(tzInput)}`);
  }
  const tz = timezone ?? 'UTC';

  // mode
  const modeInput = field('mode');
  let mode: RecurrenceMode = 'schedule';
  if (modeInput !== undefined) {
    if (typeof modeInput === 'string' && (RECURRENCE_MODES as readonly string[]).includes(modeInput))
      mode = modeInput as RecurrenceMode;
    else issue('mode', `must be one of ${RECURRENCE_MODES.join(', ')}`);
  }

  // interval / count / until fields
  const intervalInput = field('interval');
  let interval: number | null = null;
  if (intervalInput !== undefined) {
    if (
      typeof intervalInput === 'number' &&
      Number.isInteger(intervalInput) &&
      intervalInput >= 1 &&
      intervalInput <= RECURRENCE_NUMBER_MAX
    )
      interval = intervalInput;
    else issue('interval', NUMBER_RANGE);
  }
  const countInput = field('count');
  let count: number | null = null;
  if (countInput !== undefined) {
    if (
      typeof countInput === 'number' &&
      Number.isInteger(countInput) &&
      countInput >= 1 &&
      countInput <= countMax
    )
      count = countInput;
    else issue('count', COUNT_RANGE);
  }
  const untilInput = field('until');
  let untilMs: number | null = null;
  if (untilInput !== undefined) {
    const ms = instantMs(untilInput);
    // RRULE UNTIL has whole-second precision; round up so the bound stays inclusive. The year is checked after
    // rounding: 9999-12-31T23:59:59.5Z rounds into year 10000, whose UNTIL (100000101T000000Z) no parser reads.
    const rounded = ms === null ? null : Math.ceil(ms / 1000) * 1000;
    if (rounded === null)
      issue('until', 'must be an ISO-8601 instant with offset, e.g. 2026-12-31T23:59:59Z');
    else if (new Date(rounded).getUTCFullYear() > MAX_YEAR || rounded < 0)
      issue('until', 'must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z (rounded up to the second)');
    else untilMs = rounded;
  }
  if (countInput !== undefined && untilInput !== undefined)
    issue('until', 'count and until must not both be set (RFC 5545 forbids COUNT with UNTIL)');

  // rrule / preset
  const rruleInput = field('rrule');
  const presetInput = field('preset');
  let preset: RecurrencePreset | undefined;
  let source: string | null = null;
  if (rruleInput !== undefined && presetInput !== undefined) {
    // The form a task is read in (its rule, and the preset it was made from) is taken back when the two agree:
    // a client that sends a task back as it read it (a PUT of the whole task) was refused.
    if (
      typeof rruleInput === 'string' &&
      rruleInput.length <= 1000 &&
      isRecurrencePreset(presetInput) &&
      presetRuleOf(rruleInput) === PRESET_RRULES[presetInput]
    ) {
      preset = presetInput;
      source = rruleInput;
    } else
      issue(
        '',
        'set either rrule or preset, not both (both only as a task is read: the rule of that preset, with its interval, count or until)',
      );
  } else if (presetInput !== undefined) {
    if (isRecurrencePreset(presetInput)) {
      preset = presetInput;
      source = PRESET_RRULES[presetInput];
    } else issue('preset', `unknown preset ${JSON.stringify(presetInput)}; expected one of ${presetList}`);
  } else if (rruleInput !== undefined) {
    if (typeof rruleInput === 'string' && rruleInput.length <= 1000) source = rruleInput;
    else issue('rrule', 'must be an RFC 5545 RRULE string like FREQ=MONTHLY;BYMONTHDAY=-1');
  } else {
    issue('', 'either rrule or preset is required');
  }

  let rule: ParsedRule | null = null;
  if (source !== null) {
    const parsed = parseRRule(source, tz);
    for (const message of parsed.errors) issue('rrule', message);
    rule = parsed.rule;
    const timesADay = rule ? (rule.byHour?.length ?? 1) * (rule.byMinute?.length ?? 1) : 0;
    if (timesADay > timesADayMax) {
      issue(
        'rrule',
        `BYHOUR and BYMINUTE give ${timesADay} times a day; a task recurs at most ${MAX_TIMES_A_DAY} times a day (e.g. BYHOUR=9,13,17;BYMINUTE=0)`,
      );
      rule = null;
    }
    if (rule !== null && rule.count !== null && rule.count > countMax) {
      issue('rrule', `COUNT ${COUNT_RANGE}`);
      rule = null;
    }
    if (rule !== null) {
      const clash = (part: PartName, key: string): boolean => {
        if (!parsed.explicit.has(part)) return false;
        issue(key, `${part} is already set in rrule; set it in one place only`);
        return true;
      };
      if (interval !== null && !clash('INTERVAL', 'interval')) rule.interval = interval;
      if (count !== null && !clash('COUNT', 'count')) {
        if (parsed.explicit.has('UNTIL'))
          issue('count', 'rrule has UNTIL; COUNT and UNTIL must not both be set');
        rule.count = count;
      }
      if (untilMs !== null && !clash('UNTIL', 'until')) {
        if (parsed.explicit.has('COUNT'))
          issue('until', 'rrule has COUNT; COUNT and UNTIL must not both be set');
        rule.untilMs = untilMs;
      }
    }
  }

  if (issues.length > 0 || rule === null || timezone === null) return { ok: false, issues };
  const value: Recurrence = { rrule: formatRRule(rule), mode, timezone };
  if (preset !== undefined) value.preset = preset;
  return { ok: true, value };
}

// ---------------------------------------------------------------------------------------------------------
// Evaluation

interface CompiledRule {
  rule: ParsedRule;
  tz: string;
}

function compile(recurrence: Recurrence): CompiledRule {
  const tz = normalizeTimeZone(recurrence.timezone);
  if (tz === null)
    throw new RangeError(`invalid stored recurrence: unknown time zone ${recurrence.timezone}`);
  const parsed = parseRRule(recurrence.rrule, tz);
  if (parsed.rule === null)
    throw new RangeError(`invalid stored recurrence rrule: ${parsed.errors.join('; ')}`);
  return { rule: parsed.rule, tz };
}

/** The by-parts after RFC 5545 defaults derived from DTSTART (the series start). */
interface EffectiveParts {
  byMonth: number[] | null;
  byMonthDay: number[] | null;
  byDay: ByDay[] | null;
  /** Whether BYDAY ordinals count within the month (else within the year). */
  monthScope: boolean;
  /** A day of month past a month's end falls on its last day (the default day, after_completion only). */
  clampDay: boolean;
}

/**
 * `clampDefaultDay`: the day of month taken from the start (no BYDAY/BYMONTHDAY) falls on the last day of a
 * shorter month instead of skipping it: in after_completion mode the start is the completion, and "monthly"
 * done on Jan 31 is due about a month later (Feb 28), not on Mar 31; "yearly" done on Feb 29 in 2029, not 2032.
 */
function effectiveParts(rule: ParsedRule, start: LocalDateTime, clampDefaultDay = false): EffectiveParts {
  let { byMonth, byMonthDay, byDay } = rule;
  let clampDay = false;
  if (rule.freq === 'WEEKLY' && byDay === null) byDay = [{ weekday: weekdayOf(start.day), ordinal: null }];
  if ((rule.freq === 'MONTHLY' || rule.freq === 'YEARLY') && byDay === null && byMonthDay === null) {
    byMonthDay = [start.d];
    clampDay = clampDefaultDay;
    if (rule.freq === 'YEARLY' && byMonth === null) byMonth = [start.m];
  }
  return { byMonth, byMonthDay, byDay, monthScope: rule.freq === 'MONTHLY' || byMonth !== null, clampDay };
}

function dayMatches(eff: EffectiveParts, day: number, c: CivilDate): boolean {
  if (eff.byMonth !== null && !eff.byMonth.includes(c.m)) return false;
  const dim = daysInMonth(c.y, c.m);
  if (
    eff.byMonthDay !== null &&
    !eff.byMonthDay.some((v) =>
      v > 0 ? c.d === v || (eff.clampDay && v > dim && c.d === dim) : c.d === dim + v + 1,
    )
  )
    return false;
  if (eff.byDay !== null) {
    const wd = weekdayOf(day);
    let index = c.d;
    let length = dim;
    if (!eff.monthScope) {
      index = day - daysFromCivil(c.y, 1, 1) + 1;
      length = isLeapYear(c.y) ? 366 : 365;
    }
    const nth = Math.ceil(index / 7);
    const nthFromEnd = Math.floor((length - index) / 7) + 1;
    const hit = eff.byDay.some(
      (b) =>
        b.weekday === wd &&
        (b.ordinal === null || (b.ordinal > 0 ? nth === b.ordinal : nthFromEnd === -b.ordinal)),
    );
    if (!hit) return false;
  }
  return true;
}

interface Periods {
  /** First epoch day and length in days of period k (k = 0 contains DTSTART). */
  span(k: number): [first: number, length: number];
  /** The period containing an epoch day (may be negative). */
  indexOf(day: number): number;
}

function periods(rule: ParsedRule, start: LocalDateTime): Periods {
  const n = rule.interval;
  switch (rule.freq) {
    case 'DAILY':
      return { span: (k) => [start.day + k * n, 1], indexOf: (day) => Math.floor((day - start.day) / n) };
    case 'WEEKLY': {
      const weekStart = start.day - ((weekdayOf(start.day) - rule.wkst + 7) % 7);
      return {
        span: (k) => [weekStart + 7 * n * k, 7],
        indexOf: (day) => Math.floor((day - weekStart) / (7 * n)),
      };
    }
    case 'MONTHLY': {
      const month0 = start.y * 12 + start.m - 1;
      return {
        span: (k) => {
          const mi = month0 + k * n;
          const y = Math.floor(mi / 12);
          const m = mi - y * 12 + 1;
          return [daysFromCivil(y, m, 1), daysInMonth(y, m)];
        },
        indexOf: (day) => {
          const c = civilFromDays(day);
          return Math.floor((c.y * 12 + c.m - 1 - month0) / n);
        },
      };
    }
    case 'YEARLY':
      return {
        span: (k) => {
          const y = start.y + k * n;
          return [daysFromCivil(y, 1, 1), isLeapYear(y) ? 366 : 365];
        },
        indexOf: (day) => Math.floor((civilFromDays(day).y - start.y) / n),
      };
  }
}

/**
 * Occurrences of `rule` with DTSTART = `start` (local) / `startMs`, strictly after DTSTART, ascending, up to
 * UNTIL (inclusive), beginning with period `fromPeriod`. Stops when the search limits are hit, or after
 * `maxDays` days from the first period scanned.
 */
function* ruleOccurrences(
  rule: ParsedRule,
  tz: string,
  start: LocalDateTime,
  startMs: number,
  fromPeriod: number,
  maxDays = Infinity,
  clampDefaultDay = false,
): Generator<number, void, undefined> {
  const eff = effectiveParts(rule, start, clampDefaultDay);
  const hours = rule.byHour ?? [start.hour];
  const minutes = rule.byMinute ?? [start.minute];
  // e.g. BYMONTH=2 with a default BYMONTHDAY=31; a clamped default day falls in every month.
  if (!eff.clampDay && !monthDaysPossible(eff.byMonth, eff.byMonthDay)) return;
  const per = periods(rule, start);
  const untilDay = rule.untilMs === null ? null : Math.floor(rule.untilMs / DAY_MS);
  let lastHitDay: number | null = null;
  let emptyPeriods = 0;
  let lastYielded = -Infinity;
  const scanStart = per.span(Math.max(0, fromPeriod))[0];
  const clock = localClock(tz, start.second, start.millisecond);

  for (let k = Math.max(0, fromPeriod); ; k++) {
    const [first, length] = per.span(k);
    if (first - scanStart > maxDays) return;
    lastHitDay ??= first;
    if (emptyPeriods >= MIN_EMPTY_PERIODS && first - lastHitDay > MAX_EMPTY_DAYS) return;
    if (civilFromDays(first).y > MAX_YEAR) return;
    if (untilDay !== null && first > untilDay + 2) return;

    // The candidate local date-times of this period are its matching days x hours x minutes, in that order
    // (both lists sorted): the i-th is computed, never listed. A yearly rule with every hour and minute has
    // half a million per period, and BYSETPOS picks a few of them (listing them took seconds per preview).
    const days: number[] = [];
    for (let day = first; day < first + length; day++)
      if (dayMatches(eff, day, civilFromDays(day))) days.push(day);
    const perDay = hours.length * minutes.length;
    const total = days.length * perDay;
    let picks: number[] | null = null;
    if (rule.bySetPos !== null) {
      const set = new Set<number>();
      for (const pos of rule.bySetPos) {
        const i = pos > 0 ? pos - 1 : total + pos;
        if (i >= 0 && i < total) set.add(i);
      }
      picks = [...set].sort((a, b) => a - b);
    }

    // A day's times are yielded in the order of their instants: a time in a daylight-saving gap moves
    // forward (ADR 0003), past a later time of the same day when the shift is longer than the two are apart
    // (30 minutes at Lord Howe), which was then dropped as not after the last one yielded.
    let hit = false;
    const sameDay: number[] = [];
    let sameDayIs = -1; // the day of the times in sameDay
    let until = false;
    for (let j = 0, n = picks ? picks.length : total; j <= n; j++) {
      const i = j < n ? (picks ? picks[j]! : j) : -1;
      const day = i < 0 ? -1 : days[Math.floor(i / perDay)]!;
      // A day's times are flushed when the next pick is on another day, or there is none, or the search stops
      // (one well past UNTIL): the day's earlier times may still be within it (a 25-hour day).
      if (sameDay.length && (i < 0 || until || day !== sameDayIs))
        for (const ms of sameDay.splice(0).sort((a, b) => a - b)) {
          if (ms <= lastYielded) continue;
          if (rule.untilMs !== null && ms > rule.untilMs) return;
          hit = true;
          lastYielded = ms;
          yield ms;
        }
      if (i < 0 || until) break;
      const hour = hours[Math.floor((i % perDay) / minutes.length)]!;
      const minute = minutes[i % minutes.length]!;
      if (day > LAST_DAY) return;
      // After DTSTART on the calendar (RFC 5545), not only as an instant: on the first day, a time before the
      // start's that a gap moves past it is not an occurrence.
      if (day < start.day || (day === start.day && hour * 60 + minute < start.hour * 60 + start.minute))
        continue;
      const ms = clock.instant(day, hour, minute);
      // West of UTC the last local day of 9999 ends in year 10000: not storable (the day's end ends the loop).
      if (ms <= startMs || ms > LAST_INSTANT) continue;
      if (rule.untilMs !== null && ms > rule.untilMs + DAY_MS) until = true;
      sameDay.push(ms);
      sameDayIs = day;
    }
    if (hit) {
      lastHitDay = first;
      emptyPeriods = 0;
    } else emptyPeriods++;
  }
}

/** First period worth scanning for occurrences after `afterMs` (one period of slack for DST shifts). */
function periodBefore(rule: ParsedRule, tz: string, start: LocalDateTime, afterMs: number): number {
  return Math.max(0, periods(rule, start).indexOf(toLocal(afterMs, tz).day) - 1);
}

/**
 * The next due instant of a series (ISO, `.000Z`), or null when the series has ended (COUNT/UNTIL exhausted,
 * or no occurrence within the search limits).
 *
 * - `schedule`: the first occurrence of the series (anchor + RRULE) strictly after
 *   max(previousDue ?? anchor, completedAt) — occurrences missed while the task was overdue are skipped.
 *   With COUNT, skipped occurrences are consumed: the result must be among the first COUNT occurrences.
 * - `after_completion`: the rule is restarted at the completion's local date with the anchor's local time of
 *   day; the result is its first occurrence strictly after that restart point and after completedAt. A day of
 *   month taken from the completion falls on the last day of a shorter month (Jan 31 + 1 month = Feb 28).
 *
 * Throws RangeError only for malformed arguments (bad ISO instants or a corrupt stored rule).
 */
export function nextOccurrence(rule: Recurrence, series: RecurrenceSeries): string | null {
  const { rule: parsed, tz } = compile(rule);
  const anchorMs = requireInstant(series.anchor, 'anchor');
  const completedMs = requireInstant(series.completedAt, 'completedAt');
  const previousMs =
    series.previousDue === null ? anchorMs : requireInstant(series.previousDue, 'previousDue');
  if (parsed.count !== null && series.occurrencesSoFar >= parsed.count) return null;
  const anchor = toLocal(anchorMs, tz);

  if (rule.mode === 'after_completion') {
    const done = toLocal(completedMs, tz);
    const restartMs = localToEpochMs(
      tz,
      done.y,
      done.m,
      done.d,
      anchor.hour,
      anchor.minute,
      anchor.second,
      anchor.millisecond,
    );
    const restart: LocalDateTime = { ...anchor, day: done.day, y: done.y, m: done.m, d: done.d };
    const threshold = Math.max(restartMs, completedMs);
    const from = periodBefore(parsed, tz, restart, threshold);
    for (const ms of ruleOccurrences(parsed, tz, restart, restartMs, from, Infinity, true))
      if (ms > threshold) return toIso(ms);
    return null;
  }

  const threshold = Math.max(anchorMs, previousMs, completedMs);
  if (parsed.count !== null) {
    let index = 1; // the anchor is occurrence #1
    for (const ms of ruleOccurrences(parsed, tz, anchor, anchorMs, 0)) {
      if (++index > parsed.count) return null;
      if (ms > threshold) return toIso(ms);
    }
    return null;
  }
  for (const ms of ruleOccurrences(parsed, tz, anchor, anchorMs, periodBefore(parsed, tz, anchor, threshold)))
    if (ms > threshold) return toIso(ms);
  return null;
}

/**
 * The due dates a series will have from `now` on: the one completing the pending occurrence (due `due`) now
 * creates, then each next one as completing the one before on its due date would give it. What a task's
 * preview shows, so that it agrees with what completion and skip do: in `schedule` mode an overdue task's
 * missed dates are skipped (the calendar after max(due, now)), in `after_completion` mode the rule restarts
 * at the completion. At most MAX_PREVIEW; the series' COUNT counts `occurrencesSoFar` as created. `after`: the
 * instant the dates come after (the later of due and now; now in `after_completion` mode).
 */
export function upcomingOccurrences(
  rule: Recurrence,
  series: { anchor: string; due: string | null; occurrencesSoFar: number },
  now: string,
  count: number,
): { after: string; occurrences: string[] } {
  const nowMs = requireInstant(now, 'now');
  if (rule.mode !== 'after_completion') {
    const due = series.due === null ? nowMs : requireInstant(series.due, 'due');
    const after = toIso(Math.max(due, nowMs));
    // Completion stops at COUNT tasks created (nextOccurrence), whatever the pending one's place on the calendar
    // (a due date moved back puts it earlier).
    const limit = compile(rule).rule.count;
    const left = limit === null ? count : Math.min(count, Math.max(0, limit - series.occurrencesSoFar));
    return { after, occurrences: previewOccurrences(rule, series.anchor, after, left) };
  }
  const wanted = previewCount(count);
  const out: string[] = [];
  let previousDue = series.due;
  let completedAt = now;
  for (let so = Math.max(1, series.occurrencesSoFar); out.length < wanted; so++) {
    const next = nextOccurrence(rule, {
      anchor: series.anchor,
      previousDue,
      completedAt,
      occurrencesSoFar: so,
    });
    if (next === null) break;
    out.push(next);
    previousDue = next;
    completedAt = next;
  }
  return { after: toIso(nowMs), occurrences: out };
}

/** How many dates a preview gives for `count` asked: a whole number from 0 to MAX_PREVIEW. */
const previewCount = (count: number) =>
  Number.isFinite(count) ? Math.min(MAX_PREVIEW, Math.max(0, Math.floor(count))) : 0;

/**
 * The next `count` (at most MAX_PREVIEW) due instants of the series anchored at `anchor` strictly after
 * `after`, within PREVIEW_HORIZON_DAYS of where the search starts: the calendar schedule (the anchor itself is
 * occurrence #1), honoring COUNT and UNTIL. Throws RangeError only for malformed arguments.
 */
export function previewOccurrences(rule: Recurrence, anchor: string, after: string, count: number): string[] {
  const { rule: parsed, tz } = compile(rule);
  const anchorMs = requireInstant(anchor, 'anchor');
  const afterMs = requireInstant(after, 'after');
  const wanted = previewCount(count);
  const out: string[] = [];
  if (wanted === 0) return out;
  if (anchorMs > afterMs) out.push(toIso(anchorMs));
  const start = toLocal(anchorMs, tz);
  const from = parsed.count === null ? periodBefore(parsed, tz, start, Math.max(afterMs, anchorMs)) : 0;
  let index = 1;
  for (const ms of ruleOccurrences(parsed, tz, start, anchorMs, from, PREVIEW_HORIZON_DAYS)) {
    if (out.length >= wanted) break;
    if (parsed.count !== null && ++index > parsed.count) break;
    if (ms > afterMs) out.push(toIso(ms));
  }
  return out;
}

/**
 * Where a series starts (DTSTART): the task's due date, or for a task without one the instant it starts
 * from (its first completion, a skip, a preview) to the minute: "every day" from 13:20:16.123 would be due
 * at 13:20:16.123 each day.
 */
export function seriesAnchor(dueDate: string | null, at: string): string {
  if (dueDate !== null) return dueDate;
  return new Date(Math.floor(Date.parse(at) / 60_000) * 60_000).toISOString();
}
