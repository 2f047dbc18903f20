/**
 * Dates and reminders in words, for a language model that speaks for a user ("tomorrow 9am", "in 30
 * minutes", "next Friday at 17:00", "1 hour before"): read in the user's time zone, at a given now, into
 * the ISO 8601 forms the task domain takes. Pure: the clock and the zone are arguments.
 *
 * Dates are parsed by chrono-node. Its own time-zone support takes offsets and abbreviations, not IANA
 * names, and would apply today's offset to a date across a daylight-saving change; so chrono reads the
 * user's wall clock (the reference is the user's local time written as UTC) and Temporal places the wall
 * time it found in the user's zone. A text with its own offset ("9:00 +02:00") keeps it.
 *
 * chrono does its arithmetic ("in 3 hours", "tomorrow", whether "9am" is past) with Date's local-time methods,
 * in the process's zone, which the wall clock written as UTC is not: across that zone's daylight-saving
 * change (a laptop in Europe/Berlin) "in 3 hours" was 4 hours, and in a process west of UTC "Friday 9am" said
 * on Friday at 8 was the next Friday, whatever the user's zone. So chrono runs with a Date whose local time is
 * UTC (parseOnWallClock): what it reads depends on the user's zone and now only.
 */
import * as chrono from 'chrono-node';
import { Temporal } from 'temporal-polyfill';
import { PRESET_RRULES, WEEKDAY_CODES, type RecurrencePreset } from './recurrence.ts';
import { isOffsetSpec, parseInstant } from './task.ts';

export interface TimeContext {
  now: Date;
  /** IANA time zone of the user. */
  timeZone: string;
}

/** How a text was read: the instant, and the same instant on the user's wall clock (for the model to confirm). */
export interface Resolved {
  said: string;
  as: string;
  local: string;
}

/** At most this long: a due date in words is a short phrase. */
const MAX_TEXT = 100;

/**
 * An ISO 8601 instant as it is, or a date in words read in the user's zone; null when it is neither (the
 * caller's validation then names the field). `resolved` is set when words were read.
 */
export function resolveWhen(text: string, ctx: TimeContext): { instant: string; resolved?: Resolved } | null {
  const exact = parseInstant(text);
  if (exact) return { instant: exact };
  if (text.length > MAX_TEXT || text.trim() === '') return null;
  const wallAsUtc = new Date(zonedNow(ctx).toPlainDateTime().toZonedDateTime('UTC').epochMilliseconds);
  const [found] = parseOnWallClock(text, wallAsUtc);
  // The whole text must be a date: "buy milk tomorrow" is not a due date.
  if (!found || found.text.trim().length < text.trim().length) return null;
  // A sign and a number after a time is a written offset to the user, but chrono reads it as the end of a range
  // ("9:00 -05" is 9:00 to 05:00) and keeps no offset: 9:00 on the user's clock would be a misreading.
  // Only after a time, and only what an offset can be (up to 14 hours, the sign against it): "March 5-8" is a
  // range of days, "14:00-15:30" and "9:00 - 10:00" ranges of times (read as their start). So is "9:00-10:00",
  // whose end is later the same day; an end at or before the start ("9:00-05:00", which chrono moves to the
  // next day) reads as an offset as well as a range, and is refused.
  if (
    found.end &&
    /(?:\d:\d\d|\d\s*[ap]\.?m\.?)\s*[-\u2012-\u2015\u2212](?:0?\d|1[0-4])(?::?\d{2})?\s*$/i.test(
      found.text,
    ) &&
    !endsLaterSameDay(found)
  )
    return null;
  const start = found.start;
  let ms: number;
  if (offsetWritten(text, wallAsUtc, found)) ms = start.date().getTime();
  // "in 30 minutes", "2 hours from now": elapsed time from now, also across a daylight-saving change.
  else if (found.tags().has('result/relativeDateAndTime'))
    ms = ctx.now.getTime() + (start.date().getTime() - wallAsUtc.getTime());
  else {
    const wall = new Date(start.date().getTime()); // the user's wall time, as UTC fields
    // A day without a time of day is noon: chrono gives "next Friday" noon but "tomorrow", "today" and "in
    // 2 days" the time it is now. A part of the day ("tonight", "tomorrow morning") keeps chrono's hour for it.
    const dayOnly =
      !start.isCertain('hour') &&
      !found.tags().has('parser/ENCasualTimeParser') &&
      wall.getUTCHours() === wallAsUtc.getUTCHours() &&
      wall.getUTCMinutes() === wallAsUtc.getUTCMinutes();
    ms = Temporal.ZonedDateTime.from(
      {
        timeZone: ctx.timeZone,
        year: wall.getUTCFullYear(),
        month: wall.getUTCMonth() + 1,
        day: wall.getUTCDate(),
        hour: dayOnly ? 12 : wall.getUTCHours(),
        minute: dayOnly ? 0 : wall.getUTCMinutes(),
        second: dayOnly ? 0 : wall.getUTCSeconds(),
      },
      { disambiguation: 'compatible' }, // a wall time in a daylight-saving gap moves forward
    ).epochMilliseconds;
  }
  // Words name whole minutes unless they say seconds: "in 30 minutes" at 10:00:50.2 is 10:31, not 10:30:50.2,
  // whose seconds a repeat rule's occurrences carried on (RFC 5545 takes them from the due date). Up, never
  // before the time said.
  if (!/\d:\d\d:\d\d|\bsec(?:ond)?s?\b/i.test(found.text)) ms = Math.ceil(ms / 60_000) * 60_000;
  const instant = parseInstant(new Date(ms).toISOString());
  if (!instant) return null;
  return { instant, resolved: { said: text, as: instant, local: localTime(instant, ctx.timeZone) } };
}

