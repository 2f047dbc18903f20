/**
 * The task aggregate (pure): validation of what clients send (each rule, its limit on both sides, and the
 * field it names), the cross-field invariant, and the state transitions with their events.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConflictError, UnprocessableError, type Result } from '../../src/domain/errors.ts';
import {
  applyPatch,
  changedFields,
  checkInvariants,
  complete,
  LIMITS,
  needsTimeZone,
  newTask,
  parseInstant,
  parseReminderOffset,
  PRIORITY_RANK,
  reopen,
  toggle,
  validateCreate,
  validatePatch,
  type Task,
  type TaskFields,
} from '../../src/domain/task.ts';

const CTX = { timezone: 'Europe/Berlin' };
const NOW = new Date('2026-03-01T12:00:00Z');
const LATER = new Date('2026-03-02T08:30:00Z');

/** The issues of a failed result, as `path: message`. */
const issues = <T>(r: Result<T>) => {
  assert.equal(r.ok, false, 'expected a validation failure');
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
};
const value = <T>(r: Result<T>): T => {
  assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.issues));
  return r.value;
};
const create = (body: Record<string, unknown>) => validateCreate({ title: 'T', ...body }, CTX);
const only = (body: Record<string, unknown>) => issues(create(body));

const fields = (over: Partial<TaskFields> = {}): TaskFields => ({
  title: 'Buy milk',
  description: '',
  status: 'pending',
  priority: 'none',
  tags: [],
  due_date: null,
  reminders: null,
  recurrence: null,
  ...over,
});

