/** Time zone checks (pure). */
import { Temporal } from 'temporal-polyfill';

/**
 * An IANA time zone name (`Europe/Berlin`, `UTC`). Offsets such as `+01:00` are refused on every Node version:
 * newer ICU (Node 24) accepts them as time zones, Node 20's does not, and a user's zone must follow daylight
 * saving time anyway.
 */
export function isTimeZone(tz: unknown): tz is string {
  if (typeof tz !== 'string' || tz.length === 0 || tz.length > 64 || !/^[A-Za-z]/.test(tz)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/**
 * The zone's id as IANA spells it (`europe/berlin` is `Europe/Berlin`; a link such as `Asia/Calcutta` stays
 * itself), or null when it is no zone: what is stored, so every reader compares one spelling.
 */
export function canonicalTimeZone(tz: string): string | null {
  try {
    return new Temporal.ZonedDateTime(0n, tz).timeZoneId;
  } catch {
    return null;
  }
}

/** Whether two instants (a Date, or an ISO 8601 string) are the same moment; null only equals null. */
export const sameInstant = (a: Date | string | null, b: Date | string | null): boolean =>
  a === null || b === null ? a === b : new Date(a).getTime() === new Date(b).getTime();