/** Whether a range's end is after its start on the same day ("9:00-10:00"), not moved to the next by chrono. */
function endsLaterSameDay(found: chrono.ParsedResult): boolean {
  const { start, end } = found;
  if (!end) return false;
  const sameDay = (['year', 'month', 'day'] as const).every((unit) => start.get(unit) === end.get(unit));
  return sameDay && end.date().getTime() > start.date().getTime();
}

/**
 * Whether the offset chrono read is written in the text ("9am ET", "+02", "MSK", "UTC"), the text's own: chrono
 * calls the offset certain for relative times too ("in 30 minutes", "now": the reference's). A list of the
 * zones written was shorter than chrono's ("ET", "PT", "+02" were missing): chrono's instant at that offset was
 * then taken for the user's wall clock, shifted by it. A relative time takes the reference's offset (0 here): so
 * an offset other than 0 is written, and one of 0 is when the text read again with the reference at another
 * offset does not take that one ("9am UTC").
 */
function offsetWritten(text: string, wallAsUtc: Date, found: chrono.ParsedResult): boolean {
  const offset = found.start.get('timezoneOffset');
  if (offset === null || !found.start.isCertain('timezoneOffset')) return false;
  // Other than the reference's in either reading: a zone whose offset depends on the date (ET on its
  // daylight-saving day, read from a reference date that moves with the reference's offset) differs between
  // the two readings, yet is written.
  if (offset !== 0) return true;
  const [again] = parseOnWallClock(text, wallAsUtc, OTHER_REFERENCE_OFFSET);
  const second = again?.start.get('timezoneOffset');
  return second !== null && second !== undefined && second !== OTHER_REFERENCE_OFFSET;
}
/** The second reading's reference offset in minutes (the first's is 0): a relative time takes it, a written one not. */
const OTHER_REFERENCE_OFFSET = 420;