describe('validateCreate', () => {
  it('keeps a tag written again in another case once, as first written; an exact repeat is refused', () => {
    const r = create({ tags: ['Work', ' work', 'WORK', 'home'] });
    assert.ok(r.ok);
    assert.deepEqual(r.value.tags, ['Work', 'home']);
    assert.equal(create({ tags: ['work', 'work'] }).ok, false);
  });

  it('counts lengths in code points, as JSON Schema maxLength does', () => {
    assert.ok(create({ title: '😍'.repeat(500), tags: ['😍'.repeat(50)] }).ok);
    assert.equal(create({ title: '😍'.repeat(501) }).ok, false);
    // Counted as stored, in NFC: U+FB2C is three code points composed (the event's schema refused it: a 500).
    assert.deepEqual(only({ title: '\uFB2C'.repeat(200), tags: ['\uFB2C'.repeat(20)] }), [
      'title: must be at most 500 characters',
      'tags[0]: must be at most 50 characters',
    ]);
    assert.ok(create({ title: '\uFB2C'.repeat(166) }).ok);
  });

  it('fills the defaults of a task with a title only', () => {
    assert.deepEqual(value(validateCreate({ title: 'Buy milk' }, {})), fields());
  });

  it('keeps every valid field, normalized', () => {
    const v = value(
      create({
        title: '  Buy milk  ',
        description: 'two litres',
        status: 'completed',
        priority: 'HIGH',
        tags: [' home ', 'Errand'],
        due_date: '2026-12-01T10:00:00+01:00',
        reminders: ['pt1h', 'P1D', '2026-11-30T08:00:00Z', 'PT1H'],
        recurrence: 'weekly',
      }),
    );
    assert.deepEqual(v, {
      title: 'Buy milk',
      description: 'two litres',
      status: 'completed',
      priority: 'high',
      tags: ['home', 'Errand'],
      due_date: '2026-12-01T09:00:00.000Z',
      reminders: ['PT1H', 'P1D', '2026-11-30T08:00:00.000Z'],
      recurrence: { rrule: 'FREQ=WEEKLY', mode: 'schedule', timezone: 'Europe/Berlin', preset: 'weekly' },
    });
  });

  it('requires a JSON object with a title, and names unknown fields', () => {
    for (const body of [null, 'title', 42, ['title']])
      assert.deepEqual(issues(validateCreate(body, CTX)), [': body must be a JSON object']);
    assert.deepEqual(issues(validateCreate({}, CTX)), ['title: is required']);
    assert.deepEqual(issues(validateCreate({ title: undefined }, CTX)), ['title: is required']);
    assert.deepEqual(issues(create({ colour: 'red', id: 'x' })), [
      'colour: unknown field; allowed: title, description, status, priority, tags, due_date, reminders, recurrence',
      'id: unknown field; allowed: title, description, status, priority, tags, due_date, reminders, recurrence',
    ]);
  });

  it('reports every invalid field at once', () => {
    assert.deepEqual(issues(validateCreate({ title: '', priority: 'asap', tags: 'x' }, CTX)), [
      'title: must not be empty',
      'priority: must be one of none, low, medium, high, urgent',
      'tags: must be an array of strings',
    ]);
  });

  it('checks the title: a string, not blank, at most 500 characters after trimming', () => {
    assert.deepEqual(only({ title: 7 }), ['title: must be a string']);
    assert.deepEqual(only({ title: '   ' }), ['title: must not be empty']);
    assert.deepEqual(only({ title: 'x'.repeat(LIMITS.titleMax + 1) }), [
      'title: must be at most 500 characters',
    ]);
    assert.equal(value(create({ title: 'x'.repeat(LIMITS.titleMax) })).title.length, 500);
    assert.equal(value(create({ title: ` ${'x'.repeat(LIMITS.titleMax)} ` })).title.length, 500);
    assert.equal(value(create({ title: 'a' })).title, 'a');
  });

  it('checks the description: a string of at most 10,000 characters; null is empty', () => {
    assert.equal(value(create({ description: null })).description, '');
    assert.deepEqual(only({ description: 5 }), ['description: must be a string']);
    assert.deepEqual(only({ description: 'x'.repeat(LIMITS.descriptionMax + 1) }), [
      'description: must be at most 10000 characters',
    ]);
    assert.equal(
      value(create({ description: 'x'.repeat(LIMITS.descriptionMax) })).description.length,
      10_000,
    );
    assert.equal(value(create({ description: '  kept as is ' })).description, '  kept as is ');
  });

  it('refuses text the databases cannot store (NUL, an unpaired surrogate) in title, description and tags', () => {
    const nul = 'must not contain NUL characters (U+0000)';
    const surrogate = 'must be valid Unicode (it has an unpaired UTF-16 surrogate)';
    assert.deepEqual(only({ title: 'a\u0000b' }), [`title: ${nul}`]);
    assert.deepEqual(only({ description: 'x\uD800' }), [`description: ${surrogate}`]);
    assert.deepEqual(only({ tags: ['ok', 'b\u0000'] }), [`tags[1]: ${nul}`]);
    assert.deepEqual(
      value(create({ title: 'Tee 🍵', description: '😀', tags: ['日本'] })),
      fields({ title: 'Tee 🍵', description: '😀', tags: ['日本'] }),
    );
  });

  it('checks status and priority against their lists (priority case-insensitive)', () => {
    assert.equal(value(create({ status: 'pending' })).status, 'pending');
    for (const status of ['done', 'PENDING', 3])
      assert.deepEqual(only({ status }), ['status: must be one of pending, completed']);
    for (const p of ['none', 'low', 'medium', 'high', 'urgent'])
      assert.equal(value(create({ priority: p.toUpperCase() })).priority, p);
    assert.deepEqual(only({ priority: 2 }), ['priority: must be one of none, low, medium, high, urgent']);
    assert.deepEqual(only({ priority: null }), ['priority: must be one of none, low, medium, high, urgent']);
  });

  it('checks tags: at most 20, each a non-blank string of at most 50, none repeated exactly', () => {
    assert.deepEqual(only({ tags: { a: 1 } }), ['tags: must be an array of strings']);
    assert.deepEqual(only({ tags: null }), ['tags: must be an array of strings']);
    const many = Array.from({ length: LIMITS.tagsMax + 1 }, (_, i) => `t${i}`);
    assert.deepEqual(only({ tags: many }), ['tags: must have at most 20 tags']);
    assert.equal(value(create({ tags: many.slice(0, LIMITS.tagsMax) })).tags.length, 20);
    assert.deepEqual(only({ tags: ['ok', 3, ' ', 'y'.repeat(LIMITS.tagMax + 1), 'ok'] }), [
      'tags[1]: must be a string',
      'tags[2]: must not be empty',
      'tags[3]: must be at most 50 characters',
      'tags[4]: duplicates another tag',
    ]);
    assert.deepEqual(value(create({ tags: ['y'.repeat(LIMITS.tagMax), 'a'] })).tags, ['y'.repeat(50), 'a']);
    // A comma could never be filtered on (?tag=a,b is two tags).
    assert.deepEqual(only({ tags: ['ok', 'a,b'] }), [
      'tags[1]: must not contain a comma (a tag filter separates tags with commas)',
    ]);
  });

  it('checks due_date: an ISO 8601 instant with an offset, canonical in UTC; null is none', () => {
    assert.equal(value(create({ due_date: null })).due_date, null);
    assert.equal(
      value(create({ due_date: '2026-06-01T09:00:00-04:00' })).due_date,
      '2026-06-01T13:00:00.000Z',
    );
    for (const due_date of ['2026-06-01T09:00:00', '2026-06-01', 'tomorrow', 20260601])
      assert.deepEqual(only({ due_date }), [
        'due_date: must be an ISO 8601 date-time with an offset, in years 0001-9999 (UTC), e.g. 2026-01-10T09:00:00Z',
      ]);
  });

  it('checks reminders: at most 10 offsets (P...) or instants, deduplicated; null is the default', () => {
    const due = '2026-12-01T09:00:00Z';
    assert.equal(value(create({ reminders: null })).reminders, null);
    assert.deepEqual(only({ due_date: due, reminders: 'PT1H' }), [
      'reminders: must be an array of ISO 8601 durations (PT1H) or instants, or null',
    ]);
    const eleven = Array.from({ length: LIMITS.remindersMax + 1 }, (_, i) => `PT${i + 1}M`);
    assert.deepEqual(only({ due_date: due, reminders: eleven }), [
      'reminders: must have at most 10 reminders',
    ]);
    assert.equal(value(create({ due_date: due, reminders: eleven.slice(0, 10) })).reminders!.length, 10);
    assert.deepEqual(only({ due_date: due, reminders: [1, 'P1M', 'PT0S', 'soon', 'p1w'] }), [
      'reminders[0]: must be a string',
      'reminders[1]: must be a positive ISO 8601 duration of weeks, days, hours or minutes up to 366 days (e.g. PT1H, P1D)',
      'reminders[2]: must be a positive ISO 8601 duration of weeks, days, hours or minutes up to 366 days (e.g. PT1H, P1D)',
      'reminders[3]: must be an ISO 8601 duration (PT1H) or an instant; must be an ISO 8601 date-time with an offset, in years 0001-9999 (UTC), e.g. 2026-01-10T09:00:00Z',
    ]);
    assert.deepEqual(
      value(create({ due_date: due, reminders: ['p1w', 'P7D', 'PT30M', '2026-11-30T10:00:00+01:00'] }))
        .reminders,
      ['P1W', 'P7D', 'PT30M', '2026-11-30T09:00:00.000Z'],
    );
  });

  it('tells offsets (starting with P) from instants that merely contain a P', () => {
    assert.deepEqual(value(create({ reminders: ['2026-11-30T10:00:00+01:00[Europe/Paris]'] })).reminders, [
      '2026-11-30T09:00:00.000Z',
    ]);
  });

  it('compares tags in lower case (straße and STRASSE are two tags, Home and home one)', () => {
    assert.deepEqual(value(create({ tags: ['Straße', 'STRASSE'] })).tags, ['Straße', 'STRASSE']);
    assert.deepEqual(value(create({ tags: ['Home', 'home'] })).tags, ['Home']);
  });

  it('checks the invariant: offsets before due need a due date; instants do not', () => {
    assert.deepEqual(only({ reminders: ['PT1H'] }), [
      'reminders: offsets before due (e.g. PT1H) need a due_date',
    ]);
    assert.deepEqual(value(create({ reminders: ['2026-11-30T10:00:00Z'] })).reminders, [
      '2026-11-30T10:00:00.000Z',
    ]);
    assert.deepEqual(value(create({ reminders: [] })).reminders, []);
  });

  it('checks the recurrence with the user time zone, and needs one to do so', () => {
    assert.equal(value(create({ recurrence: null })).recurrence, null);
    assert.deepEqual(only({ recurrence: 'fortnightly' }).length, 1);
    assert.match(only({ recurrence: 'fortnightly' })[0]!, /^recurrence/);
    assert.throws(() => validateCreate({ title: 'T', recurrence: 'daily' }, {}), /needs the time zone/);
    assert.deepEqual(value(validateCreate({ title: 'T', recurrence: null }, {})).recurrence, null);
  });
});

