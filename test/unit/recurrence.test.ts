// Recurrence engine: table-driven cases. Every expected instant below was worked out by hand from the calendar
// and the zone rules for 2026 (NOT produced by the code under test):
//   2026-01-01 is a Thursday; 2026-02-01, 2026-03-01 and 2026-11-01 are Sundays.
//   Europe/Berlin: CET (+01) until 2026-03-29 02:00 → CEST (+02) until 2026-10-25 03:00 → CET.
//   America/New_York: EST (-05) until 2026-03-08 02:00 → EDT (-04) until 2026-11-01 02:00 → EST.
//   Australia/Sydney: AEDT (+11) until 2026-04-05 03:00 → AEST (+10) until 2026-10-04 02:00 → AEDT.
//   Asia/Kolkata: always +05:30.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  nextOccurrence,
  parseRecurrence,
  previewOccurrences,
  type Recurrence,
} from '../../src/domain/recurrence.ts';

const BER = 'Europe/Berlin';
const NY = 'America/New_York';

function rec(input: unknown, tz: string): Recurrence {
  const parsed = parseRecurrence(input, tz);
  if (!parsed.ok) assert.fail(`expected ${JSON.stringify(input)} to parse: ${JSON.stringify(parsed.issues)}`);
  return parsed.value;
}

// ---------------------------------------------------------------------------------------------------------
// nextOccurrence

interface NextCase {
  name: string;
  input: unknown;
  tz: string;
  anchor: string;
  /** Defaults to the anchor. */
  previousDue?: string | null;
  /** Defaults to previousDue (completed on time). */
  completedAt?: string;
  /** Defaults to 1. */
  soFar?: number;
  expected: string | null;
}

/** Feb 29 every 54 years from 2028: 2082 is no leap year, 2136 is one (108 years on), 2190 not, 2244 is. */
const FEB29_EVERY_54_YEARS = {
  input: { rrule: 'FREQ=YEARLY;INTERVAL=54;BYMONTH=2;BYMONTHDAY=29' },
  tz: 'UTC',
  anchor: '2028-02-29T09:00:00Z',
};

