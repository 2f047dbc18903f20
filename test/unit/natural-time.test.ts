/** Dates and reminders in words (pure): read on the user's wall clock, placed in the user's zone. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import {
  localTime,
  resolveDuration,
  resolveRecurrence,
  resolveReminder,
  resolveWhen,
} from '../../src/domain/natural-time.ts';
import { parseRecurrence, previewOccurrences } from '../../src/domain/recurrence.ts';

// Sunday 1 March 2026, 13:00 in Berlin (CET, +01:00); Berlin moves to CEST (+02:00) on 29 March at 02:00.
const berlin = { now: new Date('2026-03-01T12:00:00Z'), timeZone: 'Europe/Berlin' };
// 07:00 in New York (EST, -05:00); New York moves to EDT (-04:00) on 8 March.
const newYork = { now: new Date('2026-03-01T12:00:00Z'), timeZone: 'America/New_York' };

describe('resolveWhen', () => {
  const cases: [string, typeof berlin, string | null][] = [
    ['tomorrow 9am', berlin, '2026-03-02T08:00:00.000Z'],
    ['tomorrow at 9', berlin, '2026-03-02T08:00:00.000Z'],
    ['in 30 minutes', berlin, '2026-03-01T12:30:00.000Z'],
    ['in 2 hours', newYork, '2026-03-01T14:00:00.000Z'],
    ['next friday at 5pm', berlin, '2026-03-06T16:00:00.000Z'],
    ['next Friday', berlin, '2026-03-06T11:00:00.000Z'], // a day without a time: noon
    // ... also a day relative to today (chrono gave these the time it was now).
    ['tomorrow', berlin, '2026-03-02T11:00:00.000Z'],
    ['today', newYork, '2026-03-01T17:00:00.000Z'],
    ['in 2 days', berlin, '2026-03-03T11:00:00.000Z'],
    ['tomorrow morning', berlin, '2026-03-02T05:00:00.000Z'], // a part of the day keeps its hour (06:00)
    ['tonight', newYork, '2026-03-02T03:00:00.000Z'], // 22:00 EST
    // A day said to be past is before now (it was read as the next one: "last Friday" was Friday 6 March).
    ['last friday', berlin, '2026-02-27T11:00:00.000Z'],
    ['last friday at 5pm', berlin, '2026-02-27T16:00:00.000Z'],
    ['past friday', berlin, '2026-02-27T11:00:00.000Z'],
    ['friday last week', berlin, '2026-02-27T11:00:00.000Z'],
    ['last sunday', berlin, '2026-02-22T11:00:00.000Z'], // said on a Sunday: a week ago
    // Across a daylight-saving change: the offset of the day named, not today's.
    ['March 30 9:00', berlin, '2026-03-30T07:00:00.000Z'],
    ['March 10 9am', newYork, '2026-03-10T13:00:00.000Z'],
    // A wall time in the spring-forward gap moves forward (as recurrence does, ADR 0003).
    ['March 29 2:30am', berlin, '2026-03-29T01:30:00.000Z'],
    // A written offset is the text's own.
    ['tomorrow 9:00 +02:00', berlin, '2026-03-02T07:00:00.000Z'],
    // ... also one a list of zones missed: its time was taken for the user's wall clock, shifted by the offset.
    ['tomorrow 9am ET', newYork, '2026-03-02T14:00:00.000Z'],
    ['tomorrow 9am PT', newYork, '2026-03-02T17:00:00.000Z'],
    ['tomorrow 9am CT', newYork, '2026-03-02T15:00:00.000Z'],
    ['tomorrow at 9 +1', newYork, '2026-03-02T08:00:00.000Z'],
    ['tomorrow 9am MSK', berlin, '2026-03-02T06:00:00.000Z'],
    ['tomorrow 9am +02', berlin, '2026-03-02T07:00:00.000Z'],
    ['tomorrow 9am UTC', berlin, '2026-03-02T09:00:00.000Z'],
    // chrono reads a signed number after a time as the end of a range, no offset: refused, not 9:00 in Berlin.
    ['tomorrow 9:00 -05', berlin, null],
    ['tomorrow 9:00-05:00', berlin, null],
    ['tomorrow 9:00 - 10:00', berlin, '2026-03-02T08:00:00.000Z'], // a range: its start
    ['tomorrow 11am-1', berlin, null], // an end before the start: an offset as much as a range
    ['tomorrow 22:00-02:00', berlin, null],
    // ... and so is one without spaces whose end is later that day (it was refused as an offset).
    ['tomorrow 9:00-10:00', berlin, '2026-03-02T08:00:00.000Z'],
    ['tomorrow 9am-10', berlin, '2026-03-02T08:00:00.000Z'],
    ['tomorrow 9:30-9:45', berlin, '2026-03-02T08:30:00.000Z'],
    // ... as is a range of times whose end is no offset, and one of days (both were refused).
    ['tomorrow 14:00-15:30', berlin, '2026-03-02T13:00:00.000Z'],
    ['March 5-8', berlin, '2026-03-05T11:00:00.000Z'],
    ['June 10-12', berlin, '2026-06-10T10:00:00.000Z'],
    ['2026-03-05T09:00:00Z', berlin, '2026-03-05T09:00:00.000Z'],
    // Not a date, or more than a date: nothing.
    ['soon', berlin, null],
    ['buy milk tomorrow', berlin, null],
    ['', berlin, null],
    ['tomorrow '.repeat(20), berlin, null],
  ];
  for (const [text, ctx, expected] of cases)
    it(`${JSON.stringify(text)} in ${ctx.timeZone} -> ${expected}`, () => {
      assert.equal(resolveWhen(text, ctx)?.instant ?? null, expected);
    });

  it('reads a zone written on its daylight-saving day as that zone, said anywhere (it was taken for the wall clock)', () => {
    // New York moves to EDT on Sunday 8 March 2026: 9am that day is 13:00Z. chrono takes ET's offset from a
    // date that moves with the reference's offset, so two readings at different references differ.
    const losAngeles = { now: new Date('2026-03-07T20:00:00Z'), timeZone: 'America/Los_Angeles' };
    const tokyo = { now: new Date('2026-03-07T10:00:00Z'), timeZone: 'Asia/Tokyo' };
    assert.equal(resolveWhen('March 8 9am ET', losAngeles)?.instant, '2026-03-08T13:00:00.000Z');
    assert.equal(resolveWhen('March 8 9am ET', tokyo)?.instant, '2026-03-08T13:00:00.000Z');
    assert.equal(resolveWhen('tomorrow 9am ET', losAngeles)?.instant, '2026-03-08T13:00:00.000Z');
  });

  it('counts "in 30 minutes" as elapsed time, also across a daylight-saving change', () => {
    // 01:45 EDT on the night New York falls back to EST (02:00 EDT -> 01:00 EST): 30 minutes later is
    // 01:15 EST, 06:15 UTC (on the wall clock it would be an hour later).
    const fallBack = { now: new Date('2026-11-01T05:45:00Z'), timeZone: 'America/New_York' };
    assert.equal(resolveWhen('in 30 minutes', fallBack)?.instant, '2026-11-01T06:15:00.000Z');
    assert.equal(resolveWhen('IN 30 MINUTES', berlin)?.instant, '2026-03-01T12:30:00.000Z');
  });

  it('adds months and years up to the last day of the month reached, as recurrence does (ADR 0003)', () => {
    // chrono's Date#setMonth overflowed: "in a month" said on 31 January was 3 March, February skipped.
    const on = (now: string) => ({ now: new Date(now), timeZone: 'Europe/Berlin' });
    const read = (text: string, now: string) => {
      const r = resolveWhen(text, on(now));
      return r && localTime(r.instant, 'Europe/Berlin');
    };
    const jan31 = '2027-01-31T15:00:00Z'; // Sunday 16:00 CET
    assert.equal(read('in a month', jan31), '2027-02-28T12:00:00+01:00');
    assert.equal(read('in 1 month at 9', jan31), '2027-02-28T09:00:00+01:00');
    assert.equal(read('in 1 month 2 days', jan31), '2027-03-02T12:00:00+01:00');
    assert.equal(read('in 3 months', jan31), '2027-04-30T12:00:00+02:00');
    const mar31 = '2026-03-31T15:00:00Z'; // Tuesday 17:00 CEST
    assert.equal(read('next month', mar31), '2026-04-30T12:00:00+02:00');
    assert.equal(read('next month at 9am', mar31), '2026-04-30T09:00:00+02:00');
    assert.equal(read('a month ago', mar31), '2026-02-28T12:00:00+01:00');
    const feb29 = '2028-02-29T15:00:00Z';
    assert.equal(read('in a year', feb29), '2029-02-28T12:00:00+01:00');
    assert.equal(read('next year', feb29), '2029-02-28T12:00:00+01:00');
    // A month named with its day is that day.
    assert.equal(read('feb 15', jan31), '2027-02-15T12:00:00+01:00');
  });

  it('names whole minutes unless the words say seconds (a repeat takes its seconds from the due date)', () => {
    const at = { now: new Date('2026-12-07T10:00:50.233Z'), timeZone: 'Europe/Paris' };
    assert.equal(resolveWhen('in 30 minutes', at)?.instant, '2026-12-07T10:31:00.000Z');
    assert.equal(resolveWhen('2 hours from now', at)?.instant, '2026-12-07T12:01:00.000Z');
    assert.equal(resolveWhen('in 5 seconds', at)?.instant, '2026-12-07T10:00:55.233Z');
    assert.equal(resolveWhen('tomorrow 9:15:20', at)?.instant, '2026-12-08T08:15:20.000Z');
  });

  it('says how words were read, on the user’s wall clock; not for an ISO instant', () => {
    assert.deepEqual(resolveWhen('tomorrow 9am', berlin)?.resolved, {
      said: 'tomorrow 9am',
      as: '2026-03-02T08:00:00.000Z',
      local: '2026-03-02T09:00:00+01:00',
    });
    assert.equal(resolveWhen('2026-03-05T09:00:00Z', berlin)?.resolved, undefined);
  });
});

/**
 * resolveWhen in a child process whose own zone (TZ) is `processZone`: the zone of the process is read when
 * Date is first used, so setting TZ here would not reliably take effect. Each case is [text, now, user's zone].
 */