describe('a repeat rule that would never repeat', () => {
  const create = (recurrence: unknown) =>
    validateCreate({ title: 'x', due_date: '2027-04-10T09:00:00Z', recurrence }, { timezone: 'UTC' });
  const refusedOn = (recurrence: unknown) => {
    try {
      create(recurrence);
    } catch (err) {
      assert.ok(err instanceof UnprocessableError, String(err));
      return err.issues.map((i) => i.path);
    }
    return [];
  };
  it('is refused (422) when its UNTIL comes before the first repeat, or its days never come', () => {
    assert.deepEqual(refusedOn({ preset: 'daily', until: '2027-04-05T00:00:00Z' }), ['recurrence.until']);
    assert.deepEqual(refusedOn({ rrule: 'FREQ=MONTHLY;BYMONTHDAY=31', interval: 12 }), ['recurrence']);
    assert.deepEqual(refusedOn({ preset: 'yearly', interval: 500 }), ['recurrence'], 'past the 100 years');
    // The message says the limit the search has: 100 years without a repeat (it said 200).
    assert.throws(() => create({ preset: 'yearly', interval: 500 }), /within 100 years/);
  });
  it('is taken when it repeats, runs once (COUNT=1) or counts from the completion', () => {
    for (const rule of [
      'daily',
      { preset: 'daily', until: '2027-04-11T09:00:00Z' },
      { preset: 'daily', count: 1 },
      { rrule: 'FREQ=MONTHLY;BYMONTHDAY=31' },
      { preset: 'daily', until: '2027-04-05T00:00:00Z', mode: 'after_completion' },
    ])
      assert.equal(create(rule).ok, true, JSON.stringify(rule));
  });
  it('after completion, or without a due date, is refused when a completion now has no repeat (both were taken)', () => {
    const now = new Date('2027-04-01T12:00:00Z');
    const at = (fields: Record<string, unknown>) => {
      try {
        const r = validateCreate({ title: 'x', ...fields }, { timezone: 'UTC', now });
        return r.ok ? 'ok' : r.issues.map((i) => i.path);
      } catch (err) {
        assert.ok(err instanceof UnprocessableError, String(err));
        return err.issues.map((i) => `422 ${i.path}: ${i.message}`);
      }
    };
    const due = '2027-04-10T09:00:00Z';
    const ac = { mode: 'after_completion' } as const;
    assert.deepEqual(
      at({ due_date: due, recurrence: { preset: 'daily', until: '2027-03-01T00:00:00Z', ...ac } }),
      [
        '422 recurrence.until: ends before the first repeat after a completion now (2027-04-01T12:00:00.000Z): the task would never repeat',
      ],
    );
    assert.deepEqual(at({ due_date: due, recurrence: { preset: 'daily', interval: 999_999_999, ...ac } }), [
      '422 recurrence: has no repeat after a completion now (2027-04-01T12:00:00.000Z) within 100 years: the task would never repeat',
    ]);
    assert.deepEqual(at({ recurrence: { preset: 'daily', until: '2027-03-01T00:00:00Z' } }), [
      '422 recurrence.until: ends before the first repeat after now (2027-04-01T12:00:00.000Z): the task would never repeat',
    ]);
    // Completed early, before its due date, it repeats before UNTIL: taken, as are COUNT=1 and a repeating rule.
    for (const recurrence of [
      { preset: 'daily', until: '2027-04-05T00:00:00Z', ...ac },
      { preset: 'daily', count: 1, ...ac },
      { preset: 'monthly', ...ac },
    ])
      assert.equal(at({ due_date: due, recurrence }), 'ok', JSON.stringify(recurrence));
    assert.equal(at({ recurrence: { preset: 'daily', until: '2027-04-05T00:00:00Z' } }), 'ok');
  });
  it('set by a change is checked at the change, in after_completion mode too', () => {
    const task = newTask(
      't1',
      'u',
      { ...fields(), due_date: '2027-04-10T09:00:00Z' },
      new Date('2027-04-01T00:00:00Z'),
    );
    const recurrence = value(
      validatePatch(
        { recurrence: { preset: 'daily', until: '2027-03-01T00:00:00Z', mode: 'after_completion' } },
        CTX,
      ),
    ).recurrence;
    assert.throws(
      () => applyPatch(task, { recurrence }, new Date('2027-04-01T12:00:00Z')),
      UnprocessableError,
    );
  });
});

