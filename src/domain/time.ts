/** Time zone checks (pure). */
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