/** Date with UTC as its local time: the local-time methods chrono calls are the UTC ones. */
class UtcDate extends Date {
  constructor(...args: unknown[]) {
    // new Date(year, monthIndex, ...) reads local fields: here UTC ones.
    if (args.length >= 2) super(Date.UTC(...(args as Parameters<typeof Date.UTC>)));
    else if (args.length === 1) super(args[0] as number | string | Date);
    else super();
  }
  override getTimezoneOffset() {
    return 0;
  }
  // chrono adds months and years with setMonth and setFullYear, whose day overflows into the next month: "in a
  // month" said on 31 January was 3 March, "next month" on 31 March 1 May, "in a year" on 29 February 1 March.
  // A day the month reached does not have is its last day, as Temporal's add (overflow 'constrain') and
  // recurrence (ADR 0003) make it. A day given with the month is set as given.
  override setMonth(month: number, day?: number): number {
    return day === undefined
      ? keepDayInMonth(this, this.getUTCFullYear(), month)
      : this.setUTCMonth(month, day);
  }
  override setFullYear(year: number, month?: number, day?: number): number {
    if (month === undefined) return keepDayInMonth(this, year, this.getUTCMonth());
    return day === undefined ? this.setUTCFullYear(year, month) : this.setUTCFullYear(year, month, day);
  }
}
for (const field of ['FullYear', 'Month', 'Date', 'Day', 'Hours', 'Minutes', 'Seconds', 'Milliseconds']) {
  const proto = UtcDate.prototype as unknown as Record<string, unknown>;
  const utc = Date.prototype as unknown as Record<string, unknown>;
  proto[`get${field}`] = utc[`getUTC${field}`];
  if (!['Day', 'Month', 'FullYear'].includes(field)) proto[`set${field}`] = utc[`setUTC${field}`];
}

/** `date` moved to `month` (0-11, or beyond: 12 is next January) of `year`, its day at most that month's last. */
function keepDayInMonth(date: Date, year: number, month: number): number {
  const lastDay = new Date(0);
  lastDay.setUTCFullYear(year, month + 1, 0); // day 0 of the month after: the month's last day
  return date.setUTCFullYear(year, month, Math.min(date.getUTCDate(), lastDay.getUTCDate()));
}

/** A word that says the date meant is before now: "last Friday", "past Friday", "Friday last week". */
const BACKWARD = /\b(?:last|past|previous)\b/i;

/**
 * chrono's reading of `text` at the wall clock `wallAsUtc` (the user's local time written as UTC), its
 * arithmetic on that wall clock, not in the process's zone: chrono is run with UtcDate as the global Date
 * (chrono is synchronous, so nothing else runs meanwhile). Its results' dates are computed from their fields
 * with Date.UTC (the offset is 0), so they can be read after.
 */
function parseOnWallClock(text: string, wallAsUtc: Date, referenceOffset = 0): chrono.ParsedResult[] {
  const global = globalThis as { Date: DateConstructor };
  const saved = global.Date;
  global.Date = UtcDate as DateConstructor;
  try {
    return chrono.parse(
      text,
      { instant: new UtcDate(wallAsUtc.getTime()), timezone: referenceOffset },
      // A date said without a direction is the next one ("Friday", "March 2"); forwardDate also moved one said
      // to be past ("last Friday" was the next Friday, and a reminder for it was taken as a time to come).
      { forwardDate: !BACKWARD.test(text) },
    );
  } finally {
    global.Date = saved;
  }
}

const UNITS = '(m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)';
const BEFORE = new RegExp(
  `^\\s*(half an|an?|\\d{1,4})\\s*${UNITS}\\s+(?:before|early|earlier|ahead)\\s*$`,
  'i',
);
const UNIT: Record<string, 'M' | 'H' | 'D' | 'W'> = { m: 'M', h: 'H', d: 'D', w: 'W' };

/** Whether a reminder as given is an ISO 8601 duration (PT1H, P1D), not words that begin with a P ("past Friday"). */
export const isDurationSaid = (text: string): boolean => {
  const said = text.trim();
  return isOffsetSpec(said) && /^PT?\d/i.test(said);
};

/**
 * A reminder in words: "30 minutes before" (an offset before the due date: PT30M), or a time ("in 30
 * minutes", "tomorrow 8am": an instant). ISO 8601 durations and instants pass as they are; null when the
 * text is none of these.
 */