function resolvedInProcessZone(processZone: string, cases: [string, string, string][]) {
  const module = new URL('../../src/domain/natural-time.ts', import.meta.url).href;
  const script = `
    const { resolveWhen } = await import(${JSON.stringify(module)});
    const cases = ${JSON.stringify(cases)};
    console.log(JSON.stringify({
      // The process's own offset on 1 July 2026: the child runs in the zone asked for.
      julyOffset: new Date('2026-07-01T12:00:00Z').getTimezoneOffset(),
      instants: cases.map(([text, now, timeZone]) => resolveWhen(text, { now: new Date(now), timeZone })?.instant ?? null),
    }));`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, TZ: processZone },
    encoding: 'utf8',
  });
  return JSON.parse(out) as { julyOffset: number; instants: (string | null)[] };
}

describe("resolveWhen does not depend on the server process's time zone", () => {
  // Europe/Berlin (the process's zone, a laptop running `npm start`) moves to summer time on 29 March 2026
  // at 01:00 UTC (02:00 -> 03:00): chrono did its arithmetic on Date's local time, in that zone. New York is
  // on summer time (-04:00) from 8 March.
  const cases: [string, string, string, string][] = [
    // Hours, minutes and seconds are elapsed time from now.
    ['in 3 hours', '2026-03-28T22:00:00Z', 'Europe/Berlin', '2026-03-29T01:00:00.000Z'], // 23:00 CET -> 03:00 CEST
    ['in 3 hours', '2026-03-28T23:30:00Z', 'UTC', '2026-03-29T02:30:00.000Z'],
    ['in 30 minutes', '2026-03-29T00:30:00Z', 'Europe/Berlin', '2026-03-29T01:00:00.000Z'],
    ['2 hours from now', '2026-03-29T00:30:00Z', 'Asia/Tokyo', '2026-03-29T02:30:00.000Z'],
    ['in an hour', '2026-03-29T01:30:00Z', 'Europe/London', '2026-03-29T02:30:00.000Z'],
    ['in 90 minutes', '2026-03-28T23:30:00Z', 'Europe/Berlin', '2026-03-29T01:00:00.000Z'],
    ['in 5 seconds', '2026-03-29T00:59:58Z', 'UTC', '2026-03-29T01:00:03.000Z'],
    ['3 hours ago', '2026-03-29T01:30:00Z', 'Europe/London', '2026-03-28T22:30:00.000Z'],
    // A day without a time of day is noon in the user's zone (it was the time it is now, when the process's
    // zone skipped it).
    ['tomorrow', '2026-03-29T01:30:00Z', 'Europe/London', '2026-03-30T11:00:00.000Z'],
    ['in 2 days', '2026-03-29T01:30:00Z', 'Europe/London', '2026-03-31T11:00:00.000Z'],
    ['in a week', '2026-03-29T01:30:00Z', 'Europe/London', '2026-04-05T11:00:00.000Z'],
    ['today', '2026-03-29T01:30:00Z', 'Europe/London', '2026-03-29T11:00:00.000Z'],
    // A time later today: chrono's forward-date rule compared it with now shifted by the process's offset, so
    // west of UTC it was taken for past, and moved on to the next week or year.
    ['friday 9am', '2026-03-06T07:00:00Z', 'Europe/Berlin', '2026-03-06T08:00:00.000Z'], // Friday 08:00 CET
    ['March 2 9am', '2026-03-02T07:00:00Z', 'Europe/Berlin', '2026-03-02T08:00:00.000Z'],
    // A wall time the process's zone skips, in a zone that has it.
    ['March 29 2:30am', '2026-03-28T23:30:00Z', 'UTC', '2026-03-29T02:30:00.000Z'],
    ['March 29 2:30am', '2026-03-28T23:30:00Z', 'Europe/London', '2026-03-29T01:30:00.000Z'],
    // ... and in the user's own zone, which skips it too: forward, to 03:30 CEST.
    ['March 29 2:30am', '2026-03-28T23:30:00Z', 'Europe/Berlin', '2026-03-29T01:30:00.000Z'],
  ];
  const julyOffsets: Record<string, number> = { 'Europe/Berlin': -120, 'America/New_York': 240, UTC: 0 };
  for (const processZone of Object.keys(julyOffsets))
    it(`in a process whose zone is ${processZone}`, () => {
      const { julyOffset, instants } = resolvedInProcessZone(
        processZone,
        cases.map(([text, now, zone]) => [text, now, zone]),
      );
      assert.equal(julyOffset, julyOffsets[processZone]);
      assert.deepEqual(
        cases.map(([text, now, zone], i) => `${text} at ${now} in ${zone}: ${instants[i]}`),
        cases.map(([text, now, zone, expected]) => `${text} at ${now} in ${zone}: ${expected}`),
      );
    });

  it('leaves the global Date as it was', () => {
    const before = globalThis.Date;
    assert.equal(resolveWhen('in 3 hours', berlin)?.instant, '2026-03-01T15:00:00.000Z');
    assert.equal(globalThis.Date, before);
    assert.equal(new Date(2026, 2, 1).getTime(), new before(2026, 2, 1).getTime());
  });
});

