/**
 * Reminders as a user meets them, each failing before its fix (a review found them); the api and reminders
 * targets on PGlite, a manual clock:
 * - "never none": a task completed before its reminder fired and reopened after that reminder's time, or one
 *   whose due date moved away and back, answered a reminder at the due time and got none (the row its task
 *   change had dismissed counted as a reminder the user had);
 * - a reminder missed while the scheduler was down could be snoozed after its task was completed, and fired
 *   for the completed task;
 * - a fired reminder snoozed after its task's due date moved fired again naming the old due date;
 * - MCP `dismiss_reminder` without an id, after `snooze_reminder`, dismissed an older reminder and the snoozed
 *   one fired again;
 * - completing and reopening a task lost a snooze: the reminder came back at its planned instant;
 * - a reminder the user dismissed after completing its task (or moving its due date away) answered 200 but
 *   stayed the task change's: reopening the task (moving the due date back) brought it back, and it fired.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { HOUR, MIN, harness, type Harness } from '../helpers/reminders-harness.ts';

describe('reminders edges', () => {
  let h: Harness;
  before(async () => (h = await harness()));
  after(async () => h?.stop());
  const scheduledOf = async (taskId: string) =>
    (await h.rows(taskId)).filter((r) => r.status === 'scheduled').map((r) => r.remind_at);

  it('a task reopened when its never-fired reminder is past is reminded at the due time, as answered', async () => {
    const task = await h.createTask('ann', {
      title: 'Pay bill',
      due_date: h.at(3 * HOUR),
      reminders: ['PT1H'],
    });
    await h.applied(task.id, 1);
    assert.equal((await h.app.call('ann', 'POST', `/api/tasks/${task.id}/complete`)).status, 200);
    await h.applied(task.id, 2);
    h.clock.advance(2 * HOUR + 30 * MIN); // due in 30 minutes: the 1-hour-before reminder is past
    const reopened = await h.app.call('ann', 'POST', `/api/tasks/${task.id}/reopen`);
    assert.equal(reopened.status, 200);
    assert.deepEqual(reopened.body.reminder_plan.scheduled, [
      { remind_at: task.due_date, specs: ['PT1H'], why: 'at_due_instead' },
    ]);
    await h.applied(task.id, 3);
    assert.deepEqual(await scheduledOf(task.id), [task.due_date]);
    h.clock.advance(30 * MIN + 1_000);
    await h.scheduler().tick();
    assert.equal((await h.events(task.id, 'reminder.triggered')).length, 1);
  });

  it('a due date moved away and back to where its never-fired reminder is past: reminded at the due time', async () => {
    const due = h.at(3 * HOUR);
    const t = await h.createTask('gus', { title: 'Meet', due_date: due, reminders: ['PT1H'] });
    await h.applied(t.id, 1);
    assert.equal(
      (await h.app.call('gus', 'PATCH', `/api/tasks/${t.id}`, { due_date: h.at(48 * HOUR) })).status,
      200,
    );
    await h.applied(t.id, 2);
    h.clock.advance(2 * HOUR + 30 * MIN);
    const back = await h.app.call('gus', 'PATCH', `/api/tasks/${t.id}`, { due_date: due });
    assert.equal(back.status, 200);
    await h.applied(t.id, 3);
    assert.deepEqual(
      back.body.reminder_plan.scheduled.map((s: { remind_at: string }) => s.remind_at),
      [due],
    );
    assert.deepEqual(await scheduledOf(t.id), [due]);
  });

  it('a missed reminder of a completed task cannot be snoozed into firing for it', async () => {
    const t = await h.createTask('dan', { title: 'Report', due_date: h.at(2 * HOUR), reminders: ['PT1H'] });
    await h.applied(t.id, 1);
    h.clock.advance(2 * HOUR + MIN); // the scheduler was down: found an hour late, the task due, missed
    await h.scheduler().tick();
    const [r] = await h.rows(t.id);
    assert.equal(r!.status, 'missed');
    assert.equal((await h.app.call('dan', 'POST', `/api/tasks/${t.id}/complete`)).status, 200);
    await h.applied(t.id, 2);
    const s = await h.app.call('dan', 'POST', `/api/tasks/${t.id}/reminders/${r!.id}/snooze`, {
      duration: 'PT10M',
    });
    assert.equal(s.status, 409, JSON.stringify(s.body));
    h.clock.advance(10 * MIN + 1_000);
    await h.scheduler().tick();
    assert.deepEqual(await h.events(t.id, 'reminder.triggered'), []);
  });

  it('a fired reminder snoozed after its due date moved fires naming the due date the task has now', async () => {
    const t = await h.createTask('hal', {
      title: 'Dinner',
      due_date: h.at(3 * HOUR),
      reminders: [h.at(HOUR)],
    });
    await h.applied(t.id, 1);
    h.clock.advance(HOUR + 1_000);
    await h.scheduler().tick();
    const [r] = await h.rows(t.id);
    assert.equal(r!.status, 'triggered');
    const newDue = h.at(5 * HOUR);
    assert.equal((await h.app.call('hal', 'PATCH', `/api/tasks/${t.id}`, { due_date: newDue })).status, 200);
    await h.applied(t.id, 2);
    const s = await h.app.call('hal', 'POST', `/api/tasks/${t.id}/reminders/${r!.id}/snooze`, {
      duration: 'PT10M',
    });
    assert.equal(s.status, 200, JSON.stringify(s.body));
    h.clock.advance(10 * MIN + 1_000);
    await h.scheduler().tick();
    const fired = await h.events(t.id, 'reminder.triggered');
    assert.equal(fired.length, 2);
    assert.equal(fired[1]!.data.due_at, newDue);
  });

  /** The user dismisses the task's reminder, which a task change already set aside: recorded as the user's. */
  const dismissSetAside = async (user: string, taskId: string, setAsideBecause: string) => {
    const [r] = await h.rows(taskId);
    assert.deepEqual([r!.status, r!.dismiss_reason], ['dismissed', setAsideBecause]);
    const d = await h.app.call(user, 'POST', `/api/tasks/${taskId}/reminders/${r!.id}/dismiss`);
    assert.equal(d.status, 200, JSON.stringify(d.body));
    assert.deepEqual([d.body.status, d.body.dismiss_reason], ['dismissed', 'user']);
    // As a fresh dismissal: its event says the user dismissed it.
    const events = await h.events(taskId, 'reminder.dismissed');
    assert.deepEqual(
      events.map((e) => e.data.reason),
      [setAsideBecause, 'dismissed_by_user'],
    );
    // Once the user's, a second dismissal changes nothing.
    const again = await h.app.call(user, 'POST', `/api/tasks/${taskId}/reminders/${r!.id}/dismiss`);
    assert.equal(again.status, 200);
    assert.equal((await h.events(taskId, 'reminder.dismissed')).length, 2);
    return r!;
  };

  it('a reminder the user dismissed while its task was completed does not come back when it is reopened', async () => {
    const t = await h.createTask('ivy', { title: 'Pay rent', due_date: h.at(3 * HOUR), reminders: ['PT1H'] });
    await h.applied(t.id, 1);
    assert.equal((await h.app.call('ivy', 'POST', `/api/tasks/${t.id}/complete`)).status, 200);
    await h.applied(t.id, 2);
    await dismissSetAside('ivy', t.id, 'task_completed');
    h.clock.advance(10 * MIN);
    assert.equal((await h.app.call('ivy', 'POST', `/api/tasks/${t.id}/reopen`)).status, 200);
    await h.applied(t.id, 3);
    assert.deepEqual(await scheduledOf(t.id), []);
    h.clock.advance(2 * HOUR); // the reminder's time (1 h before due)
    await h.scheduler().tick();
    assert.deepEqual(await h.events(t.id, 'reminder.triggered'), [], 'the reminder the user dismissed fired');
  });

  it('a reminder the user dismissed after its due date moved away does not come back when it moves back', async () => {
    const due = h.at(3 * HOUR);
    const t = await h.createTask('jon', { title: 'Dentist', due_date: due, reminders: ['PT1H'] });
    await h.applied(t.id, 1);
    const away = await h.app.call('jon', 'PATCH', `/api/tasks/${t.id}`, { due_date: h.at(48 * HOUR) });
    assert.equal(away.status, 200);
    await h.applied(t.id, 2);
    await dismissSetAside('jon', t.id, 'rescheduled');
    const back = await h.app.call('jon', 'PATCH', `/api/tasks/${t.id}`, { due_date: due });
    assert.equal(back.status, 200);
    await h.applied(t.id, 3);
    assert.deepEqual(await scheduledOf(t.id), []);
    h.clock.advance(2 * HOUR + 1_000);
    await h.scheduler().tick();
    assert.deepEqual(await h.events(t.id, 'reminder.triggered'), [], 'the reminder the user dismissed fired');
  });
});