export function resolveReminder(
  text: string,
  ctx: TimeContext,
): { value: string; resolved?: Resolved } | null {
  // An ISO 8601 duration passes trimmed (REST refuses " PT1H"); words that begin with a P ("past Friday") are
  // read as words, not passed on as a duration.
  if (isDurationSaid(text)) return { value: text.trim() };
  const before = BEFORE.exec(text);
  if (before) {
    const value = isoDuration(before[1]!, before[2]!);
    return value
      ? { value, resolved: { said: text, as: value, local: `${value} before the due date` } }
      : null;
  }
  // A reminder in words is a time to come: "yesterday" or "5 minutes ago" is a mistake, not a reminder.
  const when = resolveWhen(text, ctx);
  if (!when || Date.parse(when.instant) <= ctx.now.getTime()) return null;
  return { value: when.instant, ...(when.resolved ? { resolved: when.resolved } : {}) };
}

/** `n` (digits, "a", "an", "half an") of a unit as an ISO 8601 duration; null for half a day or week. */
function isoDuration(amount: string, unitText: string): string | null {
  const unit = UNIT[unitText.charAt(0).toLowerCase()]!;
  if (/^half/i.test(amount)) return unit === 'H' ? 'PT30M' : unit === 'M' ? 'PT30S' : null;
  const n = /^an?$/i.test(amount) ? 1 : Number(amount);
  return unit === 'M' || unit === 'H' ? `PT${n}${unit}` : `P${n}${unit}`;
}

/** Now in the user's zone. */
const zonedNow = (ctx: TimeContext) =>
  Temporal.Instant.fromEpochMilliseconds(ctx.now.getTime()).toZonedDateTimeISO(ctx.timeZone);

/** An instant on the user's wall clock, with its offset: 2026-03-02T09:00:00+01:00. */
export function localTime(instant: string, timeZone: string): string {
  return Temporal.Instant.from(instant)
    .toZonedDateTimeISO(timeZone)
    .toString({ timeZoneName: 'never', smallestUnit: 'second' });
}

/** Now as a model needs it: the instant (UTC), the user's wall clock with its offset, and that day's weekday. */
export function nowFor(now: Date, timeZone: string): { now: string; local: string; weekday: string } {
  const iso = now.toISOString();
  const local = localTime(iso, timeZone);
  const weekday = new Date(`${local.slice(0, 10)}T00:00:00Z`).toLocaleDateString('en-US', {
    weekday: 'long',
    timeZone: 'UTC',
  });
  return { now: iso, local, weekday };
}

const DAY_NAME = '(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(?:day|nesday|sday|rsday|urday)?s?';
const TIME = '(\\d{1,2}(?::\\d{2})?\\s*(?:am|pm)?|noon|midnight)';
/** "second" is 2: a repeat's interval ("every second week") or a weekday of the month ("the second Monday"). */
const NUMBER_WORDS: Record<string, number> = { second: 2, '2nd': 2, third: 3, '3rd': 3, fourth: 4, '4th': 4 };
/** Which of the month's weekdays: -1 for the last. */
const ORDINALS: Record<string, number> = { first: 1, '1st': 1, ...NUMBER_WORDS, last: -1 };
const INTERVAL_WORDS: Record<string, number> = { other: 2, ...NUMBER_WORDS };
const INTERVAL = `(?:(${Object.keys(INTERVAL_WORDS).join('|')}|\\d{1,3})\\s+)?`;
const DAY_LIST = `(${DAY_NAME}(?:\\s*(?:,|and|&|,\\s*and)\\s*${DAY_NAME})*)`;
const EVERY_PERIOD = new RegExp(
  `^(?:every|each)\\s+${INTERVAL}(day|week|month|year|weekday)s?(?:\\s+on\\s+(?:the\\s+(\\d{1,2})(?:st|nd|rd|th)?|${DAY_LIST}))?(?:\\s+at\\s+(?:${TIME}))?$`,
  'i',
);
const EVERY_DAYS = new RegExp(`^(?:every|each)\\s+${INTERVAL}${DAY_LIST}(?:\\s+at\\s+(?:${TIME}))?$`, 'i');
/**
 * A weekday of each month: "the last Friday of every month", "every first Monday", "every 2nd Tuesday of the
 * month". Without "of the month", "every second Tuesday" is every other Tuesday (EVERY_DAYS), as it is usually
 * meant; "first" and "last" have no such reading.
 */