describe('resolveReminder', () => {
  it('reads "n units before" as an offset before the due date', () => {
    assert.equal(resolveReminder('30 minutes before', berlin)?.value, 'PT30M');
    assert.equal(resolveReminder('1 hour before', berlin)?.value, 'PT1H');
    assert.equal(resolveReminder('2 days before', berlin)?.value, 'P2D');
    assert.equal(resolveReminder('1 week ahead', berlin)?.value, 'P1W');
    assert.equal(resolveReminder('an hour before', berlin)?.value, 'PT1H');
    assert.equal(resolveReminder('half an hour before', berlin)?.value, 'PT30M');
  });

  it('reads a time as an instant, and passes ISO 8601 as it is', () => {
    assert.equal(resolveReminder('in 30 minutes', berlin)?.value, '2026-03-01T12:30:00.000Z');
    assert.equal(resolveReminder('tomorrow 8am', newYork)?.value, '2026-03-02T13:00:00.000Z');
    assert.deepEqual(resolveReminder('PT1H', berlin), { value: 'PT1H' });
    assert.deepEqual(resolveReminder(' PT1H ', berlin), { value: 'PT1H' }); // trimmed: REST refuses the spaces
    assert.equal(resolveReminder('2026-03-05T09:00:00Z', berlin)?.value, '2026-03-05T09:00:00.000Z');
    assert.equal(resolveReminder('whenever', berlin), null);
    // A time already past is no reminder.
    assert.equal(resolveReminder('yesterday', berlin), null);
    assert.equal(resolveReminder('5 minutes ago', berlin), null);
    assert.equal(resolveReminder('last friday', berlin), null);
    assert.equal(resolveReminder('last friday at 5pm', newYork), null);
    assert.equal(resolveReminder('past friday', berlin), null); // words, though they begin as a duration does
  });
});