describe('validatePatch', () => {
  it('accepts any subset of fields, and nothing else', () => {
    assert.deepEqual(value(validatePatch({ priority: 'Low' }, CTX)), { priority: 'low' });
    assert.deepEqual(value(validatePatch({ title: ' x ', due_date: null }, CTX)), {
      title: 'x',
      due_date: null,
    });
    assert.deepEqual(value(validatePatch({ reminders: ['PT1H'] }, CTX)), { reminders: ['PT1H'] });
    assert.deepEqual(issues(validatePatch({ title: '' }, CTX)), ['title: must not be empty']);
    assert.deepEqual(issues(validatePatch([], CTX)), [': body must be a JSON object']);
  });

  it('refuses a patch that sets nothing (undefined members are not set)', () => {
    const message =
      ': body must set at least one of title, description, status, priority, tags, due_date, reminders, recurrence';
    assert.deepEqual(issues(validatePatch({}, CTX)), [message]);
    assert.deepEqual(issues(validatePatch({ title: undefined }, CTX)), [message]);
  });
});

describe('needsTimeZone', () => {
  it('is true only for a body that sets a recurrence', () => {
    assert.equal(needsTimeZone({ recurrence: 'daily' }), true);
    assert.equal(needsTimeZone({ recurrence: { rrule: 'FREQ=DAILY' } }), true);
    assert.equal(needsTimeZone({ recurrence: null }), false);
    assert.equal(needsTimeZone({ title: 'x' }), false);
    assert.equal(needsTimeZone(null), false);
    assert.equal(needsTimeZone([{ recurrence: 'daily' }]), false);
  });
});

