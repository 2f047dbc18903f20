/** Reminder planning (pure): instants, deterministic ids, reconciliation policies and snooze parsing. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Temporal } from 'temporal-polyfill';
import {
  changeMovesReminders,
  reminderPlanOf,
  DEFAULT_REMINDER_GRACE_MS,
  dismissReasonFor,
  durationMs,
  isLive,
  parseSnooze,
  planReminders,
  reconcileReminders,
  reminderId,
  remindAtOf,
  type StoredReminderState,
} from '../../src/domain/reminders.ts';
import type { TaskEventType } from '../../src/domain/task.ts';

const TASK = '0195a3b2-0000-7000-8000-000000000001';
const task = (over: Partial<Parameters<typeof planReminders>[0]> = {}) => ({
  id: TASK,
  status: 'pending' as const,
  due_date: '2026-03-10T09:00:00.000Z',
  reminders: ['PT1H'] as string[] | null,
  ...over,
});
const HOUR = 3_600_000;
const GRACE = 15 * 60_000;

describe('remindAtOf', () => {
  it('subtracts durations from the due date (days are exact 24 h)', () => {
    const due = '2026-03-29T12:00:00.000Z'; // a DST change in Europe: irrelevant, instants are UTC
    assert.equal(remindAtOf('PT1H', due), '2026-03-29T11:00:00.000Z');
    assert.equal(remindAtOf('P1D', due), '2026-03-28T12:00:00.000Z');
    assert.equal(remindAtOf('PT90M', due), '2026-03-29T10:30:00.000Z');
    assert.equal(remindAtOf('P1DT2H30M', due), '2026-03-28T09:30:00.000Z');
  });
  it('takes absolute instants as they are, with or without a due date', () => {
    assert.equal(remindAtOf('2026-03-01T10:00:00+01:00', null), '2026-03-01T09:00:00.000Z');
    assert.equal(remindAtOf('2026-03-01T10:00:00Z', '2026-03-29T12:00:00Z'), '2026-03-01T10:00:00.000Z');
  });
  it('gives nothing for an offset without a due date or an invalid spec', () => {
    assert.equal(remindAtOf('PT1H', null), null);
    assert.equal(remindAtOf('P1M', '2026-03-29T12:00:00Z'), null, 'months are not fixed offsets');
    assert.equal(remindAtOf('PT0S', '2026-03-29T12:00:00Z'), null);
    assert.equal(remindAtOf('tomorrow', null), null);
  });
});

describe('reminderId', () => {
  it('is a stable version-5 UUID of (task, instant)', () => {
    const a = reminderId(TASK, '2026-03-10T08:00:00.000Z');
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(reminderId(TASK.toUpperCase(), '2026-03-10T08:00:00.000Z'), a);
    assert.notEqual(reminderId(TASK, '2026-03-10T08:00:01.000Z'), a);
    assert.notEqual(reminderId('0195a3b2-0000-7000-8000-000000000002', '2026-03-10T08:00:00.000Z'), a);
  });
});

describe('planReminders', () => {
  it('plans one reminder per distinct instant, ordered, with the specs that produced it', () => {
    const plan = planReminders(
      task({ reminders: ['PT1H', 'P1D', 'PT60M', '2026-03-10T08:00:00Z', '2026-03-01T00:00:00Z'] }),
      [],
    );
    assert.deepEqual(
      plan.map((p) => [p.remind_at, p.specs]),
      [
        ['2026-03-01T00:00:00.000Z', ['2026-03-01T00:00:00Z']],
        ['2026-03-09T09:00:00.000Z', ['P1D']],
        ['2026-03-10T08:00:00.000Z', ['PT1H', 'PT60M', '2026-03-10T08:00:00Z']],
      ],
    );
    assert.equal(plan[2]!.id, reminderId(TASK, '2026-03-10T08:00:00.000Z'));
  });
  it("uses the user's defaults when the task's reminders are null, and none for an empty list", () => {
    assert.deepEqual(
      planReminders(task({ reminders: null }), ['P1D', 'PT1H']).map((p) => p.remind_at),
      ['2026-03-09T09:00:00.000Z', '2026-03-10T08:00:00.000Z'],
    );
    assert.deepEqual(planReminders(task({ reminders: [] }), ['P1D']), []);
  });
  it('plans nothing for a completed task or offsets without a due date', () => {
    assert.deepEqual(planReminders(task({ status: 'completed' }), []), []);
    assert.deepEqual(planReminders(task({ due_date: null, reminders: null }), ['PT1H']), []);
  });
  it('is deterministic: the same task gives the same ids', () => {
    assert.deepEqual(planReminders(task(), []), planReminders(task(), []));
  });
});

describe('isLive', () => {
  const asOf = new Date('2026-03-10T08:00:00Z');
  it('accepts future instants and those within the grace window, rejects older ones', () => {
    assert.equal(isLive('2026-03-10T09:00:00.000Z', asOf, GRACE), true);
    assert.equal(isLive('2026-03-10T07:45:00.000Z', asOf, GRACE), true);
    assert.equal(isLive('2026-03-10T07:44:59.999Z', asOf, GRACE), false);
  });
});

describe('reconcileReminders', () => {
  const asOf = new Date('2026-03-10T06:00:00Z');
  const plan = planReminders(task({ reminders: ['PT1H', 'PT2H', 'P1D'] }), []);
  const [dayBefore, twoHours, oneHour] = plan;
  const state = (
    id: string,
    status: StoredReminderState['status'],
    reason: StoredReminderState['dismiss_reason'] = null,
  ) => ({
    id,
    status,
    dismiss_reason: reason,
  });

  it('schedules the new live reminders and skips those already past the grace window', () => {
    const r = reconcileReminders([], plan, { asOf, graceMs: GRACE });
    assert.deepEqual(
      r.schedule.map((p) => p.id),
      [twoHours!.id, oneHour!.id],
      'the "1 day before" instant was in the past when the task was created',
    );
    assert.deepEqual(r.dismiss, []);
    assert.deepEqual(r.reactivate, []);
  });
  it('keeps scheduled (or snoozed) reminders that are still wanted and dismisses the others', () => {
    const old = state(reminderId(TASK, '2026-03-01T00:00:00.000Z'), 'scheduled');
    const r = reconcileReminders([state(oneHour!.id, 'scheduled'), old], plan, { asOf, graceMs: GRACE });
    assert.deepEqual(
      r.schedule.map((p) => p.id),
      [twoHours!.id],
    );
    assert.deepEqual(r.dismiss, [old]);
  });
  it('leaves fired, missed and user-dismissed reminders alone', () => {
    const r = reconcileReminders(
      [
        state(oneHour!.id, 'triggered'),
        state(twoHours!.id, 'dismissed', 'user'),
        state(dayBefore!.id, 'missed'),
      ],
      plan,
      { asOf, graceMs: GRACE },
    );
    assert.deepEqual(r, { schedule: [], reactivate: [], dismiss: [], retire: [], unretire: [] });
    const unwanted = reconcileReminders([state(oneHour!.id, 'triggered')], [], { asOf, graceMs: GRACE });
    assert.deepEqual(unwanted.dismiss, [], 'history is not dismissed');
    // A fired reminder no longer wanted (the task completed, deleted, moved) is retired, once: what of it was
    // not delivered yet must not be any more; it stays fired.
    assert.deepEqual(unwanted.retire, [state(oneHour!.id, 'triggered')]);
    const retired = { ...state(oneHour!.id, 'triggered'), dismiss_reason: 'task_completed' as const };
    assert.deepEqual(reconcileReminders([retired], [], { asOf, graceMs: GRACE }).retire, [], 'once');
    // Wanted again (the task reopened, its due date moved back): it applies again.
    assert.deepEqual(reconcileReminders([retired], plan, { asOf, graceMs: GRACE }).unretire, [retired]);
    // A missed one no longer wanted is put aside too: snoozed later, it fired for a completed task.
    assert.deepEqual(
      reconcileReminders([state(dayBefore!.id, 'missed')], [], { asOf, graceMs: GRACE }).retire,
      [state(dayBefore!.id, 'missed')],
    );
  });
  it('re-activates live reminders dismissed by completion or a reschedule (reopen, due date back)', () => {
    const existing = [
      state(oneHour!.id, 'dismissed', 'task_completed'),
      state(twoHours!.id, 'dismissed', 'rescheduled'),
      state(dayBefore!.id, 'dismissed', 'task_completed'),
    ];
    const r = reconcileReminders(existing, plan, { asOf, graceMs: GRACE });
    assert.deepEqual(
      r.reactivate.map((p) => p.id),
      [twoHours!.id, oneHour!.id],
      'only future ones',
    );
  });
  it('dismisses everything scheduled when the task wants none (completed or deleted)', () => {
    const existing = [state(oneHour!.id, 'scheduled'), state(twoHours!.id, 'scheduled')];
    assert.equal(reconcileReminders(existing, [], { asOf, graceMs: GRACE }).dismiss.length, 2);
  });
  it('names why reminders were dismissed', () => {
    assert.equal(dismissReasonFor('task.deleted', { status: 'pending' }), 'task_deleted');
    assert.equal(dismissReasonFor('task.completed', { status: 'completed' }), 'task_completed');
    assert.equal(dismissReasonFor('task.updated', { status: 'pending' }), 'rescheduled');
  });

  describe('a task due sooner than its nearest offset gets a reminder at its due time', () => {
    const now = new Date('2026-03-10T08:20:00Z'); // due 09:00: 40 minutes away
    const soon = task({ reminders: ['P1D', 'PT1H'] });
    const atDue = reminderId(TASK, soon.due_date!);
    const reconcile = (stored: StoredReminderState[], t = soon, asOf = now) =>
      reconcileReminders(stored, planReminders(t, []), { asOf, graceMs: GRACE, task: t });

    it('instead of none: one reminder at the due time, naming the offsets it stands for', () => {
      const r = reconcile([]);
      assert.deepEqual(r.schedule, [{ id: atDue, remind_at: soon.due_date, specs: ['P1D', 'PT1H'] }]);
      assert.deepEqual(r.dismiss, []);
    });
    it('not when an offset is still ahead (due in 3 h: the 1-hour one)', () => {
      const r = reconcile([], soon, new Date('2026-03-10T06:00:00Z'));
      assert.deepEqual(
        r.schedule.map((p) => p.remind_at),
        ['2026-03-10T08:00:00.000Z'],
      );
    });
    it('keeps it through later changes of the task, and moves it with the due date', () => {
      assert.deepEqual(reconcile([state(atDue, 'scheduled')]), {
        schedule: [],
        reactivate: [],
        dismiss: [],
        retire: [],
        unretire: [],
      });
      assert.deepEqual(reconcile([state(atDue, 'triggered')]), {
        schedule: [],
        reactivate: [],
        dismiss: [],
        retire: [],
        unretire: [],
      });
      const moved = task({ reminders: ['P1D', 'PT1H'], due_date: '2026-03-10T08:50:00.000Z' });
      const r = reconcile([state(atDue, 'scheduled')], moved);
      assert.deepEqual(
        r.schedule.map((p) => p.remind_at),
        [moved.due_date],
      );
      assert.deepEqual(
        r.dismiss.map((d) => d.id),
        [atDue],
      );
    });
    it('not for a reminder the task already had at an offset, nor when the due time itself has passed', () => {
      const hourBefore = reminderId(TASK, '2026-03-10T08:00:00.000Z');
      assert.deepEqual(reconcile([state(hourBefore, 'triggered')]).schedule, []);
      assert.deepEqual(reconcile([], soon, new Date('2026-03-10T09:30:00Z')).schedule, []);
    });
    it('not when the task asks for no reminders, nor for an instant the user chose (even with an offset)', () => {
      assert.deepEqual(reconcile([], task({ reminders: [] })).schedule, []);
      // PT1H and an instant both at 08:00, past: the instant was the user's explicit choice.
      const both = task({ reminders: ['PT1H', '2026-03-10T08:00:00Z'] });
      assert.deepEqual(planReminders(both, [])[0]!.specs, ['PT1H', '2026-03-10T08:00:00Z']);
      assert.deepEqual(reconcile([], both).schedule, []);
    });
    it('not for instants the user chose in the past, nor without a due date', () => {
      assert.deepEqual(reconcile([], task({ reminders: ['2026-03-10T07:00:00Z'] })).schedule, []);
      assert.deepEqual(reconcile([], task({ reminders: ['PT1H'], due_date: null })).schedule, []);
    });
  });
});

describe('parseSnooze', () => {
  const now = new Date('2026-03-10T08:00:00Z');
  it('accepts a duration from now or a future instant', () => {
    const d = parseSnooze({ duration: 'PT10M' }, now);
    assert.equal(d.ok && d.value.toISOString(), '2026-03-10T08:10:00.000Z');
    const u = parseSnooze({ until: '2026-03-10T10:00:00+01:00' }, now);
    assert.equal(u.ok && u.value.toISOString(), '2026-03-10T09:00:00.000Z');
  });
  it('rejects bad bodies with field errors', () => {
    const issues = (b: unknown) => {
      const r = parseSnooze(b, now);
      return r.ok ? [] : r.issues.map((i) => i.path);
    };
    assert.deepEqual(issues(null), ['']);
    assert.deepEqual(issues({}), ['']);
    assert.deepEqual(issues({ duration: 'PT1M', until: '2026-03-11T00:00:00Z' }), ['']);
    assert.deepEqual(issues({ duration: 'ten minutes' }), ['duration']);
    assert.deepEqual(issues({ duration: '-PT10M' }), ['duration']);
    assert.deepEqual(issues({ until: '2026-03-10T07:00:00Z' }), ['until']);
    assert.deepEqual(issues({ until: 'soon' }), ['until']);
    assert.deepEqual(issues({ until: '2028-03-10T07:00:00Z' }), ['until']);
    assert.deepEqual(issues({ duration: 'PT10M', extra: 1 }), ['extra']);
  });
  it('has HOUR-scale arithmetic right', () => {
    const r = parseSnooze({ duration: 'PT2H' }, now);
    assert.equal(r.ok && r.value.getTime() - now.getTime(), 2 * HOUR);
  });
});

// Found by StrykerJS (docs/mutation-testing.md): values that must not drift and the exact edges of each rule.
describe('reminder rules at their edges', () => {
  const now = new Date('2026-03-10T08:00:00Z');
  const DAY = 86_400_000;
  const snooze = (body: unknown) => {
    const r = parseSnooze(body, now);
    return r.ok ? r.value.toISOString() : r.issues.map((i) => `${i.path}: ${i.message}`);
  };

  it('keeps reminder ids stable across releases (stored rows are found by them)', () => {
    const id = 'f4274172-f3bd-5c53-b64f-cafd767b922a';
    assert.equal(reminderId('0195a3b2-0000-7000-8000-000000000001', '2026-03-10T08:00:00.000Z'), id);
    assert.equal(reminderId('0195A3B2-0000-7000-8000-000000000001', '2026-03-10T08:00:00.000Z'), id);
  });

  it('takes a spec for an offset only when it starts with P (an instant may contain one)', () => {
    assert.equal(remindAtOf('2026-03-01T10:00:00+01:00[Europe/Paris]', null), '2026-03-01T09:00:00.000Z');
  });

  it('has a 15-minute default grace window', () => {
    assert.equal(DEFAULT_REMINDER_GRACE_MS, 15 * 60_000);
  });

  it('counts weeks, days, hours, minutes and seconds of an offset exactly', () => {
    const due = '2026-03-29T12:00:00.000Z';
    assert.equal(remindAtOf('P2W', due), '2026-03-15T12:00:00.000Z');
    assert.equal(remindAtOf('P1WT1M', due), '2026-03-22T11:59:00.000Z');
    assert.equal(remindAtOf('PT1M30S', due), '2026-03-29T11:58:30.000Z');
    assert.equal(
      durationMs(Temporal.Duration.from('P1W2DT3H4M5.006S')),
      9 * DAY + 3 * 3_600_000 + 4 * 60_000 + 5_006,
    );
  });

  it('answers each bad snooze body with the field and the reason', () => {
    assert.deepEqual(snooze('PT10M'), [': body must be a JSON object']);
    assert.deepEqual(snooze(['PT10M']), [': body must be a JSON object']);
    assert.deepEqual(snooze({ duration: 'PT10M', minutes: 10 }), [
      'minutes: unknown field; allowed: duration, until',
    ]);
    assert.deepEqual(snooze({}), [': set exactly one of duration (e.g. PT10M) or until (an instant)']);
    assert.deepEqual(snooze({ duration: 'P1M' }), [
      'duration: must be a positive ISO 8601 duration such as PT10M or PT1H',
    ]);
    assert.deepEqual(snooze({ duration: 10 }), [
      'duration: must be a positive ISO 8601 duration such as PT10M or PT1H',
    ]);
    assert.deepEqual(snooze({ until: 'noon' }), [
      'until: must be an ISO 8601 date-time with an offset, in years 0001-9999 (UTC), e.g. 2026-01-10T09:00:00Z',
    ]);
  });

  it('snoozes into the future only, at most 366 days ahead (both ends exact)', () => {
    assert.deepEqual(snooze({ until: now.toISOString() }), ['until: must be in the future']);
    assert.equal(snooze({ until: '2026-03-10T08:00:00.001Z' }), '2026-03-10T08:00:00.001Z');
    const limit = new Date(now.getTime() + 366 * DAY).toISOString();
    assert.equal(snooze({ until: limit }), limit);
    assert.equal(snooze({ duration: 'P366D' }), limit);
    assert.deepEqual(snooze({ until: new Date(now.getTime() + 366 * DAY + 1).toISOString() }), [
      'until: must be at most 366 days ahead',
    ]);
  });
});

describe('reminderPlanOf (the create answer)', () => {
  const asOf = new Date('2026-03-01T12:00:00Z');
  const graceMs = 15 * 60_000;
  const task = (due_date: string | null, reminders: string[] | null) => ({
    id: '0190f1b0-0000-7000-8000-000000000001',
    status: 'pending' as const,
    due_date,
    reminders,
  });

  it('schedules the defaults of a task due tomorrow', () => {
    const plan = reminderPlanOf(task('2026-03-02T12:00:00.000Z', null), ['P1D', 'PT1H'], {
      asOf,
      graceMs,
    });
    assert.deepEqual(plan, {
      scheduled: [
        { remind_at: '2026-03-01T12:00:00.000Z', specs: ['P1D'], why: 'asked' },
        { remind_at: '2026-03-02T11:00:00.000Z', specs: ['PT1H'], why: 'asked' },
      ],
      skipped: [],
    });
  });

  it('says which asked-for reminders are past, and the one at the due time that replaces them', () => {
    // Due in 40 minutes: 1 day and 1 hour before are both more than 15 minutes past.
    const plan = reminderPlanOf(task('2026-03-01T12:40:00.000Z', null), ['P1D', 'PT1H'], {
      asOf,
      graceMs,
    });
    assert.deepEqual(plan, {
      scheduled: [{ remind_at: '2026-03-01T12:40:00.000Z', specs: ['P1D', 'PT1H'], why: 'at_due_instead' }],
      skipped: [
        { remind_at: '2026-02-28T12:40:00.000Z', specs: ['P1D'], why: 'past' },
        { remind_at: '2026-03-01T11:40:00.000Z', specs: ['PT1H'], why: 'past' },
      ],
    });
  });

  it('keeps one within the grace window (it fires at once) and skips an instant long past', () => {
    const plan = reminderPlanOf(task('2026-03-01T12:50:00.000Z', ['PT1H', '2026-02-01T09:00:00Z']), ['P1D'], {
      asOf,
      graceMs,
    });
    assert.deepEqual(plan.scheduled, [
      { remind_at: '2026-03-01T11:50:00.000Z', specs: ['PT1H'], why: 'asked' },
    ]);
    assert.deepEqual(plan.skipped, [
      { remind_at: '2026-02-01T09:00:00.000Z', specs: ['2026-02-01T09:00:00Z'], why: 'past' },
    ]);
  });

  it('plans nothing for defaults without a due date, or explicitly no reminders', () => {
    const none = { scheduled: [], skipped: [] };
    assert.deepEqual(reminderPlanOf(task(null, null), ['P1D'], { asOf, graceMs }), none);
    assert.deepEqual(reminderPlanOf(task('2026-03-02T12:00:00.000Z', []), ['P1D'], { asOf, graceMs }), none);
  });
});

describe('changeMovesReminders (which change answers carry a reminder plan)', () => {
  const t = (eventType: TaskEventType | null, changes: string[]) =>
    changeMovesReminders({ eventType, changes });
  it('a new due date or reminders, completing and reopening move them; other fields and no change do not', () => {
    assert.equal(t('task.updated', ['due_date']), true);
    assert.equal(t('task.updated', ['title', 'reminders']), true);
    assert.equal(t('task.completed', ['status', 'completed_at']), true);
    assert.equal(t('task.reopened', ['status']), true);
    assert.equal(t('task.updated', ['title', 'tags', 'recurrence']), false);
    assert.equal(t(null, []), false);
  });
});