describe('a snooze through completing and reopening the task', () => {
  let h: Harness;
  before(async () => (h = await harness()));
  after(async () => h?.stop());
  const completeReopen = async (user: string, id: string, version: number) => {
    assert.equal((await h.app.call(user, 'POST', `/api/tasks/${id}/complete`)).status, 200);
    await h.applied(id, version);
    h.clock.advance(MIN);
    assert.equal((await h.app.call(user, 'POST', `/api/tasks/${id}/reopen`)).status, 200);
    await h.applied(id, version + 1);
    await h.scheduler().tick();
  };

  it('a fired reminder snoozed for 30 minutes keeps its snooze (it fired again at once)', async () => {
    const t = await h.createTask('bea', { title: 'Snoozed', due_date: h.at(2 * HOUR), reminders: ['PT1H'] });
    await h.applied(t.id, 1);
    h.clock.advance(HOUR + 1_000);
    await h.scheduler().tick();
    const [r] = await h.rows(t.id);
    const s = await h.app.call('bea', 'POST', `/api/tasks/${t.id}/reminders/${r!.id}/snooze`, {
      duration: 'PT30M',
    });
    assert.equal(s.status, 200, JSON.stringify(s.body));
    await completeReopen('bea', t.id, 2);
    assert.equal((await h.events(t.id, 'reminder.triggered')).length, 1);
    assert.equal((await h.rows(t.id))[0]!.remind_at, s.body.remind_at);
  });

  it('a reminder delayed by a snooze is not brought back to its earlier time', async () => {
    const t = await h.createTask('cid', { title: 'Later', due_date: h.at(3 * HOUR), reminders: ['PT2H'] });
    await h.applied(t.id, 1);
    const [r] = await h.rows(t.id);
    const s = await h.app.call('cid', 'POST', `/api/tasks/${t.id}/reminders/${r!.id}/snooze`, {
      duration: 'PT2H',
    });
    assert.equal(s.status, 200, JSON.stringify(s.body));
    await completeReopen('cid', t.id, 2);
    assert.equal((await h.rows(t.id))[0]!.remind_at, s.body.remind_at);
    h.clock.advance(HOUR + MIN); // past the planned time, before the snooze ends
    await h.scheduler().tick();
    assert.deepEqual(await h.events(t.id, 'reminder.triggered'), []);
  });
});