describe('parseInstant', () => {
  it('accepts instants with Z or an offset and returns canonical UTC', () => {
    assert.equal(parseInstant('2026-01-10T09:00:00Z'), '2026-01-10T09:00:00.000Z');
    assert.equal(parseInstant('2026-01-10T09:00:00.5+05:30'), '2026-01-10T03:30:00.500Z');
  });
  it('refuses local times, dates, non-strings and overlong input', () => {
    for (const v of ['2026-01-10T09:00:00', '2026-01-10', '', null, undefined, 1_700_000_000_000, {}])
      assert.equal(parseInstant(v), null, String(v));
    // Valid instants (a zone annotation after the offset), refused above 64 characters.
    const long = '2026-01-10T09:00:00.000000000+00:00[America/Indiana/Indianapolis]';
    assert.equal(long.length, 65);
    assert.equal(parseInstant(long), null);
    assert.equal(parseInstant(long.replace('.000000000', '.00000000')), '2026-01-10T09:00:00.000Z'); // 64
  });
  it('accepts years 0001 to 9999 (UTC) only, both ends included', () => {
    assert.equal(parseInstant('0001-01-01T00:00:00Z'), '0001-01-01T00:00:00.000Z');
    assert.equal(parseInstant('9999-12-31T23:59:59.999Z'), '9999-12-31T23:59:59.999Z');
    for (const v of ['0000-12-31T23:59:59.999Z', '0001-01-01T00:30:00+01:00', '+010000-01-01T00:00:00Z'])
      assert.equal(parseInstant(v), null, v);
  });
});

describe('parseReminderOffset', () => {
  it('accepts positive durations of weeks, days, hours and minutes up to 366 days', () => {
    for (const [text, canonical] of <[string, string][]>[
      ['PT1H', 'PT1H'],
      ['pt15m', 'PT15M'],
      ['P2W', 'P2W'],
      ['P366D', 'P366D'],
      ['PT8784H', 'PT8784H'],
      ['P1DT12H', 'P1DT12H'],
    ])
      assert.equal(parseReminderOffset(text)?.toString(), canonical, text);
  });
  it('refuses months, years, zero, negative, over 366 days and non-durations', () => {
    for (const text of [
      'P1M',
      'P1Y',
      'PT0S',
      '-PT1H',
      'P367D',
      'P53W',
      'PT8785H',
      'P366DT1S',
      '1H',
      'PT',
      'x',
      '+PT1H', // a signed duration: Temporal reads it, offsets start with P
    ])
      assert.equal(parseReminderOffset(text), null, text);
  });
});

