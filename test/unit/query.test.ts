import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  dueWindowRange,
  fromCompatQuery,
  parseCompletionBody,
  parseTaskQuery,
} from '../../src/domain/query.ts';

describe('dueWindowRange', () => {
  it("covers the user's local day, not the UTC day", () => {
    // 02:30 UTC on 10 March is still 9 March in New York (EDT, UTC-4, since 8 March).
    const now = new Date('2026-03-10T02:30:00Z');
    assert.deepEqual(dueWindowRange('today', now, 'America/New_York'), {
      from: '2026-03-09T04:00:00.000Z',
      to: '2026-03-10T04:00:00.000Z',
    });
    // 8 March itself, the spring-forward day: from midnight EST to midnight EDT, 23 hours.
    assert.deepEqual(dueWindowRange('today', new Date('2026-03-08T15:00:00Z'), 'America/New_York'), {
      from: '2026-03-08T05:00:00.000Z',
      to: '2026-03-09T04:00:00.000Z',
    });
    assert.deepEqual(dueWindowRange('today', now, 'UTC'), {
      from: '2026-03-10T00:00:00.000Z',
      to: '2026-03-11T00:00:00.000Z',
    });
  });

  it('is 23 hours on a spring-forward day and 25 on a fall-back day (Europe/Berlin)', () => {
    const spring = dueWindowRange('today', new Date('2026-03-29T10:00:00Z'), 'Europe/Berlin');
    assert.deepEqual(spring, { from: '2026-03-28T23:00:00.000Z', to: '2026-03-29T22:00:00.000Z' });
    const fall = dueWindowRange('today', new Date('2026-10-25T10:00:00Z'), 'Europe/Berlin');
    assert.deepEqual(fall, { from: '2026-10-24T22:00:00.000Z', to: '2026-10-25T23:00:00.000Z' });
  });

  it('tomorrow starts where today ends; a week is the 7 local days from today', () => {
    const now = new Date('2026-03-01T12:00:00Z');
    const today = dueWindowRange('today', now, 'Asia/Kolkata');
    const tomorrow = dueWindowRange('tomorrow', now, 'Asia/Kolkata');
    const week = dueWindowRange('week', now, 'Asia/Kolkata');
    assert.equal(tomorrow.from, today.to);
    assert.equal(week.from, today.from);
    assert.equal(new Date(week.to!).getTime() - new Date(week.from).getTime(), 7 * 24 * 3_600_000);
    assert.equal(today.from, '2026-02-28T18:30:00.000Z');
    // Upcoming: from where today ends, open-ended.
    assert.deepEqual(dueWindowRange('upcoming', now, 'Asia/Kolkata'), { from: today.to, to: null });
  });
});

describe('parseTaskQuery due', () => {
  it('accepts the named windows and names the field otherwise', () => {
    const ok = parseTaskQuery({ due: 'week' });
    assert.ok(ok.ok && ok.value.due === 'week');
    const bad = parseTaskQuery({ due: 'someday' });
    assert.ok(!bad.ok);
    assert.deepEqual(bad.issues, [
      { path: 'due', message: 'must be one of today, tomorrow, week, upcoming' },
    ]);
  });
});

describe('Phase II/III query and body', () => {
  it('maps search to q and tags to tag with every tag required, keeping the rest', () => {
    assert.deepEqual(fromCompatQuery({ status: 'pending', search: 'report', tags: 'work,finance' }), {
      ok: true,
      value: { status: 'pending', q: 'report', tag: 'work,finance', tag_mode: 'all' },
    });
    assert.deepEqual(fromCompatQuery({ tags: 'a', tag_mode: 'any' }), {
      ok: true,
      value: { tag: 'a', tag_mode: 'any' },
    });
    assert.equal(fromCompatQuery({ search: 'a', q: 'b' }).ok, false);
    assert.equal(fromCompatQuery({ tags: 'a', tag: 'b' }).ok, false);
  });

  it('reads {"completed": bool}, no body as a toggle, and refuses anything else (null too)', () => {
    assert.deepEqual(parseCompletionBody({ completed: true }), { ok: true, value: true });
    assert.deepEqual(parseCompletionBody({ completed: false }), { ok: true, value: false });
    for (const none of [undefined, ''])
      assert.deepEqual(parseCompletionBody(none), { ok: true, value: null });
    // A JSON null is a body, and not one of those the document allows.
    for (const bad of [null, { completed: 'yes' }, { completed: true, title: 'x' }, [true], 'true', {}])
      assert.equal(parseCompletionBody(bad).ok, false, JSON.stringify(bad));
  });
});

