// Recurrence engine: the table-driven cases of recurrence-cases.ts, then parsing and edge cases.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  nextOccurrence,
  parseRecurrence,
  previewOccurrences,
  seriesAnchor,
  upcomingOccurrences,
  type Recurrence,
} from '../../src/domain/recurrence.ts';
import { validateCreate } from '../../src/domain/task.ts';

import { BER, NY, nextCases, previewCases } from './recurrence-cases.ts';

function rec(input: unknown, tz: string, opts: { stored?: boolean } = {}): Recurrence {
  const parsed = parseRecurrence(input, tz, opts);
  if (!parsed.ok) assert.fail(`expected ${JSON.stringify(input)} to parse: ${JSON.stringify(parsed.issues)}`);
  return parsed.value;
}

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

describe('rules with many times a day', () => {
  const list = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => from + i).join(',');
  // Stored before MAX_TIMES_A_DAY (the API now refuses 1,440 times a day): still evaluated, the candidates of a
  // year (days x hours x minutes, half a million) picked by position without being listed.
  const everyMinuteOfTheYear = (setPos: string): Recurrence => ({
    rrule: `FREQ=YEARLY;BYMONTH=${list(1, 12)};BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=${list(0, 23)};BYMINUTE=${list(0, 59)};BYSETPOS=${setPos}`,
    mode: 'schedule',
    timezone: 'UTC',
  });

  it('BYSETPOS counts from either end of days x hours x minutes', () => {
    const anchor = '2026-06-01T00:00:00Z';
    assert.deepEqual(previewOccurrences(everyMinuteOfTheYear('-1'), anchor, anchor, 2), [
      '2026-12-31T23:59:00.000Z',
      '2027-12-31T23:59:00.000Z',
    ]);
    // 2 is Jan 1 00:01, 62 Jan 1 01:01 (hour and minute both move on), -61 Dec 31 22:59.
    assert.deepEqual(previewOccurrences(everyMinuteOfTheYear('2,62,-61'), anchor, anchor, 3), [
      '2026-12-31T22:59:00.000Z',
      '2027-01-01T00:01:00.000Z',
      '2027-01-01T01:01:00.000Z',
    ]);
  });

  it('hourly across the DST changes: a missing hour once, a repeated one once', () => {
    const hourly = rec({ rrule: `FREQ=DAILY;BYHOUR=${list(0, 23)}` }, BER);
    // Berlin, Mar 29 2026: 02:00 CET does not exist (it is 03:00 CEST, which the rule has anyway).
    assert.deepEqual(previewOccurrences(hourly, '2026-03-28T22:00:00Z', '2026-03-28T22:30:00Z', 4), [
      '2026-03-28T23:00:00.000Z',
      '2026-03-29T00:00:00.000Z',
      '2026-03-29T01:00:00.000Z',
      '2026-03-29T02:00:00.000Z',
    ]);
    // Oct 25 2026: 02:00 happens twice; the rule takes the first (CEST), then 03:00 CET.
    assert.deepEqual(previewOccurrences(hourly, '2026-10-24T21:00:00Z', '2026-10-24T21:30:00Z', 4), [
      '2026-10-24T22:00:00.000Z',
      '2026-10-24T23:00:00.000Z',
      '2026-10-25T00:00:00.000Z',
      '2026-10-25T02:00:00.000Z',
    ]);
  });

  it('with COUNT, counts every occurrence since an anchor decades back (a rule stored before the COUNT limit)', () => {
    const hourly = rec({ rrule: `FREQ=DAILY;BYHOUR=${list(0, 23)}`, count: 100_000_000 }, 'UTC', {
      stored: true,
    });
    const series = (completedAt: string) => ({
      anchor: '1990-01-01T00:00:00Z',
      previousDue: null,
      completedAt,
      occurrencesSoFar: 1,
    });
    assert.equal(nextOccurrence(hourly, series('2026-12-05T10:30:00Z')), '2026-12-05T11:00:00.000Z');
    // Occurrence 1 is the anchor; 24 a day after it, so the 200,000th is 199,999 hours later.
    const short = rec({ rrule: `FREQ=DAILY;BYHOUR=${list(0, 23)}`, count: 200_000 }, 'UTC', { stored: true });
    const last = new Date(Date.parse('1990-01-01T00:00:00Z') + 199_999 * 3_600_000).toISOString();
    assert.equal(nextOccurrence(short, series(new Date(Date.parse(last) - 1).toISOString())), last);
    assert.equal(nextOccurrence(short, series(last)), null);
  });
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
  {
    input: { rrule: 'FREQ=DAILY;BYHOUR=9,10,11,12,13,14,15,16,17;BYMINUTE=0,20,40' },
    path: 'recurrence.rrule',
    message: /give 27 times a day; a task recurs at most 24 times a day/,
  },
  { input: 'Daily', path: 'recurrence', message: /unknown preset/ },
  { input: 42, path: 'recurrence', message: /preset string/ },
  { input: null, path: 'recurrence', message: /preset string/ },
  { input: [], path: 'recurrence', message: /preset string/ },
  { input: {}, path: 'recurrence', message: /rrule or preset is required/ },
  // Both only as a task is read (the preset's own rule): these disagree.
  { input: { preset: 'daily', rrule: 'FREQ=WEEKLY' }, path: 'recurrence', message: /not both/ },
  { input: { preset: 'weekdays', rrule: 'FREQ=WEEKLY;BYDAY=MO' }, path: 'recurrence', message: /not both/ },
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
  { input: { preset: 'daily', interval: 0 }, path: 'recurrence.interval', message: /from 1 to 999,999,999/ },
  {
    input: { preset: 'daily', interval: 1.5 },
    path: 'recurrence.interval',
    message: /from 1 to 999,999,999/,
  },
  { input: { preset: 'daily', count: 0 }, path: 'recurrence.count', message: /from 1 to 10,000/ },
  // COUNT bounds the work of finding the next occurrence (RECURRENCE_COUNT_MAX), in the field and in the rule.
  { input: { preset: 'daily', count: 10_001 }, path: 'recurrence.count', message: /from 1 to 10,000/ },
  { input: { preset: 'daily', count: 1e9 }, path: 'recurrence.count', message: /from 1 to 10,000/ },
  {
    input: { rrule: 'FREQ=DAILY;COUNT=10001' },
    path: 'recurrence.rrule',
    message: /COUNT must be .* 10,000/,
  },
  {
    input: { preset: 'daily', count: 3, until: '2026-12-31T00:00:00Z' },
    path: 'recurrence.until',
    message: /count and until/,
  },
  { input: { preset: 'daily', until: '2026-12-31' }, path: 'recurrence.until', message: /instant/ },
  // Rounded up to the whole second, into year 10000: UNTIL=100000101T000000Z, which no parser reads back.
  {
    input: { preset: 'daily', until: '9999-12-31T23:59:59.5Z' },
    path: 'recurrence.until',
    message: /to 9999-12-31T23:59:59Z/,
  },
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

describe('the COUNT limit', () => {
  it('takes 10,000, and a stored rule past it when read back as stored', () => {
    assert.ok(parseRecurrence({ preset: 'daily', count: 10_000 }, 'UTC').ok);
    assert.ok(parseRecurrence({ rrule: 'FREQ=DAILY;COUNT=10000' }, 'UTC').ok);
    assert.ok(parseRecurrence({ preset: 'daily', count: 100_000 }, 'UTC', { stored: true }).ok);
  });
});

describe("upcomingOccurrences (a task's preview: what completion creates)", () => {
  const daily = (extra: object = {}) => rec({ preset: 'daily', ...extra }, BER);
  it('each date shown is what completing the one before on its due date creates', () => {
    const cases: [string, Recurrence, string][] = [
      ['overdue, schedule', daily(), '2026-03-01T08:00:00.000Z'],
      ['ahead, schedule', daily(), '2026-03-20T08:00:00.000Z'],
      [
        'ahead, every 3 days after completion',
        daily({ interval: 3, mode: 'after_completion' }),
        '2026-03-20T08:00:00.000Z',
      ],
      ['weekdays, schedule, COUNT 4', rec({ preset: 'weekdays', count: 4 }, BER), '2026-03-09T08:00:00.000Z'],
    ];
    const now = '2026-03-10T12:00:00.000Z';
    for (const [name, rule, due] of cases) {
      const shown = upcomingOccurrences(rule, { anchor: due, due, occurrencesSoFar: 1 }, now, 5).occurrences;
      assert.ok(shown.length > 0, name);
      assert.ok(
        shown.every((d) => d > now),
        `${name}: nothing in the past`,
      );
      let previousDue = due;
      let completedAt = now;
      shown.forEach((date, i) => {
        const created = nextOccurrence(rule, {
          anchor: due,
          previousDue,
          completedAt,
          occurrencesSoFar: i + 1,
        });
        assert.equal(date, created, `${name}: date ${i + 1}`);
        previousDue = date;
        completedAt = date;
      });
    }
  });

  it("counts the series' COUNT from the occurrences created so far, as completion does", () => {
    // Three of four created, the pending one due on the anchor (its due date moved back): one more, not three.
    const rule = rec({ preset: 'daily', count: 4 }, BER);
    const due = '2026-03-20T08:00:00.000Z';
    const now = '2026-03-10T12:00:00.000Z';
    const shown = upcomingOccurrences(rule, { anchor: due, due, occurrencesSoFar: 3 }, now, 5).occurrences;
    const chain: string[] = [];
    for (let so = 3, previousDue = due; ; so++) {
      const next = nextOccurrence(rule, {
        anchor: due,
        previousDue,
        completedAt: previousDue,
        occurrencesSoFar: so,
      });
      if (next === null) break;
      chain.push(next);
      previousDue = next;
    }
    assert.deepEqual(chain, ['2026-03-21T08:00:00.000Z']);
    assert.deepEqual(shown, chain);
  });

  it('an overdue task starts after now; after_completion counts from now, not from the due date', () => {
    const now = '2026-03-10T12:00:00.000Z';
    assert.deepEqual(
      upcomingOccurrences(
        daily(),
        { anchor: '2026-03-01T08:00:00.000Z', due: '2026-03-01T08:00:00.000Z', occurrencesSoFar: 1 },
        now,
        2,
      ),
      { after: now, occurrences: ['2026-03-11T08:00:00.000Z', '2026-03-12T08:00:00.000Z'] },
    );
    assert.deepEqual(
      upcomingOccurrences(
        daily({ interval: 3, mode: 'after_completion' }),
        { anchor: '2026-03-20T08:00:00.000Z', due: '2026-03-20T08:00:00.000Z', occurrencesSoFar: 1 },
        now,
        2,
      ),
      { after: now, occurrences: ['2026-03-13T08:00:00.000Z', '2026-03-16T08:00:00.000Z'] },
    );
  });
});

describe('a recurrence sent back as it is read', () => {
  it('is the same rule: a client that PUTs the task it read is not refused', () => {
    for (const input of [
      'weekdays',
      { preset: 'daily', interval: 2, until: '2027-01-01T00:00:00Z' },
      { preset: 'monthly', count: 5, mode: 'after_completion' },
    ]) {
      const read = rec(input, BER);
      assert.deepEqual(rec(JSON.parse(JSON.stringify(read)), NY), read, JSON.stringify(input));
    }
  });
});

describe('seriesAnchor', () => {
  it('is the due date, or the instant without one to the minute', () => {
    assert.equal(
      seriesAnchor('2026-03-01T09:00:00.500Z', '2026-03-05T12:34:56.789Z'),
      '2026-03-01T09:00:00.500Z',
    );
    assert.equal(seriesAnchor(null, '2026-03-05T12:34:56.789Z'), '2026-03-05T12:34:00.000Z');
    assert.equal(seriesAnchor(null, '1969-12-31T23:59:30.000Z'), '1969-12-31T23:59:00.000Z');
  });
});

describe('daylight-saving gaps with several times a day', () => {
  const rule = (rrule: string, timezone: string) => {
    const p = parseRecurrence({ rrule, timezone }, timezone);
    assert.ok(p.ok, JSON.stringify(p));
    return p.value;
  };
  it('a time of the first day before the start on the calendar is no occurrence, even moved past it by a gap', () => {
    // New York, 14 March 2027: 02:30 does not exist (03:30 EDT); the series starts at 03:10 EDT.
    const r = rule('FREQ=DAILY;BYHOUR=2,9;BYMINUTE=30', 'America/New_York');
    assert.deepEqual(previewOccurrences(r, '2027-03-14T07:10:00Z', '2027-03-14T07:10:00Z', 3), [
      '2027-03-14T13:30:00.000Z',
      '2027-03-15T06:30:00.000Z',
      '2027-03-15T13:30:00.000Z',
    ]);
  });
  it("keeps a day's real time that a gap-moved earlier time passes (Lord Howe moves 30 minutes)", () => {
    // 3 October 2027 at Lord Howe (+10:30 to +11): 02:00-02:30 does not exist; 02:20 moves to 02:50
    // (15:50Z), and 02:35 exists (15:35Z): both, in that order (02:35 was dropped).
    const r = rule('FREQ=DAILY;BYHOUR=2;BYMINUTE=20,35', 'Australia/Lord_Howe');
    assert.deepEqual(previewOccurrences(r, '2027-10-01T15:20:00Z', '2027-10-01T15:20:00Z', 5), [
      '2027-10-01T15:50:00.000Z', // 2 October, 02:20 and 02:35 (+10:30)
      '2027-10-01T16:05:00.000Z',
      '2027-10-02T15:35:00.000Z', // 3 October, 02:35 (+11), then 02:20 moved to 02:50
      '2027-10-02T15:50:00.000Z',
      '2027-10-03T15:20:00.000Z', // 4 October, 02:20 (+11)
    ]);
  });
});

describe('UNTIL on a 25-hour day', () => {
  it("keeps the day's times within UNTIL when a later time of it is well past UNTIL", () => {
    // New York, 2 November 2025 (fall back): 00:00 EDT is 04:00Z; 23:30 EST is 04:30Z the next day.
    const p = parseRecurrence(
      {
        rrule: 'FREQ=DAILY;UNTIL=20251102T041000Z;BYHOUR=0,23;BYMINUTE=0,30,45',
        timezone: 'America/New_York',
      },
      'America/New_York',
    );
    assert.ok(p.ok, JSON.stringify(p));
    const got = previewOccurrences(p.value, '2025-11-01T04:00:00.000Z', '2025-11-01T00:00:00.000Z', 50);
    assert.equal(got.at(-1), '2025-11-02T04:00:00.000Z');
  });
});

describe('after_completion at the end of a month (counted from the completion, clamped)', () => {
  it('monthly done on Jan 31 is due on Feb 28, about a month later (it came back on Mar 31)', () => {
    const rule = rec({ preset: 'monthly', mode: 'after_completion' }, 'UTC');
    const series = {
      anchor: '2026-01-15T09:00:00Z',
      previousDue: '2026-01-15T09:00:00Z',
      occurrencesSoFar: 1,
    };
    assert.equal(
      nextOccurrence(rule, { ...series, completedAt: '2026-01-31T10:00:00Z' }),
      '2026-02-28T09:00:00.000Z',
    );
    // A month long enough keeps the completion's day; the schedule (calendar) still skips, as RFC 5545 says.
    assert.equal(
      nextOccurrence(rule, { ...series, completedAt: '2026-03-31T10:00:00Z' }),
      '2026-04-30T09:00:00.000Z',
    );
    assert.equal(
      nextOccurrence(rule, { ...series, completedAt: '2026-04-30T10:00:00Z' }),
      '2026-05-30T09:00:00.000Z',
    );
    assert.deepEqual(
      previewOccurrences(rec('monthly', 'UTC'), '2026-01-31T09:00:00Z', '2026-01-31T09:00:00Z', 2),
      ['2026-03-31T09:00:00.000Z', '2026-05-31T09:00:00.000Z'],
    );
  });

  it('yearly done on Feb 29 is due on Feb 28 of the next year (it came back in 4 years)', () => {
    const next = nextOccurrence(rec({ preset: 'yearly', mode: 'after_completion' }, 'UTC'), {
      anchor: '2027-06-01T09:00:00Z',
      previousDue: '2027-06-01T09:00:00Z',
      completedAt: '2028-02-29T10:00:00Z',
      occurrencesSoFar: 1,
    });
    assert.equal(next, '2029-02-28T09:00:00.000Z');
  });

  it('with an explicit BYMONTH too: yearly in February done on Jan 31 is due Feb 28 (the series ended)', () => {
    const at = (rrule: string, completedAt: string) =>
      nextOccurrence(rec({ rrule, mode: 'after_completion' }, 'UTC'), {
        anchor: '2026-01-10T09:00:00Z',
        previousDue: '2026-01-10T09:00:00Z',
        completedAt,
        occurrencesSoFar: 1,
      });
    assert.equal(at('FREQ=YEARLY;BYMONTH=2', '2026-01-15T10:00:00Z'), '2026-02-15T09:00:00.000Z');
    assert.equal(at('FREQ=YEARLY;BYMONTH=2', '2026-01-31T10:00:00Z'), '2026-02-28T09:00:00.000Z');
    assert.equal(at('FREQ=YEARLY;BYMONTH=4', '2026-03-31T10:00:00Z'), '2026-04-30T09:00:00.000Z');
    // So a create of that rule is not refused on the 29th-31st as one that never repeats (it was a 422 then).
    const body = {
      title: 'Tax papers',
      due_date: '2026-02-10T09:00:00Z',
      recurrence: { rrule: 'FREQ=YEARLY;BYMONTH=2', mode: 'after_completion' },
    };
    for (const now of ['2026-01-15T10:00:00Z', '2026-01-31T10:00:00Z'])
      assert.equal(validateCreate(body, { timezone: 'UTC', now: new Date(now) }).ok, true, now);
  });
});

describe('UNTIL at the ends of the years a rule can hold', () => {
  it('a year below 100 is read as written (Date.UTC read UNTIL=0099... as 1999)', () => {
    const rule = rec({ rrule: 'FREQ=DAILY;UNTIL=00991231T235959Z' }, 'UTC');
    assert.equal(rule.rrule, 'FREQ=DAILY;UNTIL=00991231T235959Z');
    assert.ok(parseRecurrence({ rrule: rule.rrule, timezone: 'UTC' }, 'UTC', { stored: true }).ok);
    // Ended long ago: no repeat after a due date of today.
    assert.deepEqual(previewOccurrences(rule, '2026-03-01T09:00:00Z', '2026-03-01T09:00:00Z', 2), []);
  });

  it('past 9999-12-31 in UTC is refused, naming UNTIL (read west of UTC it was stored as year 10000, unreadable)', () => {
    for (const [rrule, tz] of [
      ['FREQ=DAILY;UNTIL=99991231', 'America/New_York'],
      ['FREQ=DAILY;UNTIL=99991231T235959', 'America/Los_Angeles'],
    ] as const) {
      const parsed = parseRecurrence({ rrule }, tz);
      assert.equal(parsed.ok, false, rrule);
      assert.match(JSON.stringify(!parsed.ok && parsed.issues), /UNTIL .* is after 9999-12-31T23:59:59Z/);
    }
    // The same dates east of UTC, and the last second of 9999 in UTC, are within it and read back.
    for (const [rrule, tz] of [
      ['FREQ=DAILY;UNTIL=99991231', 'Asia/Tokyo'],
      ['FREQ=DAILY;UNTIL=99991231T235959Z', 'America/New_York'],
    ] as const) {
      const stored = rec({ rrule }, tz);
      assert.ok(
        parseRecurrence({ rrule: stored.rrule, timezone: tz }, 'UTC', { stored: true }).ok,
        stored.rrule,
      );
    }
  });

  it('before 0001-01-01 in UTC is refused, naming UNTIL (read east of UTC it was stored as year -1, "00-1")', () => {
    const parsed = parseRecurrence(
      { rrule: 'FREQ=DAILY;UNTIL=00010101T000000', timezone: 'Asia/Tokyo' },
      'UTC',
    );
    assert.equal(parsed.ok, false);
    assert.match(JSON.stringify(!parsed.ok && parsed.issues), /UNTIL .* is before 0001-01-01T00:00:00Z/);
    const zero = parseRecurrence(
      { rrule: 'FREQ=DAILY;UNTIL=00000101T000000', timezone: 'Asia/Tokyo' },
      'UTC',
    );
    assert.equal(zero.ok, false);
  });

  it('makes no occurrence past 9999-12-31T23:59:59Z in UTC, the last local day of 9999 west of UTC too', () => {
    const rule = rec({ preset: 'daily', timezone: 'America/Los_Angeles' }, 'UTC');
    // Daily at 18:00 in Los Angeles: 9999-12-30 18:00 is 9999-12-31T02:00Z; 9999-12-31 18:00 is in year 10000.
    const next = nextOccurrence(rule, {
      anchor: '9999-12-31T02:00:00Z',
      previousDue: null,
      completedAt: '9999-12-31T02:00:00Z',
      occurrencesSoFar: 1,
    });
    assert.equal(next, null);
  });
});