describe('checkInvariants', () => {
  it('flags offsets without a due date only', () => {
    const flagged = [{ path: 'reminders', message: 'offsets before due (e.g. PT1H) need a due_date' }];
    assert.deepEqual(
      checkInvariants({ due_date: null, reminders: ['2026-01-01T00:00:00.000Z', 'PT1H'] }),
      flagged,
    );
    assert.deepEqual(checkInvariants({ due_date: '2026-01-01T00:00:00.000Z', reminders: ['PT1H'] }), []);
    assert.deepEqual(checkInvariants({ due_date: null, reminders: ['2026-01-01T00:00:00.000Z'] }), []);
    assert.deepEqual(checkInvariants({ due_date: null, reminders: null }), []);
  });
});

describe('task transitions', () => {
  const base = (over: Partial<TaskFields> = {}, seriesId?: string | null): Task =>
    newTask('0195a3b2-0000-7000-8000-0000000000aa', 'alice', fields(over), NOW, seriesId);

  it('creates version 1 with timestamps, completed_at only when completed, and a series when recurring', () => {
    const t = base();
    assert.deepEqual(t, {
      id: '0195a3b2-0000-7000-8000-0000000000aa',
      user_id: 'alice',
      ...fields(),
      series_id: null,
      created_at: '2026-03-01T12:00:00.000Z',
      updated_at: '2026-03-01T12:00:00.000Z',
      completed_at: null,
      version: 1,
    });
    assert.equal(base({ status: 'completed' }).completed_at, '2026-03-01T12:00:00.000Z');
    const rec = { rrule: 'FREQ=DAILY', mode: 'schedule' as const, timezone: 'UTC' };
    assert.equal(base({ recurrence: rec }).series_id, t.id, 'a recurring task starts its own series');
    assert.equal(base({ recurrence: rec }, 'series-1').series_id, 'series-1');
    assert.equal(base({}, 'series-2').series_id, 'series-2');
  });

  it('updates: bumps the version and updated_at, names the changed fields, emits task.updated', () => {
    const t = base({ tags: ['a'] });
    const r = value(applyPatch(t, { title: 'Buy oat milk', tags: ['a'], priority: 'high' }, LATER));
    assert.equal(r.eventType, 'task.updated');
    assert.deepEqual(r.changes, ['title', 'priority']);
    assert.equal(r.task.version, 2);
    assert.equal(r.task.updated_at, LATER.toISOString());
    assert.equal(r.task.created_at, t.created_at);
    assert.equal(r.task.title, 'Buy oat milk');
    assert.equal(r.task.completed_at, null);
    assert.equal(t.version, 1, 'the input task is not changed');
  });

  it('changes nothing (no version, no event) when the patch sets what is already there', () => {
    const t = base({ priority: 'low', tags: ['x', 'y'] });
    const r = value(applyPatch(t, { priority: 'low', tags: ['x', 'y'] }, LATER));
    assert.equal(r.eventType, null);
    assert.deepEqual(r.changes, []);
    assert.equal(r.task, t);
  });

  it('completes, reopens and toggles, setting and clearing completed_at', () => {
    const t = base({ description: 'd' });
    const done = value(complete(t, LATER));
    assert.equal(done.eventType, 'task.completed');
    assert.deepEqual(done.changes, ['status']);
    assert.equal(done.task.status, 'completed');
    assert.equal(done.task.completed_at, LATER.toISOString());
    const again = value(reopen(done.task, NOW));
    assert.equal(again.eventType, 'task.reopened');
    assert.equal(again.task.status, 'pending');
    assert.equal(again.task.completed_at, null);
    assert.equal(again.task.version, 3);
    assert.equal(value(toggle(t, LATER)).task.status, 'completed');
    assert.equal(value(toggle(done.task, LATER)).task.status, 'pending');
    assert.equal(value(complete(done.task, LATER)).eventType, null, 'completing a completed task');
    const viaPatch = value(applyPatch(t, { status: 'completed', title: 'x' }, LATER));
    assert.equal(viaPatch.eventType, 'task.completed');
    assert.deepEqual(viaPatch.changes, ['title', 'status']);
  });

  it('keeps completed_at when a completed task changes otherwise', () => {
    const done = value(complete(base(), NOW)).task;
    const edited = value(applyPatch(done, { title: 'renamed' }, LATER)).task;
    assert.equal(edited.completed_at, NOW.toISOString());
    assert.equal(edited.updated_at, LATER.toISOString());
  });

  it('refuses a patch that breaks the invariant, checked on the task as it would be', () => {
    const t = base({ due_date: '2026-04-01T09:00:00.000Z', reminders: ['PT1H'] });
    // The body alone breaks it: 400 naming the field.
    assert.deepEqual(issues(applyPatch(t, { due_date: null, reminders: ['PT2H'] }, LATER)), [
      'reminders: offsets before due (e.g. PT1H) need a due_date',
    ]);
    // Only with what the task has (its offsets, or its missing due date): a conflict with its state, 409.
    assert.throws(() => applyPatch(t, { due_date: null }, LATER), ConflictError);
    const undated = base({ due_date: null, reminders: [] });
    assert.throws(() => applyPatch(undated, { reminders: ['PT1H'] }, LATER), ConflictError);
    assert.equal(value(applyPatch(t, { due_date: null, reminders: null }, LATER)).eventType, 'task.updated');
  });

  it('starts a series when a recurrence is added to a task without one, and keeps an existing series', () => {
    const rec = { rrule: 'FREQ=DAILY', mode: 'schedule' as const, timezone: 'UTC' };
    const t = base();
    assert.equal(value(applyPatch(t, { recurrence: rec }, LATER)).task.series_id, t.id);
    const inSeries = base({}, 'series-9');
    assert.equal(value(applyPatch(inSeries, { recurrence: rec }, LATER)).task.series_id, 'series-9');
    assert.equal(value(applyPatch(t, { title: 'x' }, LATER)).task.series_id, null);
    assert.equal(
      value(applyPatch(base({ recurrence: rec }), { recurrence: null }, LATER)).task.series_id,
      t.id,
    );
  });

  it('reads a recurrence sent again in another key order (as jsonb gives it back) as no change', () => {
    const stored = base({ recurrence: { timezone: 'UTC', rrule: 'FREQ=DAILY', mode: 'schedule' } });
    const r = value(
      applyPatch(stored, { recurrence: { rrule: 'FREQ=DAILY', mode: 'schedule', timezone: 'UTC' } }, LATER),
    );
    assert.deepEqual([r.eventType, r.changes, r.task.version], [null, [], 1]);
  });

  it("refuses to change a completed task's repeat rule unless it is reopened with it (409)", () => {
    const rec = { rrule: 'FREQ=DAILY', mode: 'schedule' as const, timezone: 'UTC' };
    const done = value(complete(base({ recurrence: rec, due_date: '2026-04-01T09:00:00.000Z' }), NOW)).task;
    const weekly = { ...rec, rrule: 'FREQ=WEEKLY' };
    assert.throws(() => applyPatch(done, { recurrence: weekly }, LATER), /change the pending occurrence/);
    assert.throws(() => applyPatch(done, { recurrence: null }, LATER), ConflictError);
    assert.equal(
      value(applyPatch(done, { recurrence: weekly, status: 'pending' }, LATER)).eventType,
      'task.reopened',
    );
    assert.deepEqual(value(applyPatch(done, { title: 'renamed', recurrence: rec }, LATER)).changes, [
      'title',
    ]);
  });

  it('changedFields compares values, not references, over the client-visible fields', () => {
    const a = base({ tags: ['a', 'b'] });
    assert.deepEqual(changedFields(a, { ...a, tags: ['a', 'b'], version: 9, updated_at: 'later' }), []);
    assert.deepEqual(changedFields(a, { ...a, tags: ['b', 'a'], description: 'x' }), ['description', 'tags']);
  });

  it('ranks priorities from none to urgent', () => {
    assert.deepEqual(PRIORITY_RANK, { none: 0, low: 1, medium: 2, high: 3, urgent: 4 });
  });
});