describe('parseTaskQuery: a parameter of one value given twice', () => {
  it('is refused, naming it, whatever the order of the values', () => {
    for (const input of [
      { status: ['pending', 'completed'] },
      { limit: ['abc', '5'] },
      { limit: ['5', 'abc'] },
      { sort: ['due', 'title'] },
    ]) {
      const r = parseTaskQuery(input);
      assert.equal(r.ok, false, JSON.stringify(input));
      if (!r.ok)
        assert.ok(
          r.issues.some((i) => /given once/.test(i.message)),
          JSON.stringify(r.issues),
        );
    }
    // Given once, or a list parameter repeated, it is taken.
    assert.equal(parseTaskQuery({ status: ['pending'] }).ok, true);
    assert.equal(parseTaskQuery({ tag: ['a', 'b'], priority: ['high', 'low'] }).ok, true);
  });

  it('takes a priority in any case, as a task body does', () => {
    const r = parseTaskQuery({ priority: 'HIGH,Low' });
    assert.deepEqual(r.ok && r.value.priorities, ['high', 'low']);
    assert.equal(parseTaskQuery({ priority: 'HIGHEST' }).ok, false);
  });
});

describe('parseTaskQuery lengths', () => {
  it('counts a tag and a search in code points, as a stored tag is counted (an emoji is one)', () => {
    assert.equal(parseTaskQuery({ tag: '😀'.repeat(50), q: '😀'.repeat(150) }).ok, true);
    const long = parseTaskQuery({ tag: '😀'.repeat(51), q: 'a'.repeat(201) });
    assert.deepEqual(long.ok ? [] : long.issues.map((i) => `${i.path}: ${i.message}`), [
      'tag: must be at most 50 characters',
      'q: must be at most 200 characters',
    ]);
  });
});

describe('parseTaskQuery: values a plain object or a rounding would get wrong', () => {
  it("refuses a sort named after an object's prototype (it answered 500)", () => {
    for (const sort of ['constructor', '__proto__', 'toString', '-valueOf', 'hasOwnProperty']) {
      const r = parseTaskQuery({ sort });
      assert.deepEqual(r.ok ? [] : r.issues.map((i) => i.path), ['sort'], sort);
    }
    const aliased = parseTaskQuery({ sort: '-due_date' });
    assert.ok(aliased.ok);
    if (aliased.ok) assert.deepEqual([aliased.value.sort, aliased.value.order], ['due', 'desc']);
  });

  it('orders by default soonest due and A to Z first, newest and highest priority first (titles were Z to A)', () => {
    const orderOf = (sort: string) => {
      const r = parseTaskQuery({ sort });
      assert.ok(r.ok, JSON.stringify(r));
      return r.ok ? r.value.order : undefined;
    };
    assert.deepEqual(['due', 'title', 'created', 'updated', 'priority', '-title'].map(orderOf), [
      'asc',
      'asc',
      'desc',
      'desc',
      'desc',
      'desc',
    ]);
  });

  it('takes a tag filter as long as a stored tag, whose lower case is longer ("İ" is two code points)', () => {
    const r = parseTaskQuery({ tag: 'İ'.repeat(30) });
    assert.ok(r.ok, JSON.stringify(r));
    if (r.ok) assert.deepEqual(r.value.tags, ['i̇'.repeat(30)]);
  });

  it('counts a tag given twice once', () => {
    assert.ok(parseTaskQuery({ tag: Array.from({ length: 21 }, () => 'a') }).ok);
    assert.equal(parseTaskQuery({ tag: Array.from({ length: 21 }, (_, i) => `t${i}`) }).ok, false);
  });

  it('rounds a due_before finer than a millisecond up (due < it), and due_after down (due > it)', () => {
    const r = parseTaskQuery({
      due_before: '2027-05-05T05:30:00.0001Z',
      due_after: '2027-05-05T05:29:59.9999Z',
    });
    assert.ok(r.ok, JSON.stringify(r));
    if (r.ok)
      assert.deepEqual(
        [r.value.dueBefore, r.value.dueAfter],
        ['2027-05-05T05:30:00.001Z', '2027-05-05T05:29:59.999Z'],
      );
    const exact = parseTaskQuery({ due_before: '2027-05-05T05:30:00Z' });
    if (exact.ok) assert.equal(exact.value.dueBefore, '2027-05-05T05:30:00.000Z');
  });
});
