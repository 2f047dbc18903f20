/**
 * Dates and reminders in words, for a language model that speaks for a user ("tomorrow 9am", "in 30
 * minutes", "next Friday at 17:00", "1 hour before"): read in the user's time zone, at a given now, into
 * the ISO 8601 forms the task domain takes. Pure: the clock and the zone are arguments.
 *
 * Dates are parsed by chrono-node. Its own time-zone support takes offsets and abbreviations, not IANA
 * names, and would apply today's offset to a date across a daylight-saving change; so chrono reads the
 * user's wall clock (the reference is the user's local time written as UTC) and Temporal places the wall
 * time it found in the user's zone. A text with its own offset ("9:00 +02:00") keeps it.
 */
import * as chrono from 'chrono-node';
import { Temporal } from 'temporal-polyfill';
import { parseInstant } from './task.ts';

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

/** An offset or zone written in a date: +02:00, -0500, Z, UTC, GMT, CET, EST... */
const ZONE_IN_TEXT = /(?:[+-]\d{2}:?\d{2}\b|\d[zZ]\b|\b(?:UTC|GMT|[A-Z]{2,4}T)\b)/;

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
  const nowLocal = Temporal.Instant.fromEpochMilliseconds(ctx.now.getTime()).toZonedDateTimeISO(ctx.timeZone);
  const wallAsUtc = new Date(nowLocal.toPlainDateTime().toZonedDateTime('UTC').epochMilliseconds);
  const [found] = chrono.parse(text, { instant: wallAsUtc, timezone: 0 }, { forwardDate: true });
  // The whole text must be a date: "buy milk tomorrow" is not a due date.
  if (!found || found.text.trim().length < text.trim().length) return null;
  const start = found.start;
  let ms: number;
  // chrono calls the offset certain for relative times too ("in 30 minutes": the reference's); only a zone
  // written in the text is the user's own.
  if (start.isCertain('timezoneOffset') && ZONE_IN_TEXT.test(found.text)) ms = start.date().getTime();
  else {
    const wall = new Date(start.date().getTime()); // the user's wall time, as UTC fields
    ms = Temporal.ZonedDateTime.from(
      {
        timeZone: ctx.timeZone,
        year: wall.getUTCFullYear(),
        month: wall.getUTCMonth() + 1,
        day: wall.getUTCDate(),
        hour: wall.getUTCHours(),
        minute: wall.getUTCMinutes(),
        second: wall.getUTCSeconds(),
      },
      { disambiguation: 'compatible' }, // a wall time in a daylight-saving gap moves forward
    ).epochMilliseconds;
  }
  const instant = parseInstant(new Date(ms).toISOString());
  if (!instant) return null;
  return { instant, resolved: { said: text, as: instant, local: localTime(instant, ctx.timeZone) } };
}

const BEFORE =
  /^\s*(\d{1,4})\s*(m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\s+(before|early|earlier|ahead)\s*$/i;
const UNIT: Record<string, 'M' | 'H' | 'D' | 'W'> = { m: 'M', h: 'H', d: 'D', w: 'W' };

/**
 * A reminder in words: "30 minutes before" (an offset before the due date: PT30M), or a time ("in 30
 * minutes", "tomorrow 8am": an instant). ISO 8601 durations and instants pass as they are; null when the
 * text is none of these.
 */
export function resolveReminder(
  text: string,
  ctx: TimeContext,
): { value: string; resolved?: Resolved } | null {
  if (/^P/i.test(text.trim())) return { value: text };
  const before = BEFORE.exec(text);
  if (before) {
    const n = Number(before[1]);
    const unit = UNIT[before[2]!.charAt(0).toLowerCase()]!;
    const value = unit === 'M' || unit === 'H' ? `PT${n}${unit}` : `P${n}${unit}`;
    return { value, resolved: { said: text, as: value, local: `${value} before the due date` } };
  }
  const when = resolveWhen(text, ctx);
  return when ? { value: when.instant, ...(when.resolved ? { resolved: when.resolved } : {}) } : null;
}

/** An instant on the user's wall clock, with its offset: 2026-03-02T09:00:00+01:00. */
export function localTime(instant: string, timeZone: string): string {
  return Temporal.Instant.from(instant)
    .toZonedDateTimeISO(timeZone)
    .toString({ timeZoneName: 'never', smallestUnit: 'second' });
}