describe('MCP: "snooze it", then "dismiss it"', () => {
  let h: Harness;
  let client: Client;
  before(async () => {
    h = await harness();
    client = new Client({ name: 'assistant', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${h.app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await h.app.token('eve')}` } },
      }),
    );
  });
  after(async () => {
    await client?.close();
    await h?.stop();
  });
  const call = async (name: string, args: Record<string, unknown>) =>
    (await client.callTool({ name, arguments: args })) as {
      isError?: boolean;
      content: unknown[];
      structuredContent?: { id?: string };
    };

  it('dismisses the reminder just snoozed (the one that fired last), which does not fire again', async () => {
    const t = await h.createTask('eve', {
      title: 'Stretch',
      due_date: h.at(3 * HOUR),
      reminders: ['PT2H', 'PT1H'],
    });
    await h.applied(t.id, 1);
    h.clock.advance(HOUR + 1_000);
    await h.scheduler().tick(); // the 2-hours-before one fires
    h.clock.advance(HOUR);
    await h.scheduler().tick(); // the 1-hour-before one fires: the one that fired last
    assert.equal((await h.events(t.id, 'reminder.triggered')).length, 2);
    const snoozed = await call('snooze_reminder', { task_id: t.id, for: '10 minutes' });
    assert.notEqual(snoozed.isError, true, JSON.stringify(snoozed.content));
    const dismissed = await call('dismiss_reminder', { task_id: t.id });
    assert.notEqual(dismissed.isError, true, JSON.stringify(dismissed.content));
    assert.equal(dismissed.structuredContent?.id, snoozed.structuredContent?.id);
    h.clock.advance(10 * MIN + 1_000);
    await h.scheduler().tick();
    assert.equal((await h.events(t.id, 'reminder.triggered')).length, 2);
  });
});