it('localTime writes an instant on a zone’s wall clock with its offset', () => {
  assert.equal(localTime('2026-07-01T12:00:00Z', 'Europe/Berlin'), '2026-07-01T14:00:00+02:00');
  assert.equal(localTime('2026-03-01T12:00:00.000Z', 'UTC'), '2026-03-01T12:00:00+00:00');
});

describe('resolveRecurrence', () => {
  // Sunday 1 March 2026, 13:00 in Berlin.
  const cases: [string, string, string][] = [
    [
      'every other Monday at 9',
      'FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=9;BYMINUTE=0',
      '2026-03-02T09:00:00+01:00',
    ],
    [
      'every Tuesday and Thursday at 18:30',
      'FREQ=WEEKLY;BYDAY=TU,TH;BYHOUR=18;BYMINUTE=30',
      '2026-03-03T18:30:00+01:00',
    ],
    [
      'every mon, wed and fri at 7am',
      'FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=7;BYMINUTE=0',
      '2026-03-02T07:00:00+01:00',
    ],
    ['every weekday', 'FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR', '2026-03-02T09:00:00+01:00'],
    ['every day at noon', 'FREQ=DAILY;BYHOUR=12;BYMINUTE=0', '2026-03-02T12:00:00+01:00'],
    ['every 2 days at midnight', 'FREQ=DAILY;INTERVAL=2;BYHOUR=0;BYMINUTE=0', '2026-03-02T00:00:00+01:00'],
    ['every month on the 1st', 'FREQ=MONTHLY;BYMONTHDAY=1', '2026-04-01T09:00:00+02:00'],
    ['every 3 weeks', 'FREQ=WEEKLY;INTERVAL=3', '2026-03-02T09:00:00+01:00'],
    ['weekly at 7pm', 'FREQ=WEEKLY;BYHOUR=19;BYMINUTE=0', '2026-03-01T19:00:00+01:00'], // later today
    ['every Sunday at 12', 'FREQ=WEEKLY;BYDAY=SU;BYHOUR=12;BYMINUTE=0', '2026-03-08T12:00:00+01:00'], // today's is past
    [
      'every 2 weeks on mon, wed at 8',
      'FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;BYHOUR=8;BYMINUTE=0',
      '2026-03-02T08:00:00+01:00',
    ],
    ['every other week on Friday', 'FREQ=WEEKLY;INTERVAL=2;BYDAY=FR', '2026-03-06T09:00:00+01:00'],
    ['every last Friday', 'FREQ=MONTHLY;BYDAY=-1FR', '2026-03-27T09:00:00+01:00'],
    [
      'the first Monday of every month at 10',
      'FREQ=MONTHLY;BYDAY=1MO;BYHOUR=10;BYMINUTE=0',
      '2026-03-02T10:00:00+01:00',
    ],
    ['every 2nd Tuesday of the month', 'FREQ=MONTHLY;BYDAY=2TU', '2026-03-10T09:00:00+01:00'],
    // Without "of the month", every other Tuesday, as it is usually meant.
    ['every 2nd Tuesday', 'FREQ=WEEKLY;INTERVAL=2;BYDAY=TU', '2026-03-03T09:00:00+01:00'],
    // The last Sunday of March 2026 is the day Berlin moves to summer time.
    [
      'on the last Sunday of each month at 12',
      'FREQ=MONTHLY;BYDAY=-1SU;BYHOUR=12;BYMINUTE=0',
      '2026-03-29T12:00:00+02:00',
    ],
  ];
  for (const [text, rrule, first] of cases)
    it(`${JSON.stringify(text)} -> ${rrule}, first ${first}`, () => {
      const r = resolveRecurrence(text, berlin);
      assert.equal(r?.rrule, rrule);
      assert.equal(localTime(r!.first, 'Europe/Berlin'), first);
      assert.deepEqual(r!.resolved, { said: text, as: rrule, local: `first ${first}` });
      assert.ok(parseRecurrence({ rrule }, 'Europe/Berlin').ok, 'the engine takes the rule');
    });

  it('a weekday of each month repeats on that weekday of the next months, the time said kept', () => {
    const next = (text: string) => {
      const r = resolveRecurrence(text, berlin)!;
      const p = parseRecurrence({ rrule: r.rrule }, 'Europe/Berlin');
      assert.ok(p.ok, JSON.stringify(p));
      return previewOccurrences(p.value, r.first, r.first, 2).map((at) => localTime(at, 'Europe/Berlin'));
    };
    assert.deepEqual(next('every last Friday'), ['2026-04-24T09:00:00+02:00', '2026-05-29T09:00:00+02:00']);
    assert.deepEqual(next('every 2nd Tuesday of the month'), [
      '2026-04-14T09:00:00+02:00',
      '2026-05-12T09:00:00+02:00',
    ]);
    assert.deepEqual(next('on the last Sunday of each month at 12'), [
      '2026-04-26T12:00:00+02:00',
      '2026-05-31T12:00:00+02:00',
    ]);
    assert.deepEqual(next('every 2 weeks on mon, wed at 8'), [
      '2026-03-04T08:00:00+01:00',
      '2026-03-16T08:00:00+01:00',
    ]);
  });

  it("keeps the time said for every repeat, whatever the task's due time or a daylight-saving gap on the first day", () => {
    const ny = { ...berlin, timeZone: 'America/New_York' };
    const rule = (text: string) => {
      const p = parseRecurrence({ rrule: resolveRecurrence(text, ny)!.rrule }, 'America/New_York');
      assert.ok(p.ok, JSON.stringify(p));
      return p.value;
    };
    // Due Tuesday 17:00: that is the first; the repeats are Mondays at 9 (they were Mondays at 17:00).
    assert.deepEqual(
      previewOccurrences(rule('every Monday at 9'), '2026-12-08T22:00:00Z', '2026-12-08T22:00:00Z', 2),
      ['2026-12-14T14:00:00.000Z', '2026-12-21T14:00:00.000Z'],
    );
    // First due on 14 March 2027 at 2:30, which does not exist (3:30 EDT): the next days are at 2:30 again.
    assert.deepEqual(
      previewOccurrences(rule('every day at 2:30'), '2027-03-14T07:30:00Z', '2027-03-14T07:30:00Z', 2),
      ['2027-03-15T06:30:00.000Z', '2027-03-16T06:30:00.000Z'],
    );
  });

  it('is null for what it cannot read', () => {
    for (const text of [
      'every blue moon',
      'every day at 25',
      'every week on the 3rd',
      'daily',
      'sometimes',
      'every other weekday', // no RRULE says it
      'the first Monday', // a day, not a repeat
      'every day on Monday',
      'every month on Monday',
      'every fifth Friday of the month', // not every month has one
    ])
      assert.equal(resolveRecurrence(text, berlin), null, text);
  });
});

it('resolveDuration reads a length of time', () => {
  assert.equal(resolveDuration('10 minutes'), 'PT10M');
  assert.equal(resolveDuration('an hour'), 'PT1H');
  assert.equal(resolveDuration('half an hour'), 'PT30M');
  assert.equal(resolveDuration('2 days'), 'P2D');
  assert.equal(resolveDuration('PT15M'), 'PT15M');
  assert.equal(resolveDuration('a while'), null);
});