const MONTH_WEEKDAY = new RegExp(
  `^(?:(?:every|each)\\s+|(?:on\\s+)?the\\s+)?(${Object.keys(ORDINALS).join('|')})\\s+(${DAY_NAME})` +
    `(?:\\s+(?:of|in)\\s+(?:the|each|every|a)\\s+month)?(?:\\s+at\\s+(?:${TIME}))?$`,
  'i',
);
const PRESET_AT = new RegExp(`^(daily|weekly|monthly|yearly|weekdays)\\s+at\\s+(?:${TIME})$`, 'i');
const WEEKDAYS: readonly string[] = WEEKDAY_CODES.slice(0, 5);
/** The time of day when a rule in words names none. */
const DEFAULT_HOUR = 9;

/**
 * A repeat rule in words: "every day at 8", "every other Monday at 9", "every Tuesday and Thursday at 18:30",
 * "every weekday", "every month on the 1st", "the last Friday of every month", "every 2 weeks on Monday and
 * Wednesday", "every 3 weeks", "weekly at 7pm". The RRULE, and the first
 * occurrence on or after now in the user's zone at the time named (9:00 when none): the due date of a task
 * that names none. Null when the text is not such a rule.
 */
export function resolveRecurrence(
  text: string,
  ctx: TimeContext,
): { rrule: string; first: string; resolved: Resolved } | null {
  const said = text.trim().replace(/\s+/g, ' ');
  if (said.length > MAX_TEXT) return null;
  let freq = '';
  let presetRule: string | undefined;
  let interval = 1;
  let byDay: readonly string[] = [];
  let monthDay: number | null = null;
  /** Which of the month's `byDay` weekdays: 2 for the second, -1 for the last; null for every one. */
  let nth: number | null = null;
  let time: string | undefined;
  let m: RegExpExecArray | null;
  if ((m = EVERY_PERIOD.exec(said))) {
    interval = intervalOf(m[1]);
    const unit = m[2]!.toLowerCase();
    freq =
      unit === 'weekday'
        ? 'WEEKLY'
        : { day: 'DAILY', week: 'WEEKLY', month: 'MONTHLY', year: 'YEARLY' }[unit]!;
    if (unit === 'weekday') {
      if (interval !== 1) return null; // "every other weekday" has no RRULE that says it
      byDay = WEEKDAYS;
    }
    if (m[3] !== undefined) {
      if (freq !== 'MONTHLY') return null;
      monthDay = Number(m[3]);
      if (monthDay < 1 || monthDay > 31) return null;
    }
    if (m[4] !== undefined) {
      // "every 2 weeks on Monday and Wednesday"
      if (unit !== 'week') return null;
      byDay = dayCodes(m[4]);
    }
    time = m[5];
  } else if ((m = EVERY_DAYS.exec(said))) {
    interval = intervalOf(m[1]);
    freq = 'WEEKLY';
    byDay = dayCodes(m[2]!);
    time = m[3];
  } else if ((m = MONTH_WEEKDAY.exec(said))) {
    // Unread: "every second Tuesday" (EVERY_DAYS took it) and "the first Monday" alone, without every/of the month.
    if (!/^(?:every|each)\s/i.test(said) && !/\smonth\b/i.test(said)) return null;
    freq = 'MONTHLY';
    nth = ORDINALS[m[1]!.toLowerCase()]!;
    byDay = dayCodes(m[2]!);
    time = m[3];
  } else if ((m = PRESET_AT.exec(said))) {
    // "weekly at 7pm": the preset's own rule, at that time.
    const preset = m[1]!.toLowerCase() as RecurrencePreset;
    presetRule = PRESET_RRULES[preset];
    if (preset === 'weekdays') byDay = WEEKDAYS;
    time = m[2];
  } else return null;
  const at = timeOf(time);
  if (!at || interval < 1) return null;
  const parts = [`FREQ=${freq}`];
  if (interval > 1) parts.push(`INTERVAL=${interval}`);
  if (byDay.length) parts.push(`BYDAY=${byDay.map((d) => `${nth ?? ''}${d}`).join(',')}`);
  if (monthDay !== null) parts.push(`BYMONTHDAY=${monthDay}`);
  // A time said is the rule's (BYHOUR, BYMINUTE), not only the first due date's: a task already due at
  // another time kept that time for every repeat ("every Monday at 9" due Tuesday 17:00 ran Mondays at 17:00),
  // and a first day whose 2:30 falls in a daylight-saving gap moved every later day to 3:30.
  const rrule = [
    presetRule ?? parts.join(';'),
    ...(time === undefined ? [] : [`BYHOUR=${at.hour}`, `BYMINUTE=${at.minute}`]),
  ].join(';');
  const first = firstOccurrence(ctx, at, (day) => {
    if (byDay.length && !byDay.includes(WEEKDAY_CODES[day.dayOfWeek - 1]!)) return false;
    if (monthDay !== null && day.day !== monthDay) return false;
    if (nth !== null && (nth > 0 ? Math.ceil(day.day / 7) !== nth : day.day + 7 <= day.daysInMonth))
      return false;
    return true;
  });
  return {
    rrule,
    first,
    resolved: { said: text, as: rrule, local: `first ${localTime(first, ctx.timeZone)}` },
  };
}