const nextCases: NextCase[] = [
  // Cases aimed at mutants that survived (docs/mutation-testing.md), UTC so the arithmetic is the calendar's.
  // COUNT: the anchor is occurrence #1; the series ends once COUNT occurred.
  {
    name: 'COUNT=3: occurrence #2 of 3 → #3',
    input: { rrule: 'FREQ=DAILY;COUNT=3' },
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    previousDue: '2026-01-06T09:00:00Z',
    soFar: 2,
    expected: '2026-01-07T09:00:00.000Z',
  },
  {
    name: 'COUNT=3: all 3 occurred → none',
    input: { rrule: 'FREQ=DAILY;COUNT=3' },
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    previousDue: '2026-01-07T09:00:00Z',
    soFar: 3,
    expected: null,
  },
  {
    name: 'COUNT=3 counted on the calendar: after #3 (Jan 7) there is no #4, whatever soFar says',
    input: { rrule: 'FREQ=DAILY;COUNT=3' },
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    previousDue: '2026-01-07T09:00:00Z',
    soFar: 2,
    expected: null,
  },
  // BYSETPOS
  {
    name: 'second weekday of the month (BYSETPOS=2): Fri Jan 2 → Tue Feb 3',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=2' },
    tz: 'UTC',
    anchor: '2026-01-02T09:00:00Z',
    expected: '2026-02-03T09:00:00.000Z',
  },
  {
    name: 'first and last weekday (BYSETPOS=-1,1, out of order): Thu Jan 1 → Fri Jan 30',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1,1' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    expected: '2026-01-30T09:00:00.000Z',
  },
  {
    name: 'first and last weekday (BYSETPOS=-1,1): Fri Jan 30 → Mon Feb 2',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1,1' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    previousDue: '2026-01-30T09:00:00Z',
    expected: '2026-02-02T09:00:00.000Z',
  },
  // INTERVAL > 1 across a year boundary
  {
    name: 'every 5 months on the 15th: Nov 15 2026 → Apr 15 2027',
    input: { rrule: 'FREQ=MONTHLY;INTERVAL=5;BYMONTHDAY=15' },
    tz: 'UTC',
    anchor: '2026-11-15T09:00:00Z',
    expected: '2027-04-15T09:00:00.000Z',
  },
  {
    name: 'every 5 months on the 15th: Apr 15 2027 → Sep 15 2027',
    input: { rrule: 'FREQ=MONTHLY;INTERVAL=5;BYMONTHDAY=15' },
    tz: 'UTC',
    anchor: '2026-11-15T09:00:00Z',
    previousDue: '2027-04-15T09:00:00Z',
    expected: '2027-09-15T09:00:00.000Z',
  },
  {
    name: 'every 2 weeks on Thursday: Dec 24 2026 → Jan 7 2027',
    input: { rrule: 'FREQ=WEEKLY;INTERVAL=2;BYDAY=TH' },
    tz: 'UTC',
    anchor: '2026-12-24T09:00:00Z',
    expected: '2027-01-07T09:00:00.000Z',
  },
  {
    name: 'every 2 weeks on Thursday: Jan 7 2027 → Jan 21 2027',
    input: { rrule: 'FREQ=WEEKLY;INTERVAL=2;BYDAY=TH' },
    tz: 'UTC',
    anchor: '2026-12-24T09:00:00Z',
    previousDue: '2027-01-07T09:00:00Z',
    expected: '2027-01-21T09:00:00.000Z',
  },
  {
    name: 'every 2 years, month and day from the anchor: Mar 10 2026 → Mar 10 2028',
    input: { rrule: 'FREQ=YEARLY;INTERVAL=2' },
    tz: 'UTC',
    anchor: '2026-03-10T09:00:00Z',
    expected: '2028-03-10T09:00:00.000Z',
  },
  // days counted from the end
  {
    name: 'second-to-last day (BYMONTHDAY=-2): Jan 30 → Feb 27',
    input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=-2' },
    tz: 'UTC',
    anchor: '2026-01-30T09:00:00Z',
    expected: '2026-02-27T09:00:00.000Z',
  },
  {
    name: 'last Friday (BYDAY=-1FR): Jan 30 → Feb 27',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=-1FR' },
    tz: 'UTC',
    anchor: '2026-01-30T09:00:00Z',
    expected: '2026-02-27T09:00:00.000Z',
  },
  {
    name: 'last Monday of May (YEARLY;BYMONTH=5;BYDAY=-1MO): May 25 2026 → May 31 2027',
    input: { rrule: 'FREQ=YEARLY;BYMONTH=5;BYDAY=-1MO' },
    tz: 'UTC',
    anchor: '2026-05-25T09:00:00Z',
    expected: '2027-05-31T09:00:00.000Z',
  },
  // after_completion: strictly after the completion
  {
    name: 'after_completion daily, completed exactly at 09:00 → the next day',
    input: { preset: 'daily', mode: 'after_completion' },
    tz: 'UTC',
    anchor: '2026-03-01T09:00:00Z',
    previousDue: '2026-03-10T09:00:00Z',
    completedAt: '2026-03-10T09:00:00Z',
    expected: '2026-03-11T09:00:00.000Z',
  },
  // More cases aimed at survivors of the whole-domain StrykerJS run (2026-12-03), UTC as above.
  {
    name: 'after_completion, several times a day: completed at 12:00 exactly → 18:00 the same day',
    input: { rrule: 'FREQ=DAILY;BYHOUR=9,12,18', mode: 'after_completion' },
    tz: 'UTC',
    anchor: '2026-01-10T09:00:00Z',
    completedAt: '2026-01-12T12:00:00Z',
    expected: '2026-01-12T18:00:00.000Z',
  },
  {
    name: 'after_completion with COUNT=3: the 3rd completed → none',
    input: { preset: 'daily', count: 3, mode: 'after_completion' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    completedAt: '2026-01-05T12:00:00Z',
    soFar: 3,
    expected: null,
  },
  {
    name: 'YEARLY;BYMONTH=3,9 keeps both months (the anchor month is only the default): Mar 10 → Sep 10',
    input: { rrule: 'FREQ=YEARLY;BYMONTH=3,9' },
    tz: 'UTC',
    anchor: '2026-03-10T09:00:00Z',
    expected: '2026-09-10T09:00:00.000Z',
  },
  {
    name: 'BYMONTHDAY=1,15: either day matches: Jan 1 → Jan 15',
    input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=1,15' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    expected: '2026-01-15T09:00:00.000Z',
  },
  {
    name: 'YEARLY;BYDAY=20MO counts Mondays in the year: the 20th is May 18 (Jan 5 + 19 weeks)',
    input: { rrule: 'FREQ=YEARLY;BYDAY=20MO' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    expected: '2026-05-18T09:00:00.000Z',
  },
  {
    name: 'YEARLY;BYDAY=-1MO: the last Monday of the year, Dec 28 (Dec 31 is a Thursday)',
    input: { rrule: 'FREQ=YEARLY;BYDAY=-1MO' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    expected: '2026-12-28T09:00:00.000Z',
  },
  {
    name: 'every 3 days, long after the anchor: Jan 1, 4, 7, 10 → Jan 13',
    input: { rrule: 'FREQ=DAILY;INTERVAL=3' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    previousDue: '2026-01-10T09:00:00Z',
    expected: '2026-01-13T09:00:00.000Z',
  },
  {
    name: 'every 2 years, long after the anchor: 2030 → 2032',
    input: { rrule: 'FREQ=YEARLY;INTERVAL=2' },
    tz: 'UTC',
    anchor: '2026-03-01T09:00:00Z',
    previousDue: '2030-03-01T09:00:00Z',
    expected: '2032-03-01T09:00:00.000Z',
  },
  {
    name: 'BYSETPOS=-6 of the Mondays: no month has 6 (a 4-Monday month must not wrap around) → none',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-6' },
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    expected: null,
  },
  {
    name: 'yearly into the year 9999 → Jun 1 9999',
    input: 'yearly',
    tz: 'UTC',
    anchor: '9998-06-01T09:00:00Z',
    expected: '9999-06-01T09:00:00.000Z',
  },
  {
    name: 'nothing after 9999, also within a week that began in it: Fri Dec 31 9999, then Sat → none',
    input: { rrule: 'FREQ=WEEKLY;BYDAY=FR,SA' },
    tz: 'UTC',
    anchor: '9999-12-31T09:00:00Z',
    expected: null,
  },
  // presets (Berlin 09:00 CET = 08:00Z)
  {
    name: 'daily preset',
    input: 'daily',
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    completedAt: '2026-01-05T10:00:00Z',
    expected: '2026-01-06T08:00:00.000Z',
  },
  {
    name: 'weekdays preset Mon → Tue',
    input: 'weekdays',
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    expected: '2026-01-06T08:00:00.000Z',
  },
  {
    name: 'weekdays preset Fri → Mon',
    input: 'weekdays',
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-09T08:00:00Z',
    expected: '2026-01-12T08:00:00.000Z',
  },
  {
    name: 'weekly preset (Wed → Wed)',
    input: 'weekly',
    tz: BER,
    anchor: '2026-01-07T08:00:00Z',
    expected: '2026-01-14T08:00:00.000Z',
  },
  {
    name: 'every 2 weeks (weekly, interval 2)',
    input: { preset: 'weekly', interval: 2 },
    tz: BER,
    anchor: '2026-01-07T08:00:00Z',
    expected: '2026-01-21T08:00:00.000Z',
  },
  {
    name: 'monthly preset (15th)',
    input: 'monthly',
    tz: BER,
    anchor: '2026-01-15T08:00:00Z',
    expected: '2026-02-15T08:00:00.000Z',
  },
  {
    name: 'every 3 months (Jan 15 → Apr 15, now CEST)',
    input: { preset: 'monthly', interval: 3 },
    tz: BER,
    anchor: '2026-01-15T08:00:00Z',
    expected: '2026-04-15T07:00:00.000Z',
  },
  {
    name: 'yearly preset',
    input: 'yearly',
    tz: BER,
    anchor: '2026-06-10T07:00:00Z',
    expected: '2027-06-10T07:00:00.000Z',
  },
  // BYDAY
  {
    name: 'BYDAY=MO,WE,FR Wed → Fri',
    input: { rrule: 'FREQ=WEEKLY;BYDAY=MO,WE,FR' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-07T08:00:00Z',
    expected: '2026-01-09T08:00:00.000Z',
  },
  {
    name: 'BYDAY=MO,WE,FR Fri → Mon',
    input: { rrule: 'FREQ=WEEKLY;BYDAY=MO,WE,FR' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-09T08:00:00Z',
    expected: '2026-01-12T08:00:00.000Z',
  },
  {
    name: '2nd Tuesday (BYDAY=2TU): Jan 13 → Feb 10',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=2TU' },
    tz: BER,
    anchor: '2026-01-13T08:00:00Z',
    expected: '2026-02-10T08:00:00.000Z',
  },
  {
    name: 'last Friday (BYDAY=-1FR): Jan 30 → Feb 27',
    input: { rrule: 'RRULE:FREQ=MONTHLY;BYDAY=-1FR' },
    tz: BER,
    anchor: '2026-01-30T08:00:00Z',
    expected: '2026-02-27T08:00:00.000Z',
  },
  {
    name: 'US Thanksgiving (YEARLY;BYMONTH=11;BYDAY=4TH) 2026 → 2027-11-25',
    input: { rrule: 'FREQ=YEARLY;BYMONTH=11;BYDAY=4TH' },
    tz: NY,
    anchor: '2026-11-26T17:00:00Z',
    expected: '2027-11-25T17:00:00.000Z',
  },
  // BYMONTHDAY / month end
  {
    name: 'BYMONTHDAY=15 anchored Jan 3 → Jan 15 (previousDue null)',
    input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=15' },
    tz: BER,
    anchor: '2026-01-03T08:00:00Z',
    previousDue: null,
    completedAt: '2026-01-03T09:00:00Z',
    expected: '2026-01-15T08:00:00.000Z',
  },
  {
    name: 'BYMONTHDAY=-1: Jan 31 → Feb 28',
    input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=-1' },
    tz: BER,
    anchor: '2026-01-31T08:00:00Z',
    expected: '2026-02-28T08:00:00.000Z',
  },
  {
    name: 'BYMONTHDAY=-1: Feb 28 → Mar 31',
    input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=-1' },
    tz: BER,
    anchor: '2026-01-31T08:00:00Z',
    previousDue: '2026-02-28T08:00:00Z',
    expected: '2026-03-31T07:00:00.000Z',
  },
  {
    name: 'BYMONTHDAY=-1 in a leap year: Jan 31 2028 → Feb 29 2028',
    input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=-1' },
    tz: 'UTC',
    anchor: '2028-01-31T09:00:00Z',
    expected: '2028-02-29T09:00:00.000Z',
  },
  {
    name: 'monthly anchored Jan 31 skips February: → Mar 31 (not clamped)',
    input: 'monthly',
    tz: BER,
    anchor: '2026-01-31T08:00:00Z',
    expected: '2026-03-31T07:00:00.000Z',
  },
  {
    name: 'monthly anchored Jan 31: Mar 31 → May 31 (April has 30 days)',
    input: 'monthly',
    tz: BER,
    anchor: '2026-01-31T08:00:00Z',
    previousDue: '2026-03-31T07:00:00Z',
    expected: '2026-05-31T07:00:00.000Z',
  },
  {
    name: 'yearly leap day: Feb 29 2028 → Feb 29 2032',
    input: 'yearly',
    tz: 'UTC',
    anchor: '2028-02-29T09:00:00Z',
    expected: '2032-02-29T09:00:00.000Z',
  },
  // BYSETPOS
  {
    name: 'last weekday of month (BYSETPOS=-1): Jan 30 → Feb 27',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1' },
    tz: BER,
    anchor: '2026-01-30T08:00:00Z',
    expected: '2026-02-27T08:00:00.000Z',
  },
  {
    name: 'last weekday of month: Apr 30 (Thu) → May 29 (May 31 is a Sunday)',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1' },
    tz: BER,
    anchor: '2026-01-30T08:00:00Z',
    previousDue: '2026-04-30T07:00:00Z',
    expected: '2026-05-29T07:00:00.000Z',
  },
  // BYHOUR
  {
    name: 'BYHOUR=9,17: 09:00 → 17:00 the same day',
    input: { rrule: 'FREQ=DAILY;BYHOUR=9,17' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    expected: '2026-01-05T16:00:00.000Z',
  },
  {
    name: 'BYHOUR=9,17: 17:00 → 09:00 next day',
    input: { rrule: 'FREQ=DAILY;BYHOUR=9,17' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-05T16:00:00Z',
    expected: '2026-01-06T08:00:00.000Z',
  },
  // DST: 09:00 local is preserved, the UTC instant moves by one hour
  {
    name: 'Berlin spring-forward: 09:00 CET (08Z) → 09:00 CEST (07Z)',
    input: 'daily',
    tz: BER,
    anchor: '2026-03-02T08:00:00Z',
    previousDue: '2026-03-28T08:00:00Z',
    expected: '2026-03-29T07:00:00.000Z',
  },
  {
    name: 'Berlin fall-back: 09:00 CEST (07Z) → 09:00 CET (08Z)',
    input: 'daily',
    tz: BER,
    anchor: '2026-03-02T08:00:00Z',
    previousDue: '2026-10-24T07:00:00Z',
    expected: '2026-10-25T08:00:00.000Z',
  },
  {
    name: 'New York spring-forward: 09:00 EST (14Z) → 09:00 EDT (13Z)',
    input: 'daily',
    tz: NY,
    anchor: '2026-03-02T14:00:00Z',
    previousDue: '2026-03-07T14:00:00Z',
    expected: '2026-03-08T13:00:00.000Z',
  },
  {
    name: 'New York fall-back: 09:00 EDT (13Z) → 09:00 EST (14Z)',
    input: 'daily',
    tz: NY,
    anchor: '2026-03-02T14:00:00Z',
    previousDue: '2026-10-31T13:00:00Z',
    expected: '2026-11-01T14:00:00.000Z',
  },
  {
    name: 'New York DST gap: 02:30 does not exist on Mar 8 → 03:30 EDT',
    input: 'daily',
    tz: NY,
    anchor: '2026-03-01T07:30:00Z',
    previousDue: '2026-03-07T07:30:00Z',
    expected: '2026-03-08T07:30:00.000Z',
  },
  {
    name: 'New York after the gap: back to 02:30 (EDT)',
    input: 'daily',
    tz: NY,
    anchor: '2026-03-01T07:30:00Z',
    previousDue: '2026-03-08T07:30:00Z',
    expected: '2026-03-09T06:30:00.000Z',
  },
  {
    name: 'Berlin DST gap: 02:30 on Mar 29 → 03:30 CEST',
    input: 'daily',
    tz: BER,
    anchor: '2026-03-01T01:30:00Z',
    previousDue: '2026-03-28T01:30:00Z',
    expected: '2026-03-29T01:30:00.000Z',
  },
  {
    name: 'New York fall-back overlap: 01:30 on Nov 1 is the earlier (EDT) instant',
    input: 'daily',
    tz: NY,
    anchor: '2026-10-01T05:30:00Z',
    previousDue: '2026-10-31T05:30:00Z',
    expected: '2026-11-01T05:30:00.000Z',
  },
  {
    name: 'New York after the overlap: 01:30 EST',
    input: 'daily',
    tz: NY,
    anchor: '2026-10-01T05:30:00Z',
    previousDue: '2026-11-01T05:30:00Z',
    expected: '2026-11-02T06:30:00.000Z',
  },
  {
    name: 'Berlin fall-back overlap: 02:30 on Oct 25 is the earlier (CEST) instant',
    input: 'daily',
    tz: BER,
    anchor: '2026-10-01T00:30:00Z',
    previousDue: '2026-10-24T00:30:00Z',
    expected: '2026-10-25T00:30:00.000Z',
  },
  {
    name: 'Sydney DST end (Apr 5): 09:00 AEDT (22Z) → 09:00 AEST (23Z)',
    input: 'daily',
    tz: 'Australia/Sydney',
    anchor: '2026-03-01T22:00:00Z',
    previousDue: '2026-04-03T22:00:00Z',
    expected: '2026-04-04T23:00:00.000Z',
  },
  {
    name: 'Sydney DST start (Oct 4): 09:00 AEST (23Z) → 09:00 AEDT (22Z)',
    input: 'daily',
    tz: 'Australia/Sydney',
    anchor: '2026-03-01T22:00:00Z',
    previousDue: '2026-10-02T23:00:00Z',
    expected: '2026-10-03T22:00:00.000Z',
  },
  {
    name: 'Kolkata (+05:30) daily is unaffected by US DST day',
    input: 'daily',
    tz: 'Asia/Kolkata',
    anchor: '2026-03-01T03:30:00Z',
    previousDue: '2026-03-07T03:30:00Z',
    expected: '2026-03-08T03:30:00.000Z',
  },
  {
    name: 'Kolkata last day of month',
    input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=-1' },
    tz: 'Asia/Kolkata',
    anchor: '2026-01-31T03:30:00Z',
    expected: '2026-02-28T03:30:00.000Z',
  },
  // schedule mode: completed late / early
  {
    name: 'schedule, completed two weeks late: past occurrences skipped',
    input: 'daily',
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-06T08:00:00Z',
    completedAt: '2026-01-20T10:00:00Z',
    expected: '2026-01-21T08:00:00.000Z',
  },
  {
    name: "schedule, completed late but before that day's time",
    input: 'daily',
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-06T08:00:00Z',
    completedAt: '2026-01-20T07:00:00Z',
    expected: '2026-01-20T08:00:00.000Z',
  },
  {
    name: 'schedule weekly, completed 4 weeks late → next Wednesday',
    input: 'weekly',
    tz: BER,
    anchor: '2026-01-07T08:00:00Z',
    completedAt: '2026-02-05T12:00:00Z',
    expected: '2026-02-11T08:00:00.000Z',
  },
  {
    name: 'schedule, completed early: next is still after the previous due date',
    input: 'daily',
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-06T08:00:00Z',
    completedAt: '2026-01-05T20:00:00Z',
    expected: '2026-01-07T08:00:00.000Z',
  },
  // after_completion mode
  {
    name: 'after_completion daily, completed Mar 10 15:00 local → Mar 11 09:00',
    input: { preset: 'daily', mode: 'after_completion' },
    tz: BER,
    anchor: '2026-03-02T08:00:00Z',
    previousDue: '2026-03-05T08:00:00Z',
    completedAt: '2026-03-10T14:00:00Z',
    expected: '2026-03-11T08:00:00.000Z',
  },
  {
    name: 'after_completion daily, completed 06:00 local (before 09:00) → next day, not same day',
    input: { preset: 'daily', mode: 'after_completion' },
    tz: BER,
    anchor: '2026-03-02T08:00:00Z',
    previousDue: '2026-03-05T08:00:00Z',
    completedAt: '2026-03-10T05:00:00Z',
    expected: '2026-03-11T08:00:00.000Z',
  },
  {
    name: 'after_completion every 3 days counts from completion',
    input: { preset: 'daily', interval: 3, mode: 'after_completion' },
    tz: BER,
    anchor: '2026-03-02T08:00:00Z',
    previousDue: '2026-03-05T08:00:00Z',
    completedAt: '2026-03-10T14:00:00Z',
    expected: '2026-03-13T08:00:00.000Z',
  },
  {
    name: 'after_completion weekly, completed on Thursday → next Thursday',
    input: { preset: 'weekly', mode: 'after_completion' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-12T08:00:00Z',
    completedAt: '2026-01-15T16:00:00Z',
    expected: '2026-01-22T08:00:00.000Z',
  },
  {
    name: 'after_completion monthly, completed Feb 17 → Mar 17',
    input: { preset: 'monthly', mode: 'after_completion' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-02-05T08:00:00Z',
    completedAt: '2026-02-17T12:00:00Z',
    expected: '2026-03-17T08:00:00.000Z',
  },
  {
    name: 'after_completion, completed before the due date: counted from completion',
    input: { preset: 'daily', mode: 'after_completion' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-12T08:00:00Z',
    completedAt: '2026-01-09T12:00:00Z',
    expected: '2026-01-10T08:00:00.000Z',
  },
  {
    name: 'after_completion weekdays, completed Friday → Monday',
    input: { preset: 'weekdays', mode: 'after_completion' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    previousDue: '2026-01-07T08:00:00Z',
    completedAt: '2026-01-09T15:00:00Z',
    expected: '2026-01-12T08:00:00.000Z',
  },
  // UNTIL / COUNT
  {
    name: 'until is inclusive',
    input: { preset: 'daily', until: '2026-01-03T09:00:00Z' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    previousDue: '2026-01-02T09:00:00Z',
    expected: '2026-01-03T09:00:00.000Z',
  },
  {
    name: 'until reached → null',
    input: { preset: 'daily', until: '2026-01-03T09:00:00Z' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    previousDue: '2026-01-03T09:00:00Z',
    expected: null,
  },
  {
    name: 'RRULE UNTIL as a date covers that whole local day',
    input: { rrule: 'FREQ=DAILY;UNTIL=20260103' },
    tz: BER,
    anchor: '2026-01-01T08:00:00Z',
    previousDue: '2026-01-02T08:00:00Z',
    expected: '2026-01-03T08:00:00.000Z',
  },
  {
    name: 'RRULE UNTIL as a date, exhausted → null',
    input: { rrule: 'FREQ=DAILY;UNTIL=20260103' },
    tz: BER,
    anchor: '2026-01-01T08:00:00Z',
    previousDue: '2026-01-03T08:00:00Z',
    expected: null,
  },
  {
    name: 'count: 3rd of 3',
    input: { preset: 'daily', count: 3 },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    previousDue: '2026-01-02T09:00:00Z',
    soFar: 2,
    expected: '2026-01-03T09:00:00.000Z',
  },
  {
    name: 'count exhausted → null',
    input: { rrule: 'FREQ=DAILY;COUNT=3' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    previousDue: '2026-01-03T09:00:00Z',
    soFar: 3,
    expected: null,
  },
  {
    name: 'count, schedule completed late: skipped occurrences are consumed → null',
    input: { preset: 'daily', count: 3 },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    completedAt: '2026-01-05T12:00:00Z',
    soFar: 1,
    expected: null,
  },
  {
    name: 'count with after_completion uses occurrencesSoFar',
    input: { preset: 'daily', count: 3, mode: 'after_completion' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    completedAt: '2026-01-05T12:00:00Z',
    soFar: 2,
    expected: '2026-01-06T09:00:00.000Z',
  },
  // never-occurring rules end instead of looping
  {
    name: 'monthly anchored on the 31st limited to February never occurs → null',
    input: { rrule: 'FREQ=MONTHLY;BYMONTH=2' },
    tz: 'UTC',
    anchor: '2026-01-31T09:00:00Z',
    expected: null,
  },
  {
    name: 'first Monday that is the 8th never exists → null (search cap)',
    input: { rrule: 'FREQ=YEARLY;BYDAY=1MO;BYMONTHDAY=8' },
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    expected: null,
  },
  // The search limits: it gives up after 100 × 366 days without an occurrence, over at least 2 empty periods.
  {
    name: 'Feb 29 yearly from 2096: 2100 is no leap year, 8 empty years are within the limit → 2104',
    input: { rrule: 'FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29' },
    tz: 'UTC',
    anchor: '2096-02-29T09:00:00Z',
    expected: '2104-02-29T09:00:00.000Z',
  },
  {
    name: 'every 150 years: one empty period (the anchor year) is not enough to give up → 2176',
    input: { rrule: 'FREQ=YEARLY;INTERVAL=150' },
    tz: 'UTC',
    anchor: '2026-03-01T09:00:00Z',
    expected: '2176-03-01T09:00:00.000Z',
  },
  {
    name: 'Feb 29 every 54 years from 2028: 2082 has none, 2136 is 108 years on → none (search limit)',
    ...FEB29_EVERY_54_YEARS,
    expected: null,
  },
  {
    name: 'the same rule after 2136 (an edited series): the search starts there, not at the anchor → 2244',
    ...FEB29_EVERY_54_YEARS,
    previousDue: '2136-02-29T09:00:00Z',
    expected: '2244-02-29T09:00:00.000Z',
  },
  {
    name: 'the same as every 648 months: the search starts at the month period of 2136 → 2244',
    ...FEB29_EVERY_54_YEARS,
    input: { rrule: 'FREQ=MONTHLY;INTERVAL=648;BYMONTH=2;BYMONTHDAY=29' },
    previousDue: '2136-02-29T09:00:00Z',
    expected: '2244-02-29T09:00:00.000Z',
  },
  {
    name: 'every 18,300 days in March: 2076-02-08 empty, 2126-03-18 exactly 36,600 days on, not over → found',
    input: { rrule: 'FREQ=DAILY;INTERVAL=18300;BYMONTH=3' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    expected: '2126-03-18T09:00:00.000Z',
  },
  {
    name: 'Feb 29 with COUNT=40, #25 (2128) → #26 (2132): occurrences keep the search going past 100 years',
    input: { rrule: 'FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;COUNT=40' },
    tz: 'UTC',
    anchor: '2028-02-29T09:00:00Z',
    previousDue: '2128-02-29T09:00:00Z',
    soFar: 25,
    expected: '2132-02-29T09:00:00.000Z',
  },
];

describe('nextOccurrence', () => {
  for (const c of nextCases) {
    it(c.name, () => {
      const previousDue = c.previousDue === undefined ? c.anchor : c.previousDue;
      const got = nextOccurrence(rec(c.input, c.tz), {
        anchor: c.anchor,
        previousDue,
        completedAt: c.completedAt ?? previousDue ?? c.anchor,
        occurrencesSoFar: c.soFar ?? 1,
      });
      assert.equal(got, c.expected);
    });
  }

  it('throws RangeError on a malformed instant, naming it (programmer error, not client input)', () => {
    const ok = '2026-01-01T00:00:00Z';
    const series = { anchor: ok, previousDue: ok, completedAt: ok, occurrencesSoFar: 1 };
    for (const name of ['anchor', 'previousDue', 'completedAt'] as const)
      assert.throws(
        () => nextOccurrence(rec('daily', BER), { ...series, [name]: 'yesterday' }),
        { name: 'RangeError', message: `${name} must be an ISO-8601 instant with offset, got "yesterday"` },
        name,
      );
  });

  it('throws RangeError on a corrupt stored rule, naming what is wrong', () => {
    const series = { anchor: '2026-01-01T09:00:00Z', previousDue: null, completedAt: '2026-01-01T09:00:00Z' };
    const stored = (over: Partial<Recurrence>): Recurrence => ({ ...rec('daily', 'UTC'), ...over });
    assert.throws(
      () => nextOccurrence(stored({ timezone: 'Mars/Olympus' }), { ...series, occurrencesSoFar: 1 }),
      {
        name: 'RangeError',
        message: 'invalid stored recurrence: unknown time zone Mars/Olympus',
      },
    );
    assert.throws(
      () =>
        previewOccurrences(
          stored({ rrule: 'FREQ=DAILY;INTERVAL=0;COUNT=0' }),
          series.anchor,
          series.anchor,
          3,
        ),
      { name: 'RangeError', message: /^invalid stored recurrence rrule: [^;]+; [^;]+$/ },
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// previewOccurrences

interface PreviewCase {
  name: string;
  input: unknown;
  tz: string;
  anchor: string;
  after: string;
  count: number;
  expected: string[];
}

const previewCases: PreviewCase[] = [
  {
    name: 'N=5, MO/WE/FR',
    input: { rrule: 'FREQ=WEEKLY;BYDAY=MO,WE,FR' },
    tz: BER,
    anchor: '2026-01-05T08:00:00Z',
    after: '2026-01-07T08:00:00Z',
    count: 5,
    expected: [
      '2026-01-09T08:00:00.000Z',
      '2026-01-12T08:00:00.000Z',
      '2026-01-14T08:00:00.000Z',
      '2026-01-16T08:00:00.000Z',
      '2026-01-19T08:00:00.000Z',
    ],
  },
  {
    name: 'N=5, last weekday of month across the DST change',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1' },
    tz: BER,
    anchor: '2026-01-30T08:00:00Z',
    after: '2026-01-01T00:00:00Z',
    count: 5,
    expected: [
      '2026-01-30T08:00:00.000Z',
      '2026-02-27T08:00:00.000Z',
      '2026-03-31T07:00:00.000Z',
      '2026-04-30T07:00:00.000Z',
      '2026-05-29T07:00:00.000Z',
    ],
  },
  {
    name: 'the anchor is the first occurrence',
    input: 'daily',
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    after: '2026-01-01T00:00:00Z',
    count: 3,
    expected: ['2026-01-05T09:00:00.000Z', '2026-01-06T09:00:00.000Z', '2026-01-07T09:00:00.000Z'],
  },
  {
    name: 'COUNT=3 stops the preview',
    input: { preset: 'daily', count: 3 },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    after: '2025-12-31T00:00:00Z',
    count: 5,
    expected: ['2026-01-01T09:00:00.000Z', '2026-01-02T09:00:00.000Z', '2026-01-03T09:00:00.000Z'],
  },
  {
    name: 'UNTIL stops the preview (inclusive)',
    input: { preset: 'daily', until: '2026-01-03T09:00:00Z' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    after: '2026-01-01T09:00:00Z',
    count: 5,
    expected: ['2026-01-02T09:00:00.000Z', '2026-01-03T09:00:00.000Z'],
  },
  {
    name: 'leap day yearly: 2032, 2036, 2040',
    input: 'yearly',
    tz: 'UTC',
    anchor: '2028-02-29T09:00:00Z',
    after: '2028-02-29T09:00:00Z',
    count: 3,
    expected: ['2032-02-29T09:00:00.000Z', '2036-02-29T09:00:00.000Z', '2040-02-29T09:00:00.000Z'],
  },
  {
    name: 'WKST=MO (default): every other week on TU,SU',
    input: { rrule: 'FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,SU' },
    tz: 'UTC',
    anchor: '2026-01-06T09:00:00Z',
    after: '2026-01-06T09:00:00Z',
    count: 3,
    expected: ['2026-01-11T09:00:00.000Z', '2026-01-20T09:00:00.000Z', '2026-01-25T09:00:00.000Z'],
  },
  {
    name: 'WKST=SU changes which weeks are skipped',
    input: { rrule: 'FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,SU;WKST=SU' },
    tz: 'UTC',
    anchor: '2026-01-06T09:00:00Z',
    after: '2026-01-06T09:00:00Z',
    count: 3,
    expected: ['2026-01-18T09:00:00.000Z', '2026-01-20T09:00:00.000Z', '2026-02-01T09:00:00.000Z'],
  },
  {
    name: 'Friday the 13th (BYDAY=FR;BYMONTHDAY=13)',
    input: { rrule: 'FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13' },
    tz: 'UTC',
    anchor: '2026-02-13T09:00:00Z',
    after: '2026-02-13T09:00:00Z',
    count: 3,
    expected: ['2026-03-13T09:00:00.000Z', '2026-11-13T09:00:00.000Z', '2027-08-13T09:00:00.000Z'],
  },
  {
    name: 'far after the anchor (jumps, does not walk every day)',
    input: 'daily',
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    after: '2030-06-15T12:00:00Z',
    count: 2,
    expected: ['2030-06-16T09:00:00.000Z', '2030-06-17T09:00:00.000Z'],
  },
  {
    name: 'count 0 → empty',
    input: 'daily',
    tz: 'UTC',
    anchor: '2026-01-05T09:00:00Z',
    after: '2026-01-01T00:00:00Z',
    count: 0,
    expected: [],
  },
  {
    name: 'COUNT=5 long after the anchor: only #5 (Jan 5) is left after Jan 4 12:00',
    input: { rrule: 'FREQ=DAILY;COUNT=5' },
    tz: 'UTC',
    anchor: '2026-01-01T09:00:00Z',
    after: '2026-01-04T12:00:00Z',
    count: 10,
    expected: ['2026-01-05T09:00:00.000Z'],
  },
  {
    name: 'Feb 29 every 54 years after 2136: the walk starts there (from the anchor it gives up at 2136)',
    ...FEB29_EVERY_54_YEARS,
    after: '2136-02-29T09:00:00Z',
    count: 1,
    expected: ['2244-02-29T09:00:00.000Z'],
  },
  {
    name: '02:30 and 03:30 daily across the spring gap (Mar 29): 02:30 moves to 03:30 CEST, listed once',
    input: { rrule: 'FREQ=DAILY;BYHOUR=2,3;BYMINUTE=30' },
    tz: BER,
    anchor: '2026-03-28T01:30:00Z', // 02:30 CET
    after: '2026-03-28T01:30:00Z',
    count: 4,
    expected: [
      '2026-03-28T02:30:00.000Z', // 03:30 CET
      '2026-03-29T01:30:00.000Z', // 03:30 CEST (02:30 does not exist; 03:30 is the same instant)
      '2026-03-30T00:30:00.000Z', // 02:30 CEST
      '2026-03-30T01:30:00.000Z', // 03:30 CEST
    ],
  },
];

describe('previewOccurrences: malformed instants', () => {
  it('throws RangeError naming the argument', () => {
    const rule = rec('daily', 'UTC');
    for (const [anchor, after, name] of [
      ['soon', '2026-01-01T00:00:00Z', 'anchor'],
      ['2026-01-01T00:00:00Z', 'soon', 'after'],
    ] as const)
      assert.throws(() => previewOccurrences(rule, anchor, after, 3), {
        name: 'RangeError',
        message: `${name} must be an ISO-8601 instant with offset, got "soon"`,
      });
  });
});

describe('previewOccurrences', () => {
  for (const c of previewCases) {
    it(c.name, () => {
      assert.deepEqual(previewOccurrences(rec(c.input, c.tz), c.anchor, c.after, c.count), c.expected);
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// parseRecurrence: normalization

const normalizeCases: Array<{ name: string; input: unknown; tz?: string; expected: Recurrence }> = [
  {
    name: 'daily preset',
    input: 'daily',
    expected: { rrule: 'FREQ=DAILY', mode: 'schedule', timezone: BER, preset: 'daily' },
  },
  {
    name: 'weekdays preset',
    input: 'weekdays',
    expected: {
      rrule: 'FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR',
      mode: 'schedule',
      timezone: BER,
      preset: 'weekdays',
    },
  },
  {
    name: 'weekly preset',
    input: 'weekly',
    expected: { rrule: 'FREQ=WEEKLY', mode: 'schedule', timezone: BER, preset: 'weekly' },
  },
  {
    name: 'monthly preset',
    input: 'monthly',
    expected: { rrule: 'FREQ=MONTHLY', mode: 'schedule', timezone: BER, preset: 'monthly' },
  },
  {
    name: 'yearly preset',
    input: 'yearly',
    expected: { rrule: 'FREQ=YEARLY', mode: 'schedule', timezone: BER, preset: 'yearly' },
  },
  {
    name: 'preset object with interval and until (offset converted to UTC)',
    input: { preset: 'weekly', interval: 2, until: '2026-06-30T23:59:59+02:00' },
    expected: {
      rrule: 'FREQ=WEEKLY;INTERVAL=2;UNTIL=20260630T215959Z',
      mode: 'schedule',
      timezone: BER,
      preset: 'weekly',
    },
  },
  {
    name: 'interval 1 is omitted; count',
    input: { preset: 'daily', interval: 1, count: 10 },
    expected: { rrule: 'FREQ=DAILY;COUNT=10', mode: 'schedule', timezone: BER, preset: 'daily' },
  },
  {
    name: 'rrule with RRULE: prefix, lower case, canonical order',
    input: { rrule: 'RRULE:byday=-1fr;freq=monthly' },
    expected: { rrule: 'FREQ=MONTHLY;BYDAY=-1FR', mode: 'schedule', timezone: BER },
  },
  {
    name: 'rrule + mode + timezone (case-normalized zone)',
    input: {
      rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1',
      mode: 'after_completion',
      timezone: 'america/new_york',
    },
    expected: {
      rrule: 'FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1',
      mode: 'after_completion',
      timezone: NY,
    },
  },
  {
    name: 'rrule + count field merged',
    input: { rrule: 'FREQ=WEEKLY;BYDAY=FR,MO', count: 4 },
    expected: { rrule: 'FREQ=WEEKLY;COUNT=4;BYDAY=MO,FR', mode: 'schedule', timezone: BER },
  },
  {
    name: 'UNTIL as a date → end of that day in the zone, in UTC',
    input: { rrule: 'FREQ=DAILY;UNTIL=20260103' },
    expected: { rrule: 'FREQ=DAILY;UNTIL=20260103T225959Z', mode: 'schedule', timezone: BER },
  },
  {
    name: 'null fields count as absent',
    input: { preset: 'daily', timezone: null, until: null, mode: null },
    expected: { rrule: 'FREQ=DAILY', mode: 'schedule', timezone: BER, preset: 'daily' },
  },
  {
    name: 'WKST kept when not MO',
    input: { rrule: 'FREQ=WEEKLY;INTERVAL=2;WKST=SU;BYDAY=TU,SU' },
    expected: { rrule: 'FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,SU;WKST=SU', mode: 'schedule', timezone: BER },
  },
];

describe('parseRecurrence normalizes', () => {
  for (const c of normalizeCases) {
    it(c.name, () => {
      assert.deepEqual(parseRecurrence(c.input, c.tz ?? BER), { ok: true, value: c.expected });
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// parseRecurrence: validation

const invalidCases: Array<{ input: unknown; path: string; message: RegExp; tz?: string }> = [
  { input: 'hourly', path: 'recurrence', message: /unknown preset "hourly"/ },
  { input: 'Daily', path: 'recurrence', message: /unknown preset/ },
  { input: 42, path: 'recurrence', message: /preset string/ },
  { input: null, path: 'recurrence', message: /preset string/ },
  { input: [], path: 'recurrence', message: /preset string/ },
  { input: {}, path: 'recurrence', message: /rrule or preset is required/ },
  { input: { preset: 'daily', rrule: 'FREQ=DAILY' }, path: 'recurrence', message: /not both/ },
  { input: { preset: 'biweekly' }, path: 'recurrence.preset', message: /unknown preset/ },
  { input: { preset: 'daily', color: 'red' }, path: 'recurrence.color', message: /unknown field/ },
  { input: { preset: 'daily', timezone: 'Mars/Olympus' }, path: 'recurrence.timezone', message: /IANA/ },
  { input: { preset: 'daily', timezone: '+05:30' }, path: 'recurrence.timezone', message: /IANA/ },
  { input: 'daily', tz: 'Nowhere/Special', path: 'recurrence.timezone', message: /default time zone/ },
  {
    input: { preset: 'daily', mode: 'sometimes' },
    path: 'recurrence.mode',
    message: /schedule, after_completion/,
  },
  { input: { preset: 'daily', interval: 0 }, path: 'recurrence.interval', message: />= 1/ },
  { input: { preset: 'daily', interval: 1.5 }, path: 'recurrence.interval', message: />= 1/ },
  { input: { preset: 'daily', count: 0 }, path: 'recurrence.count', message: />= 1/ },
  {
    input: { preset: 'daily', count: 3, until: '2026-12-31T00:00:00Z' },
    path: 'recurrence.until',
    message: /count and until/,
  },
  { input: { preset: 'daily', until: '2026-12-31' }, path: 'recurrence.until', message: /instant/ },
  { input: { rrule: 'FREQ=HOURLY' }, path: 'recurrence.rrule', message: /FREQ=HOURLY is not supported/ },
  { input: { rrule: 'FREQ=MINUTELY' }, path: 'recurrence.rrule', message: /FREQ=MINUTELY is not supported/ },
  { input: { rrule: 'FREQ=FORTNIGHTLY' }, path: 'recurrence.rrule', message: /FREQ must be one of/ },
  { input: { rrule: 'INTERVAL=2' }, path: 'recurrence.rrule', message: /FREQ is required/ },
  {
    input: { rrule: 'FREQ=DAILY;INTERVAL=0' },
    path: 'recurrence.rrule',
    message: /INTERVAL must be a positive/,
  },
  {
    input: { rrule: 'FREQ=DAILY;COUNT=3;UNTIL=20261231T000000Z' },
    path: 'recurrence.rrule',
    message: /COUNT and UNTIL/,
  },
  { input: { rrule: 'FREQ=DAILY;UNTIL=tomorrow' }, path: 'recurrence.rrule', message: /UNTIL must be/ },
  { input: { rrule: 'FREQ=DAILY;UNTIL=20260230' }, path: 'recurrence.rrule', message: /UNTIL must be/ },
  { input: { rrule: 'FREQ=MONTHLY;BYMONTHDAY=32' }, path: 'recurrence.rrule', message: /BYMONTHDAY/ },
  { input: { rrule: 'FREQ=YEARLY;BYMONTH=13' }, path: 'recurrence.rrule', message: /BYMONTH/ },
  { input: { rrule: 'FREQ=WEEKLY;BYDAY=1MO' }, path: 'recurrence.rrule', message: /ordinals/ },
  { input: { rrule: 'FREQ=MONTHLY;BYDAY=6MO' }, path: 'recurrence.rrule', message: /ordinal/ },
  { input: { rrule: 'FREQ=WEEKLY;BYDAY=XX' }, path: 'recurrence.rrule', message: /BYDAY/ },
  { input: { rrule: 'FREQ=WEEKLY;BYMONTHDAY=1' }, path: 'recurrence.rrule', message: /WEEKLY/ },
  { input: { rrule: 'FREQ=DAILY;BYSETPOS=1' }, path: 'recurrence.rrule', message: /BYSETPOS requires/ },
  { input: { rrule: 'FREQ=DAILY;FOO=1' }, path: 'recurrence.rrule', message: /unknown part "FOO"/ },
  {
    input: { rrule: 'FREQ=DAILY;BYWEEKNO=1' },
    path: 'recurrence.rrule',
    message: /BYWEEKNO is not supported/,
  },
  { input: { rrule: 'FREQ=DAILY;FREQ=WEEKLY' }, path: 'recurrence.rrule', message: /more than once/ },
  { input: { rrule: 'FREQ=DAILY;BYHOUR=24' }, path: 'recurrence.rrule', message: /BYHOUR/ },
  { input: { rrule: 'FREQ DAILY' }, path: 'recurrence.rrule', message: /NAME=VALUE/ },
  {
    input: { rrule: 'FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30' },
    path: 'recurrence.rrule',
    message: /never occurs/,
  },
  { input: { rrule: '' }, path: 'recurrence.rrule', message: /empty/ },
  { input: { rrule: 42 }, path: 'recurrence.rrule', message: /RRULE string/ },
  {
    input: { rrule: 'FREQ=DAILY;INTERVAL=2', interval: 3 },
    path: 'recurrence.interval',
    message: /already set/,
  },
  {
    input: { rrule: 'FREQ=DAILY;COUNT=2', until: '2026-12-31T00:00:00Z' },
    path: 'recurrence.until',
    message: /COUNT/,
  },
];

describe('parseRecurrence rejects', () => {
  for (const c of invalidCases) {
    it(`${JSON.stringify(c.input)} → ${c.path}`, () => {
      const result = parseRecurrence(c.input, c.tz ?? BER);
      assert.equal(result.ok, false);
      if (result.ok) return;
      const hit = result.issues.find((i) => i.path === c.path && c.message.test(i.message));
      assert.ok(hit, `no issue at ${c.path} matching ${c.message}; got ${JSON.stringify(result.issues)}`);
    });
  }

  it('never throws, whatever the input', () => {
    const weird: unknown[] = [
      undefined,
      true,
      Symbol('x'),
      () => 1,
      Object.create(null),
      { preset: { nested: true } },
      { rrule: 'FREQ=DAILY;' + 'BYHOUR=1;'.repeat(200) },
      { rrule: 'x'.repeat(100_000) },
      { rrule: ';;;=;==;' },
      { rrule: 'FREQ=DAILY;UNTIL=99991231T235959Z' },
      { rrule: 'FREQ=YEARLY;INTERVAL=999999999' },
      { timezone: 'Europe/Berlin\u0000', preset: 'daily' },
      { until: '+275760-09-13T00:00:00Z', preset: 'daily' },
    ];
    weird.forEach((input, i) => {
      assert.doesNotThrow(() => parseRecurrence(input, BER), `threw on weird input #${i}`);
      assert.doesNotThrow(() => parseRecurrence(input, 'not a zone'), `threw on weird input #${i}`);
    });
  });
});
