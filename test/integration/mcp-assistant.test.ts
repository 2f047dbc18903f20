/**
 * What an assistant does with the MCP tools when a user talks to it: each message becomes the tool calls a
 * model could make from the tool descriptions alone (words for dates and rules, no user id, no arithmetic
 * on time zones), against the running system (api, relay, reminders, recurrence and notifications targets,
 * through the official MCP client SDK), and the test checks what ends up in the database: the tasks, the
 * reminder schedule, the next occurrence and the in-app notification.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ManualClock } from '../../src/domain/clock.ts';
import { findTargets } from '../../src/services/index.ts';
import { createRemindersTarget, type ReminderScheduler } from '../../src/services/reminders/index.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import { startSmtpSink } from '../helpers/sinks.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { outboxRelayed, startApp, waitFor, type TestApp } from '../helpers/app.ts';

const WAIT = 30_000;
const MIN = 60_000;

type ToolResult = { isError?: boolean; content: { text?: string }[]; structuredContent?: any };

describe('an assistant over MCP: what a user says, as tool calls, ends in the database', () => {
  // Wednesday 4 March 2026, 10:00 UTC; the user's zone is UTC (the default).
  const clock = new ManualClock('2026-03-04T10:00:00Z');
  let db: Db;
  let app: TestApp;
  let scheduler: ReminderScheduler;
  let client: Client;
  let smtp: Awaited<ReturnType<typeof startSmtpSink>>;
  const user = 'dana';

  before(async () => {
    smtp = await startSmtpSink();
    db = await openDb('memory://');
    await migrate(db);
    app = await startApp(db, {
      clock,
      targets: [
        ...findTargets(['api', 'relay', 'recurrence']),
        createNotificationsTarget({ smtpUrl: smtp.url, tickMs: 20 }),
        createRemindersTarget({ tickMs: 20, onScheduler: (s) => (scheduler = s) }),
      ],
    });
    client = new Client({ name: 'assistant', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${await app.token(user)}` } },
      }),
    );
  });
  after(async () => {
    await client?.close();
    await app?.stop();
    await db?.close();
    await smtp?.close();
  });

  const call = async (name: string, args: Record<string, unknown>) => {
    const r = (await client.callTool({ name, arguments: args })) as ToolResult;
    assert.notEqual(r.isError, true, `${name}: ${r.content.map((c) => c.text).join()}`);
    return r.structuredContent;
  };
  const row = async (sql: string, params: unknown[]) => (await db.query<any>(sql, params)).rows;

  it('remind me, repeat, what is due, it fired, snooze it, when next, I did it', async () => {
    // The model learns the time and the user's zone first, as the server's instructions say.
    const context = await call('get_context', {});
    assert.deepEqual(
      [context.now, context.weekday, context.timezone],
      ['2026-03-04T10:00:00.000Z', 'Wednesday', 'UTC'],
    );

    // "Remind me to call mom in 30 minutes."
    const mom = await call('add_task', { title: 'Call mom', due_date: 'in 30 minutes' });
    assert.equal(mom.task.due_date, '2026-03-04T10:30:00.000Z');
    assert.deepEqual(mom.resolved[0], {
      argument: 'due_date',
      said: 'in 30 minutes',
      as: '2026-03-04T10:30:00.000Z',
      local: '2026-03-04T10:30:00+00:00',
    });
    // The default reminders (a day and an hour before) are both past: one reminder at the due time. The
    // answer says so, for the model to tell the user.
    assert.deepEqual(mom.reminder_plan.scheduled, [
      { remind_at: '2026-03-04T10:30:00.000Z', specs: ['P1D', 'PT1H'], why: 'at_due_instead' },
    ]);
    assert.deepEqual(
      mom.reminder_plan.skipped.map((r: { specs: string[]; why: string }) => [r.specs, r.why]),
      [
        [['P1D'], 'past'],
        [['PT1H'], 'past'],
      ],
    );
    const scheduled = await waitFor(
      async () => {
        const r = await row(
          `SELECT remind_at, status FROM reminder_schedule WHERE task_id = $1 ORDER BY remind_at`,
          [mom.task_id],
        );
        return r.length > 0 && r;
      },
      WAIT,
      'the reminder of "Call mom"',
    );
    assert.deepEqual(
      scheduled.map((r: any) => [new Date(r.remind_at).toISOString(), r.status]),
      [['2026-03-04T10:30:00.000Z', 'scheduled']],
    );

    // "Every other Monday at 9, water the plants."
    const plants = await call('add_task', {
      title: 'Water the plants',
      recurrence: 'every other Monday at 9',
    });
    assert.equal(plants.task.recurrence.rrule, 'FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=9;BYMINUTE=0');
    assert.equal(plants.task.due_date, '2026-03-09T09:00:00.000Z'); // the first occurrence
    assert.equal(plants.resolved[0].local, 'first 2026-03-09T09:00:00+00:00');

    // "What is due this week?"
    const week = await call('list_tasks', { due: 'week', status: 'pending', sort: 'due' });
    assert.deepEqual(
      week.tasks.map((t: any) => t.title),
      ['Call mom', 'Water the plants'],
    );

    // Half an hour later the reminder fires: an in-app notification.
    clock.advance(31 * MIN);
    await scheduler.tick();
    await outboxRelayed(db);
    const notes = await waitFor(
      async () => {
        const items = (await app.call(user, 'GET', '/api/notifications')).body.items as any[];
        return items.length > 0 && items;
      },
      WAIT,
      'the notification of the reminder',
    );
    assert.equal(notes.length, 1);
    assert.equal(notes[0].task_id, mom.task_id);

    // "Snooze that reminder 10 minutes." (the reminder that fired: no id needed)
    const snoozed = await call('snooze_reminder', { task_id: mom.task_id, for: '10 minutes' });
    assert.deepEqual(
      [snoozed.status, snoozed.remind_at, snoozed.snoozed],
      ['scheduled', '2026-03-04T10:41:00.000Z', true],
    );
    clock.advance(11 * MIN);
    await scheduler.tick();
    await outboxRelayed(db);
    const inbox = await waitFor(
      async () => {
        const r = await call('list_notifications', { unread_only: true });
        return r.unread_count === 2 && r;
      },
      WAIT,
      'the snoozed reminder firing again',
    );
    assert.ok(inbox.items.every((n: any) => n.task_id === mom.task_id));
    await call('mark_notification_read', { notification_id: inbox.items[0].id });
    assert.equal((await call('list_notifications', {})).unread_count, 1);

    // "And after Monday, when do I water them?" (the rule, confirmed before relying on it)
    const preview = await call('preview_occurrences', { task_id: plants.task_id, count: 3 });
    assert.deepEqual(preview.occurrences, [
      '2026-03-23T09:00:00.000Z',
      '2026-04-06T09:00:00.000Z',
      '2026-04-20T09:00:00.000Z',
    ]);

    // "I did it."
    const done = await call('complete_task', { task_id: mom.task_id });
    assert.equal(done.task.status, 'completed');

    // Watering done too: the next occurrence is created two weeks on.
    await call('complete_task', { task_id: plants.task_id });
    const next = await waitFor(
      async () => {
        const r = await row(
          `SELECT id::text AS id, due_date, status FROM tasks WHERE user_id = $1 AND title = 'Water the plants' AND status = 'pending'`,
          [user],
        );
        return r.length > 0 && r;
      },
      WAIT,
      'the next occurrence of "Water the plants"',
    );
    assert.equal(next.length, 1);
    assert.equal(new Date(next[0].due_date).toISOString(), '2026-03-23T09:00:00.000Z');

    // "Skip the next watering." The pending occurrence moves to the one after.
    const pendingPlants = (await call('list_tasks', { status: 'pending' })).tasks.find(
      (t: any) => t.title === 'Water the plants',
    );
    const skipped = await call('skip_occurrence', { task_id: pendingPlants.task_id });
    assert.equal(skipped.status, 'skipped');
    assert.equal(skipped.task.due_date, '2026-04-06T09:00:00.000Z');
    // "Don't remind me a day before." One of its reminders, by id from list_reminders.
    // The reminders target knows the new occurrence once its task.created has reached it: until then the
    // tool answers that they are not known yet (REST: 404).
    const plantReminders = await waitFor(
      async () => {
        const r = (await client.callTool({
          name: 'list_reminders',
          arguments: { task_id: pendingPlants.task_id },
        })) as ToolResult;
        return !r.isError && r.structuredContent.items.length > 0 && r.structuredContent.items;
      },
      WAIT,
      'the reminders of the next watering',
    );
    const dismissed = await call('dismiss_reminder', {
      task_id: pendingPlants.task_id,
      reminder_id: plantReminders[0].id,
    });
    assert.equal(dismissed.status, 'dismissed');
    // "Email my reminders to dana@example.com." A code goes there; the user reads it back.
    const set = await call('set_notification_email', { email: 'dana@example.com' });
    assert.equal(set.email_confirmed, false);
    assert.equal(set.email_confirmation.sent_to, 'dana@example.com');
    const codeMail = smtp.mails.find((m) => m.to.includes('dana@example.com'))!;
    const code = /^(\d{6}) is your code/m.exec(codeMail.raw)![1]!;
    const wrong = (await client.callTool({
      name: 'confirm_email',
      arguments: { code: code === '000000' ? '000001' : '000000' },
    })) as ToolResult;
    assert.equal(wrong.isError, true);
    assert.match(wrong.content[0]!.text ?? '', /4 more tries/);
    const again = await call('send_email_code', {});
    assert.equal(again.sent_to, 'dana@example.com');
    const newest = /^(\d{6}) is your code/m.exec(
      smtp.mails.filter((m) => m.to.includes('dana@example.com')).at(-1)!.raw,
    )![1]!;
    assert.equal((await call('confirm_email', { code: newest })).email_confirmed, true);
    // "Remind me 15 minutes before by default."
    const settings = await call('update_settings', { default_reminders: ['PT15M'] });
    assert.deepEqual(settings.default_reminders, ['PT15M']);
    assert.deepEqual((await call('get_context', {})).default_reminders, ['PT15M']);
    // A retried request says the same words: the same task, though "in an hour" now means another time.
    const first = await call('add_task', {
      title: 'Stretch',
      due_date: 'in an hour',
      idempotency_key: 'k-stretch',
    });
    clock.advance(MIN);
    const retried = await call('add_task', {
      title: 'Stretch',
      due_date: 'in an hour',
      idempotency_key: 'k-stretch',
    });
    assert.equal(retried.task_id, first.task_id);
    assert.deepEqual([first.status, retried.status], ['created', 'replayed']);
    // The same key with other arguments: refused in the tool's words, not HTTP's.
    const other = (await client.callTool({
      name: 'add_task',
      arguments: { title: 'Stretch more', idempotency_key: 'k-stretch' },
    })) as ToolResult;
    assert.equal(other.isError, true);
    assert.match(
      other.content[0]!.text ?? '',
      /^idempotency_key "k-stretch" was used in the last 24 hours with other arguments/,
    );

    // What the database holds for the user at the end.
    const tasks = await row(
      `SELECT title, status, due_date FROM tasks WHERE user_id = $1 ORDER BY due_date`,
      [user],
    );
    assert.deepEqual(
      tasks.map((t: any) => [t.title, t.status, new Date(t.due_date).toISOString()]),
      [
        ['Call mom', 'completed', '2026-03-04T10:30:00.000Z'],
        ['Stretch', 'pending', '2026-03-04T11:42:00.000Z'],
        ['Water the plants', 'completed', '2026-03-09T09:00:00.000Z'],
        ['Water the plants', 'pending', '2026-04-06T09:00:00.000Z'],
      ],
    );
    const fired = await row(`SELECT status, fire_count, snoozed FROM reminder_schedule WHERE task_id = $1`, [
      mom.task_id,
    ]);
    assert.deepEqual(
      fired.map((r: any) => [r.status, r.fire_count, r.snoozed]),
      [['triggered', 2, true]],
    );
    const notifications = await row(
      `SELECT task_id::text AS task_id, read_at IS NOT NULL AS read FROM notifications WHERE user_id = $1 ORDER BY created_at`,
      [user],
    );
    assert.deepEqual(
      notifications.map((n: any) => n.task_id),
      [mom.task_id, mom.task_id],
    );
    assert.equal(notifications.filter((n: any) => n.read).length, 1);
  });

  it('says the reminders of a task are not known yet, not "task not found", when the reminders target has not seen it', async () => {
    // A task in the API's table whose event the reminders target has not consumed (here: never written).
    const id = '0190a000-0000-7000-8000-00000000abcd';
    await db.query(
      `INSERT INTO tasks (id, user_id, title, description, status, priority, priority_rank, tags, tag_keys,
         created_at, updated_at, version)
       VALUES ($1, $2, 'Unseen', '', 'pending', 'none', 0, '{}', '{}', now(), now(), 1)`,
      [id, user],
    );
    const r = (await client.callTool({ name: 'list_reminders', arguments: { task_id: id } })) as ToolResult;
    assert.equal(r.isError, true);
    assert.match(
      r.content[0]!.text ?? '',
      /the task exists, but its reminders and repeats are not known yet/,
    );
    // A task that does not exist is still not found.
    const gone = (await client.callTool({
      name: 'list_reminders',
      arguments: { task_id: '0190a000-0000-7000-8000-00000000dcba' },
    })) as ToolResult;
    assert.match(gone.content[0]!.text ?? '', /task not found/);
  });
});