/** "Tuesday and Thursday", "mon, wed & fri": the RFC 5545 codes (TU, TH), each once. */
const dayCodes = (list: string): string[] => [
  ...new Set(
    list
      .split(/\s*(?:,|and|&)\s*/i)
      .filter(Boolean)
      .map((d) => d.slice(0, 2).toUpperCase()),
  ),
];

const intervalOf = (word: string | undefined) =>
  word === undefined ? 1 : (INTERVAL_WORDS[word.toLowerCase()] ?? Number(word));

/** Hour and minute of "9", "9:30", "7pm", "noon", "midnight"; 9:00 when none; null when out of range. */
function timeOf(text: string | undefined): { hour: number; minute: number } | null {
  if (text === undefined) return { hour: DEFAULT_HOUR, minute: 0 };
  if (/^noon$/i.test(text)) return { hour: 12, minute: 0 };
  if (/^midnight$/i.test(text)) return { hour: 0, minute: 0 };
  const [, h, min, meridiem] = /^(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$/i.exec(text)!;
  let hour = Number(h);
  const minute = min === undefined ? 0 : Number(min);
  if (meridiem) {
    if (hour < 1 || hour > 12) return null;
    hour = (hour % 12) + (meridiem.toLowerCase() === 'pm' ? 12 : 0);
  }
  return hour <= 23 && minute <= 59 ? { hour, minute } : null;
}

/** The first day from today (in the zone) whose time `at` is still ahead and that the rule allows (`allows`). */
function firstOccurrence(
  ctx: TimeContext,
  at: { hour: number; minute: number },
  allows: (day: Temporal.PlainDate) => boolean,
): string {
  const today = zonedNow(ctx).toPlainDate();
  for (let i = 0; i < 400; i++) {
    const day = today.add({ days: i });
    if (!allows(day)) continue;
    const due = day.toZonedDateTime({
      timeZone: ctx.timeZone,
      plainTime: { hour: at.hour, minute: at.minute },
    });
    if (due.epochMilliseconds > ctx.now.getTime()) return new Date(due.epochMilliseconds).toISOString();
  }
  throw new RangeError('no occurrence within 400 days'); // unreachable: every rule here matches within a year
}

const SPAN = new RegExp(`^\\s*(half an|an?|\\d{1,4})\\s*${UNITS}\\s*$`, 'i');

/** A length of time: "10 minutes", "an hour", "half an hour", "2 days", or an ISO 8601 duration (PT10M). */
export function resolveDuration(text: string): string | null {
  if (isOffsetSpec(text.trim())) return text.trim();
  const m = SPAN.exec(text);
  return m ? isoDuration(m[1]!, m[2]!) : null;
}
