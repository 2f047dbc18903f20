/**
 * Reminders and notifications end to end, with real components: the api, relay, reminders and
 * notifications targets in one process on the bus (embedded by default; TEST_BUS=kafka with KAFKA_BROKERS
 * for the same flow on Kafka), a ManualClock, a real SMTP server, a real webhook receiver and a real (local,
 * HTTPS) Web Push service. Then the scheduler alone: two instances over one database firing 1,000 reminders,
 * a crash between claim and publish (an in-transaction hook everywhere; a SIGKILLed child process on
 * PostgreSQL), and catch-up after downtime.
 */
import type { ReminderPlan } from '../../src/domain/reminders.ts';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { uuidv7 } from '../../src/ids.ts';
import webpush from 'web-push';
import WebSocket from 'ws';
import { Temporal } from 'temporal-polyfill';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { GROUPS } from '../../src/services/index.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import { createRemindersTarget, type ReminderScheduler } from '../../src/services/reminders/index.ts';
import { findTargets } from '../../src/services/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import {
  outboxRelayed,
  startApp,
  waitCaughtUp,
  waitFor,
  writtenEvents,
  type TestApp,
} from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import {
  startPushService,
  startSmtpSink,
  startWebhookSink,
  type PushServiceSink,
  type ReceivedMail,
  type ReceivedRequest,
} from '../helpers/sinks.ts';
import { notificationsManifest } from '../../src/services/notifications/manifest.ts';
import { remindersManifest } from '../../src/services/reminders/manifest.ts';

/** How long to wait for an asynchronous effect before failing (generous: CI machines are small and busy). */
const WAIT = 30_000;
const MIN = 60_000;
const HOUR = 60 * MIN;
const START = '2026-03-01T12:00:00Z';
/** The end-to-end flow runs on the embedded bus, and on the real Kafka broker when scripts/test started one. */
const kafkaBrokers = process.env.TEST_KAFKA_BROKERS ?? process.env.KAFKA_BROKERS;
const BUSES = process.env.TEST_BUS
  ? [process.env.TEST_BUS]
  : ['embedded', ...(kafkaBrokers ? ['kafka'] : [])];
const busEnv = (bus = 'embedded'): Record<string, string> =>
  bus === 'kafka'
    ? {
        BUS: 'kafka',
        KAFKA_BROKERS: kafkaBrokers!,
        KAFKA_TOPIC_PREFIX: `rem${Math.random().toString(36).slice(2, 8)}.`,
      }
    : { BUS: bus };
const SECRET = 'webhook-secret-for-tests-0123456789';

type ReminderCloudEvent = CloudEvent<ReminderEventData>;

/** The reminder events on the bus (the `reminders` topic), optionally of one task. */
async function reminderEvents(app: TestApp, taskId?: string): Promise<ReminderCloudEvent[]> {
  const messages = await app.proc.runtime.bus.admin.read(TOPICS.reminders, { limit: 100_000 });
  return messages
    .map((m) => m.event as ReminderCloudEvent)
    .filter((e) => !taskId || e.data.task_id === taskId);
}

async function waitForEvents(
  app: TestApp,
  taskId: string,
  type: string,
  count: number,
): Promise<ReminderCloudEvent[]> {
  return waitFor(
    async () => {
      const list = (await reminderEvents(app, taskId)).filter((e) => e.type === type);
      return list.length >= count ? list : undefined;
    },
    WAIT,
    `${count} ${type} event(s) for task ${taskId}`,
  );
}

const typesOf = (events: ReminderCloudEvent[]) => events.map((e) => e.type);

for (const BUS of BUSES) {
  describe(`reminders and notifications end to end (${BUS} bus)`, () => {
    let db: Db;
    let drop: () => Promise<void>;
    let app: TestApp;
    let clock: ManualClock;
    let smtp: Awaited<ReturnType<typeof startSmtpSink>>;
    let hooks: Awaited<ReturnType<typeof startWebhookSink>>;
    let pushService: PushServiceSink;
    const vapid = webpush.generateVAPIDKeys();

    before(async () => {
      ({ db, drop } = await backends[0]!.fresh());
      smtp = await startSmtpSink();
      // /fail always fails; /flaky fails twice, then accepts.
      hooks = await startWebhookSink((path, nth) =>
        path.startsWith('/fail') ? 500 : path.startsWith('/flaky') && nth <= 2 ? 503 : 200,
      );
      pushService = await startPushService();
      clock = new ManualClock(START);
      app = await startApp(db, {
        clock,
        env: { ...busEnv(BUS), PUBLIC_URL: 'https://tasks.example.test' },
        targets: [
          ...findTargets(['api', 'relay', 'gateway']),
          createRemindersTarget({ tickMs: 20, onScheduler: (s) => (scheduler = s) }),
          createNotificationsTarget({
            smtpUrl: smtp.url,
            smtpFrom: 'Taskflow <reminders@taskflow.test>',
            vapid: { ...vapid, subject: 'mailto:ops@taskflow.test' },
            pushAgent: pushService.agent,
            tickMs: 20,
            webhookAllowPrivate: true, // the webhook receiver listens on 127.0.0.1
            maxAttempts: 3,
            retryBaseMs: 1_000,
            retryMaxMs: 4_000,
          }),
        ],
      });
    });
    after(async () => {
      await app?.stop();
      await smtp?.close();
      await hooks?.close();
      await pushService?.close();
      await drop?.();
    });

    /*
     * Barriers for "nothing more happened" checks, instead of sleeping: each proves the system caught up.
     *
     * firedUpToNow: a scheduler tick of the test's own claims whatever is due at the clock's time and the loop
     * has not claimed (claims are transactions, serialized with the loop's on the database), so after it every
     * due reminder has its event in the outbox; then the outbox is relayed, and the bus has them all.
     * deliveriesIdle: no delivery of the user is due or being sent (claimed), so nothing more is sent before
     * the clock moves on.
     */
    let scheduler: ReminderScheduler;
    const firedUpToNow = async () => {
      await scheduler.tick();
      await outboxRelayed(db);
    };
    const deliveriesIdle = (user: string) =>
      waitFor(
        async () =>
          (
            await db.query(
              `SELECT 1 FROM notification_deliveries WHERE user_id = $1 AND status = 'pending'
                 AND (claimed_by IS NOT NULL OR next_attempt_at <= $2) LIMIT 1`,
              [user, clock.now().toISOString()],
            )
          ).rows.length === 0,
        WAIT,
        `no delivery of ${user} due or in flight`,
      );

    /** A mail with the code that confirms an address (POST /api/notifications/email/confirm). */
    const isCode = (m: ReceivedMail) => /^X-Taskflow-Confirmation: email\r?$/im.test(m.raw);
    /** The reminders mailed to `addr` (confirmation codes left out). */
    const mailsTo = (addr: string): ReceivedMail[] =>
      smtp.mails.filter((m) => m.to.includes(addr) && !isCode(m));
    const codesTo = (addr: string): string[] =>
      smtp.mails
        .filter((m) => m.to.includes(addr) && isCode(m))
        .map((m) => /^(\d{6}) is your code/m.exec(m.raw)![1]!);
    const hooksAt = (path: string): ReceivedRequest[] => hooks.calls.filter((c) => c.path === path);
    const inbox = async (user: string) => (await app.call(user, 'GET', '/api/notifications')).body;
    const inboxFor = async (user: string, taskId: string) =>
      (await inbox(user)).items.filter((n: { task_id: string }) => n.task_id === taskId);
    const at = (ms: number) => new Date(clock.now().getTime() + ms).toISOString();

    /** Sets `user`'s preferences; a new email address is confirmed with the code mailed to it, as a user would. */
    async function setPrefs(user: string, body: { email?: string; [field: string]: unknown }) {
      const r = await app.call(user, 'PUT', '/api/notifications/preferences', body);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      if (body.email && !r.body.email_confirmed) {
        assert.equal(r.body.email_confirmation?.sent_to, body.email, JSON.stringify(r.body));
        const code = codesTo(body.email).at(-1)!;
        const confirmed = await app.call(user, 'POST', '/api/notifications/email/confirm', { code });
        assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
        assert.equal(confirmed.body.email_confirmed, true);
      }
      return r.body;
    }
    /**
     * The user's email (`<user>@example.com`), and quiet hours (UTC) from an hour ago to `hours` from now, with
     * `more` preferences: emails are held. Returns when the quiet hours end.
     */
    async function holdEmails(user: string, hours: number, more: object = {}) {
      const now = clock.now();
      const hhmm = (d: Date) => d.toISOString().slice(11, 16);
      const end = new Date(now.getTime() + hours * HOUR);
      await setPrefs(user, {
        email: `${user}@example.com`,
        ...more,
        quiet_hours: { start: hhmm(new Date(now.getTime() - HOUR)), end: hhmm(end), timezone: 'UTC' },
      });
      return end;
    }
    async function createTask(user: string, body: object) {
      const r = await app.call(user, 'POST', '/api/tasks', body);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body as { id: string; due_date: string; reminder_plan: ReminderPlan };
    }
    /**
     * A task of `user` whose one reminder, a minute from now, has fired: its in-app notification is there and no
     * delivery of the user is due (what else it sends, or holds, is the caller's to check).
     */
    async function fireOne(user: string, title: string) {
      const task = await createTask(user, { title, reminders: [at(MIN)] });
      await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      clock.advance(MIN + 1_000);
      await waitForEvents(app, task.id, 'reminder.triggered', 1);
      await waitFor(
        async () => (await inboxFor(user, task.id)).length === 1,
        WAIT,
        `the in-app one of ${title}`,
      );
      await deliveriesIdle(user);
      return task;
    }

    it('schedules, fires once, and notifies by email, in-app, web push and a signed webhook', async () => {
      await setPrefs('alice', {
        email: 'alice@example.com',
        webhook_url: `${hooks.url}/alice`,
        webhook_secret: SECRET,
      });
      // Alice's board is open: the in-app notification is pushed to it live through the gateway.
      const frames: { type: string; notification?: { task_id: string; title: string; id: string } }[] = [];
      const board = new WebSocket(`${app.url.replace('http', 'ws')}/ws`, [
        'taskflow.v1',
        `bearer.${await app.token('alice')}`,
      ]);
      board.on('message', (data) => frames.push(JSON.parse(String(data))));
      await waitFor(() => frames.some((f) => f.type === 'hello'), WAIT, 'the gateway hello');
      const sub = pushService.subscribe('alice');
      const gone = pushService.subscribe('alice-old-browser', 410);
      for (const s of [sub, gone]) {
        const r = await app.call('alice', 'POST', '/api/notifications/push-subscriptions', s);
        assert.equal(r.status, 201, JSON.stringify(r.body));
      }
      const prefs = await app.call('alice', 'GET', '/api/notifications/preferences');
      assert.deepEqual(prefs.body, {
        email: 'alice@example.com',
        channels: { email: true, push: true, in_app: true, webhook: true },
        quiet_hours: null,
        webhook_url: `${hooks.url}/alice`,
        webhook_secret_set: true,
        email_confirmed: true,
      });

      const task = await createTask('alice', {
        title: 'Pay rent',
        due_date: at(2 * HOUR),
        reminders: ['PT1H'],
      });
      const [scheduled] = await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      const remindAt = new Date(Date.parse(task.due_date) - HOUR).toISOString();
      assert.equal(scheduled!.data.remind_at, remindAt);
      assert.equal(scheduled!.data.due_at, task.due_date);
      assert.equal(scheduled!.data.user_id, 'alice');
      assert.equal(scheduled!.data.title, 'Pay rent');
      assert.deepEqual(scheduled!.data.channels, ['email', 'push', 'in_app', 'webhook']);
      assert.equal(scheduled!.partitionkey, 'alice');

      const list = await app.call('alice', 'GET', `/api/tasks/${task.id}/reminders`);
      assert.equal(list.status, 200);
      assert.equal(list.body.items.length, 1);
      assert.equal(list.body.items[0].id, scheduled!.data.reminder_id);
      assert.equal(list.body.items[0].status, 'scheduled');
      assert.equal((await app.call('bob', 'GET', `/api/tasks/${task.id}/reminders`)).status, 404);
      assert.equal((await app.call(null, 'GET', `/api/tasks/${task.id}/reminders`)).status, 401);

      await firedUpToNow();
      assert.equal((await reminderEvents(app, task.id)).length, 1, 'nothing fires before its time');
      clock.advance(HOUR + 1_000);
      const [triggered] = await waitForEvents(app, task.id, 'reminder.triggered', 1);
      assert.equal(triggered!.data.reminder_id, scheduled!.data.reminder_id);
      assert.equal(triggered!.data.triggered_at, clock.now().toISOString());

      await waitFor(() => mailsTo('alice@example.com').length === 1, WAIT, 'the email');
      await waitFor(
        async () => (await inboxFor('alice', task.id)).length === 1,
        WAIT,
        'the in-app notification',
      );
      await waitFor(() => hooksAt('/alice').length === 1, WAIT, 'the webhook call');
      const live = await waitFor(
        () => frames.find((f) => f.type === 'notification' && f.notification?.task_id === task.id),
        WAIT,
        'the live in-app notification on the open board',
      );
      assert.equal(live.notification!.title, 'Reminder: Pay rent');
      assert.equal(live.notification!.id, (await inboxFor('alice', task.id))[0].id, 'the inbox row');
      board.close();
      await waitFor(() => pushService.calls.some((c) => c.path === '/push/alice'), WAIT, 'the push message');
      await firedUpToNow();
      await deliveriesIdle('alice');

      // Exactly one of each.
      assert.equal(
        (await reminderEvents(app, task.id)).filter((e) => e.type === 'reminder.triggered').length,
        1,
      );
      const [mail] = mailsTo('alice@example.com');
      assert.equal(mailsTo('alice@example.com').length, 1);
      assert.equal(mail!.from, 'reminders@taskflow.test');
      assert.match(mail!.raw, /^Subject: Reminder: Pay rent$/m);
      assert.match(mail!.raw, /^Open Taskflow: https:\/\/tasks\.example\.test\/$/m, 'a link to PUBLIC_URL');
      assert.match(mail!.raw, new RegExp(`^X-Taskflow-Reminder-Id: ${scheduled!.data.reminder_id}$`, 'mi'));

      const [call] = hooksAt('/alice');
      assert.equal(hooksAt('/alice').length, 1);
      const expected = `sha256=${createHmac('sha256', SECRET).update(call!.body).digest('hex')}`;
      assert.equal(call!.headers['x-taskflow-signature'], expected, 'HMAC-SHA256 of the raw body');
      const payload = JSON.parse(call!.body);
      assert.equal(call!.headers['x-taskflow-timestamp'], String(payload.timestamp));
      assert.equal(payload.timestamp, Math.floor(clock.now().getTime() / 1000));
      assert.equal(call!.headers['x-taskflow-delivery'], payload.id);
      assert.equal(call!.headers['content-type'], 'application/json');
      assert.equal(payload.type, 'reminder.triggered');
      assert.equal(payload.event_id, triggered!.id);
      assert.equal(payload.data.reminder_id, scheduled!.data.reminder_id);
      assert.equal(payload.data.title, 'Pay rent');

      const pushes = pushService.calls.filter((c) => c.path === '/push/alice');
      assert.equal(pushes.length, 1);
      const claims = await pushService.verifyVapid(pushes[0]!.headers.authorization, vapid.publicKey);
      assert.equal(claims.aud, pushService.origin);
      assert.equal(claims.sub, 'mailto:ops@taskflow.test');
      assert.equal(pushes[0]!.headers['content-encoding'], 'aes128gcm');
      const message = JSON.parse(sub.decrypt(pushes[0]!.raw));
      assert.equal(message.title, 'Reminder: Pay rent');
      assert.equal(message.reminder_id, scheduled!.data.reminder_id);
      // The push service said 410 Gone for the old browser: that subscription is removed.
      await waitFor(
        async () =>
          (await db.query(`SELECT 1 FROM push_subscriptions WHERE endpoint = $1`, [gone.endpoint])).rows
            .length === 0,
        WAIT,
        'the gone subscription to be removed',
      );

      const notes = await inbox('alice');
      assert.equal(notes.unread_count, 1);
      const [note] = notes.items;
      assert.equal(note.title, 'Reminder: Pay rent');
      assert.equal(note.reminder_id, scheduled!.data.reminder_id);
      assert.equal(note.read_at, null);
      assert.equal((await app.call('bob', 'POST', `/api/notifications/${note.id}/read`)).status, 404);
      const read = await app.call('alice', 'POST', `/api/notifications/${note.id}/read`);
      assert.equal(read.status, 200);
      assert.equal(read.body.read_at, clock.now().toISOString());
      assert.equal((await inbox('alice')).unread_count, 0);
      assert.equal((await app.call('bob', 'GET', '/api/notifications')).body.items.length, 0);

      const after = await app.call('alice', 'GET', `/api/tasks/${task.id}/reminders`);
      assert.equal(after.body.items[0].status, 'triggered');
      assert.equal(after.body.items[0].fire_count, 1);

      // Duplicate delivery of the same triggered event (same id): no second notification on any channel.
      await app.proc.runtime.bus.publisher.publish([
        { topic: TOPICS.reminders, key: 'alice', event: triggered! },
      ]);
      await waitCaughtUp(app, GROUPS.notifications, WAIT);
      await deliveriesIdle('alice');
      assert.equal(mailsTo('alice@example.com').length, 1);
      assert.equal(hooksAt('/alice').length, 1);
      assert.equal(pushService.calls.filter((c) => c.path === '/push/alice').length, 1);
      assert.equal((await inboxFor('alice', task.id)).length, 1);
      const deliveries = await db.query(
        `SELECT channel, status FROM notification_deliveries WHERE event_id = $1 ORDER BY channel`,
        [triggered!.id],
      );
      assert.deepEqual(deliveries.rows, [
        { channel: 'email', status: 'sent' },
        { channel: 'in_app', status: 'sent' },
        { channel: 'push', status: 'sent' },
        { channel: 'webhook', status: 'sent' },
      ]);
    });

    it('reschedules when the due date changes: the old reminder is dismissed, a new one scheduled', async () => {
      const task = await createTask('rita', { title: 'Move', due_date: at(3 * HOUR), reminders: ['PT1H'] });
      const [first] = await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      const moved = await app.call('rita', 'PATCH', `/api/tasks/${task.id}`, { due_date: at(5 * HOUR) });
      assert.equal(moved.status, 200);
      const [dismissed] = await waitForEvents(app, task.id, 'reminder.dismissed', 1);
      assert.equal(dismissed!.data.reminder_id, first!.data.reminder_id);
      assert.equal(dismissed!.data.reason, 'rescheduled');
      const scheduled = await waitForEvents(app, task.id, 'reminder.scheduled', 2);
      const second = scheduled[1]!;
      assert.notEqual(second.data.reminder_id, first!.data.reminder_id);
      assert.equal(second.data.remind_at, new Date(Date.parse(moved.body.due_date) - HOUR).toISOString());
      // A title change keeps the reminder (same instant) and only refreshes its title.
      await app.call('rita', 'PATCH', `/api/tasks/${task.id}`, { title: 'Move house' });
      await waitFor(async () => {
        const r = await app.call('rita', 'GET', `/api/tasks/${task.id}/reminders`);
        return r.body.items.some((x: { title: string }) => x.title === 'Move house');
      });
      const items = (await app.call('rita', 'GET', `/api/tasks/${task.id}/reminders`)).body.items;
      assert.deepEqual(
        items.map((x: { id: string; status: string }) => [x.id, x.status]).sort(),
        [
          [first!.data.reminder_id, 'dismissed'],
          [second.data.reminder_id, 'scheduled'],
        ].sort(),
      );
      assert.deepEqual(typesOf(await reminderEvents(app, task.id)), [
        'reminder.scheduled',
        'reminder.dismissed',
        'reminder.scheduled',
      ]);

      // Out of order: the old task.created (version 1) arrives again under a new event id, e.g. from a DLQ
      // replay after the updates. It is older than what the service applied, so nothing changes.
      const [created] = (await app.proc.runtime.bus.admin.read(TOPICS.taskEvents, { limit: 100_000 }))
        .map((m) => m.event)
        .filter((e) => e.subject === task.id && e.type === 'task.created');
      await app.proc.runtime.bus.publisher.publish([
        { topic: TOPICS.taskEvents, key: 'rita', event: { ...created!, id: uuidv7() } },
      ]);
      await waitCaughtUp(app, GROUPS.reminders, WAIT);
      await outboxRelayed(db); // its effect (none, or reminder events) is in the outbox once consumed
      assert.equal((await reminderEvents(app, task.id)).length, 3, 'the stale event changed nothing');
      const still = (await app.call('rita', 'GET', `/api/tasks/${task.id}/reminders`)).body.items;
      assert.deepEqual(still, items);
    });

    it('dismisses on completion, reschedules the future ones on reopen, dismisses on delete', async () => {
      const task = await createTask('cora', {
        title: 'Call mom',
        due_date: at(3 * HOUR),
        reminders: ['PT1H', 'PT2H'],
      });
      await waitForEvents(app, task.id, 'reminder.scheduled', 2);
      await app.call('cora', 'POST', `/api/tasks/${task.id}/complete`);
      const dismissed = await waitForEvents(app, task.id, 'reminder.dismissed', 2);
      assert.deepEqual(
        dismissed.map((e) => e.data.reason),
        ['task_completed', 'task_completed'],
      );
      await app.call('cora', 'POST', `/api/tasks/${task.id}/reopen`);
      const rescheduled = (await waitForEvents(app, task.id, 'reminder.scheduled', 4)).slice(2);
      assert.deepEqual(
        rescheduled.map((e) => e.data.reason),
        ['rescheduled', 'rescheduled'],
      );
      assert.equal((await app.call('cora', 'DELETE', `/api/tasks/${task.id}`)).status, 204);
      const gone = (await waitForEvents(app, task.id, 'reminder.dismissed', 4)).slice(2);
      assert.deepEqual(
        gone.map((e) => e.data.reason),
        ['task_deleted', 'task_deleted'],
      );
      assert.equal((await app.call('cora', 'GET', `/api/tasks/${task.id}/reminders`)).status, 404);
      clock.advance(3 * HOUR);
      await firedUpToNow();
      assert.equal(
        (await reminderEvents(app, task.id)).filter((e) => e.type === 'reminder.triggered').length,
        0,
      );
    });

    it('never brings a reminder that has not fired forward with a snooze (409), only delays it', async () => {
      const task = await createTask('tess', { title: 'Later', due_date: at(3 * HOUR), reminders: ['PT1H'] });
      const [planned] = await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      const path = `/api/tasks/${task.id}/reminders/${planned!.data.reminder_id}/snooze`;
      const earlier = await app.call('tess', 'POST', path, { duration: 'PT10M' });
      assert.equal(earlier.status, 409, JSON.stringify(earlier.body));
      assert.match(earlier.body.detail, /only delays/);
      const later = await app.call('tess', 'POST', path, { duration: 'PT2H30M' });
      assert.equal(later.status, 200, JSON.stringify(later.body));
      assert.equal(later.body.remind_at, at(2 * HOUR + 30 * MIN));
    });

    it('snoozes a fired reminder (it fires again) and a pending one; dismisses by API', async () => {
      await setPrefs('sam', { email: 'sam@example.com' });
      const task = await createTask('sam', {
        title: 'Stretch',
        due_date: at(2 * HOUR),
        reminders: ['PT1H', 'PT30M'],
      });
      const [first, second] = await waitForEvents(app, task.id, 'reminder.scheduled', 2);
      const base = `/api/tasks/${task.id}/reminders`;
      clock.advance(HOUR + 1_000);
      await waitForEvents(app, task.id, 'reminder.triggered', 1);
      await waitFor(() => mailsTo('sam@example.com').length === 1, WAIT, 'the first email');
      await deliveriesIdle('sam');

      const snoozed = await app.call('sam', 'POST', `${base}/${first!.data.reminder_id}/snooze`, {
        duration: 'PT10M',
      });
      assert.equal(snoozed.status, 200, JSON.stringify(snoozed.body));
      assert.equal(snoozed.body.status, 'scheduled');
      assert.equal(snoozed.body.snoozed, true);
      assert.equal(snoozed.body.remind_at, at(10 * MIN));
      const again = await waitForEvents(app, task.id, 'reminder.scheduled', 3);
      assert.equal(again[2]!.data.reason, 'snoozed');
      assert.equal(again[2]!.data.reminder_id, first!.data.reminder_id);

      // The other (not yet fired) reminder is snoozed past its own time: it does not fire at 30 min before due.
      const later = await app.call('sam', 'POST', `${base}/${second!.data.reminder_id}/snooze`, {
        until: at(40 * MIN),
      });
      assert.equal(later.status, 200);

      clock.advance(10 * MIN + 1_000);
      const fired = await waitForEvents(app, task.id, 'reminder.triggered', 2);
      assert.equal(fired[1]!.data.reminder_id, first!.data.reminder_id);
      assert.equal(fired[1]!.data.reason, 'snoozed');
      await waitFor(() => mailsTo('sam@example.com').length === 2, WAIT, 'the snoozed email');
      await deliveriesIdle('sam'); // written as sent before the clock moves past its claim

      clock.advance(20 * MIN); // past the original 30-min-before-due time, before the snooze
      await firedUpToNow();
      assert.equal(
        (await reminderEvents(app, task.id)).filter((e) => e.type === 'reminder.triggered').length,
        2,
      );

      const dismissed = await app.call('sam', 'POST', `${base}/${second!.data.reminder_id}/dismiss`);
      assert.equal(dismissed.status, 200);
      assert.equal(dismissed.body.status, 'dismissed');
      assert.equal(dismissed.body.dismiss_reason, 'user');
      const [d] = await waitForEvents(app, task.id, 'reminder.dismissed', 1);
      assert.equal(d!.data.reason, 'dismissed_by_user');
      assert.equal(
        (await app.call('sam', 'POST', `${base}/${second!.data.reminder_id}/dismiss`)).status,
        200,
      );
      const conflict = await app.call('sam', 'POST', `${base}/${second!.data.reminder_id}/snooze`, {
        duration: 'PT5M',
      });
      assert.equal(conflict.status, 409);
      assert.equal(conflict.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      const bad = await app.call('sam', 'POST', `${base}/${first!.data.reminder_id}/snooze`, {
        duration: 'soon',
      });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.errors[0].field, 'duration');
      assert.equal((await app.call('bob', 'POST', `${base}/${first!.data.reminder_id}/dismiss`)).status, 404);
      assert.equal((await app.call('sam', 'POST', `${base}/${uuidv7()}/dismiss`)).status, 404);

      clock.advance(HOUR);
      await firedUpToNow();
      assert.equal(
        (await reminderEvents(app, task.id)).filter((e) => e.type === 'reminder.triggered').length,
        2,
      );
    });

    it('marks reminders later than the grace window as missed (scheduler downtime), without notifying', async () => {
      await setPrefs('max', { email: 'max@example.com' });
      const task = await createTask('max', {
        title: 'Water plants',
        due_date: at(2 * HOUR),
        reminders: ['PT1H', 'PT30M'],
      });
      const [early, late] = await waitForEvents(app, task.id, 'reminder.scheduled', 2);
      clock.advance(HOUR + 10 * MIN); // 10 min late: within the 15 min grace window -> fires
      const [fired] = await waitForEvents(app, task.id, 'reminder.triggered', 1);
      assert.equal(fired!.data.reminder_id, early!.data.reminder_id);
      // Its email sent and written as sent before the clock moves: moved past the attempt's claim (120 s) while
      // the answer was on its way, the claim lapsed and the email went out again.
      await waitFor(() => mailsTo('max@example.com').length === 1, WAIT, 'the email of the fired one');
      await deliveriesIdle('max');
      clock.advance(2 * HOUR); // the 30-min reminder is now 1h40 late -> missed
      const [missed] = await waitForEvents(app, task.id, 'reminder.missed', 1);
      assert.equal(missed!.data.reminder_id, late!.data.reminder_id);
      assert.match(missed!.data.reason ?? '', /grace window/);
      await firedUpToNow();
      await waitCaughtUp(app, GROUPS.notifications, WAIT); // it has consumed the missed event too (same partition)
      await deliveriesIdle('max');
      assert.equal(
        (await reminderEvents(app, task.id)).filter((e) => e.type === 'reminder.triggered').length,
        1,
      );
      assert.equal(mailsTo('max@example.com').length, 1);
      assert.equal((await inboxFor('max', task.id)).length, 1);
      const forMissed = await db.query(
        `SELECT 1 FROM notification_deliveries WHERE payload->>'reminder_id' = $1`,
        [late!.data.reminder_id],
      );
      assert.equal(forMissed.rows.length, 0, 'a missed reminder is not delivered');
      const items = (await app.call('max', 'GET', `/api/tasks/${task.id}/reminders`)).body.items;
      assert.deepEqual(items.map((x: { status: string }) => x.status).sort(), ['missed', 'triggered']);
    });

    it('fires a reminder found late after an outage while its task is still ahead; a missed one counts no firing', async () => {
      await setPrefs('otto', { email: 'otto@example.com' });
      const task = await createTask('otto', {
        title: 'Still ahead',
        due_date: at(3 * HOUR),
        reminders: ['PT2H'],
      });
      const [scheduled] = await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      // The scheduler "down" for 1h40: the reminder is 40 min late (grace 15 min), the task due in 20 min.
      clock.advance(HOUR + 40 * MIN);
      const [fired] = await waitForEvents(app, task.id, 'reminder.triggered', 1);
      assert.equal(fired!.data.reminder_id, scheduled!.data.reminder_id);
      await waitFor(() => mailsTo('otto@example.com').length === 1, WAIT, 'its email');
      await deliveriesIdle('otto'); // written as sent before the clock moves past its claim
      const [r] = (await app.call('otto', 'GET', `/api/tasks/${task.id}/reminders`)).body.items;
      assert.deepEqual([r.status, r.fire_count], ['triggered', 1]);
      // Already due: missed, and no firing counted.
      const due = await createTask('otto', {
        title: 'Due by now',
        due_date: at(2 * HOUR),
        reminders: ['PT1H'],
      });
      await waitForEvents(app, due.id, 'reminder.scheduled', 1);
      clock.advance(2 * HOUR + MIN);
      await waitForEvents(app, due.id, 'reminder.missed', 1);
      const [m] = (await app.call('otto', 'GET', `/api/tasks/${due.id}/reminders`)).body.items;
      assert.deepEqual([m.status, m.fire_count], ['missed', 0]);
    });

    it('gives a task due sooner than its nearest offset a reminder at its due time (never none), which fires then', async () => {
      // "Remind me in 40 minutes": the default offsets (1 day and 1 hour before) are both long past.
      const task = await createTask('otto', { title: 'Call back', due_date: at(40 * MIN) });
      const [scheduled] = await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      assert.equal(scheduled!.data.remind_at, task.due_date);
      const listed = await app.call('otto', 'GET', `/api/tasks/${task.id}/reminders`);
      assert.deepEqual(
        listed.body.items.map((r: { remind_at: string; specs: string[] }) => [r.remind_at, r.specs]),
        [[task.due_date, ['P1D', 'PT1H']]],
      );
      // The create's answer said so: the two defaults skipped as past, one at the due time instead.
      assert.deepEqual(task.reminder_plan.scheduled, [
        { remind_at: task.due_date, specs: ['P1D', 'PT1H'], why: 'at_due_instead' },
      ]);
      assert.deepEqual(
        task.reminder_plan.skipped.map((r) => [r.specs, r.why]),
        [
          [['P1D'], 'past'],
          [['PT1H'], 'past'],
        ],
      );
      clock.advance(40 * MIN + 1_000);
      await firedUpToNow();
      await waitForEvents(app, task.id, 'reminder.triggered', 1);
    });

    it('does not schedule reminders already past the grace window when the task is created; fires those within it', async () => {
      const task = await createTask('nina', {
        title: 'Soon',
        due_date: at(20 * MIN),
        reminders: ['P1D', 'PT30M'], // 1 day before is long past; 30 min before was 10 min ago (within grace)
      });
      const [fired] = await waitForEvents(app, task.id, 'reminder.triggered', 1);
      assert.equal(fired!.data.remind_at, new Date(Date.parse(task.due_date) - 30 * MIN).toISOString());
      assert.deepEqual(task.reminder_plan, {
        scheduled: [{ remind_at: fired!.data.remind_at, specs: ['PT30M'], why: 'asked' }],
        skipped: [
          {
            remind_at: new Date(Date.parse(task.due_date) - 24 * 60 * MIN).toISOString(),
            specs: ['P1D'],
            why: 'past',
          },
        ],
      });
      await firedUpToNow();
      assert.deepEqual(typesOf(await reminderEvents(app, task.id)), [
        'reminder.scheduled',
        'reminder.triggered',
      ]);
    });

    it('answers a change that moves the reminders with the new plan, as the reminders target then keeps them', async () => {
      const task = await createTask('pia', { title: 'Move me', due_date: at(3 * 24 * 60 * MIN) });
      await waitForEvents(app, task.id, 'reminder.scheduled', 2);
      const stored = async () =>
        (await app.call('pia', 'GET', `/api/tasks/${task.id}/reminders`)).body.items
          .filter((r: { status: string }) => r.status === 'scheduled')
          .map((r: { remind_at: string; specs: string[] }) => [r.remind_at, r.specs]);
      const planned = (plan: ReminderPlan) => plan.scheduled.map((r) => [r.remind_at, r.specs]);
      // A change of other fields leaves the reminders as they are and says nothing of them.
      const renamed = await app.call('pia', 'PATCH', `/api/tasks/${task.id}`, { title: 'Moved' });
      assert.equal(renamed.status, 200);
      assert.equal(renamed.body.reminder_plan, undefined);
      // Due in 40 minutes now: both default offsets are past, one reminder at the due time instead.
      const due = at(40 * MIN);
      const moved = await app.call('pia', 'PATCH', `/api/tasks/${task.id}`, { due_date: due });
      assert.equal(moved.status, 200, JSON.stringify(moved.body));
      assert.deepEqual(moved.body.reminder_plan.scheduled, [
        { remind_at: due, specs: ['P1D', 'PT1H'], why: 'at_due_instead' },
      ]);
      assert.deepEqual(
        moved.body.reminder_plan.skipped.map((r: { specs: string[]; why: string }) => [r.specs, r.why]),
        [
          [['P1D'], 'past'],
          [['PT1H'], 'past'],
        ],
      );
      await waitFor(
        async () => JSON.stringify(await stored()) === JSON.stringify(planned(moved.body.reminder_plan)),
        WAIT,
        'the reminders target to keep what the answer said',
      );
      // Completing dismisses them all, reopening brings the plan back: each answer says so.
      const done = await app.call('pia', 'POST', `/api/tasks/${task.id}/complete`);
      assert.deepEqual(done.body.reminder_plan, { scheduled: [], skipped: [] });
      await waitFor(async () => (await stored()).length === 0, WAIT, 'reminders dismissed');
      const reopened = await app.call('pia', 'POST', `/api/tasks/${task.id}/reopen`);
      assert.deepEqual(planned(reopened.body.reminder_plan), [[due, ['P1D', 'PT1H']]]);
      await waitFor(
        async () => JSON.stringify(await stored()) === JSON.stringify(planned(reopened.body.reminder_plan)),
        WAIT,
        'the reminder back',
      );
      // The Phase II/III route answers the same.
      const compat = await app.call('pia', 'PUT', `/api/pia/tasks/${task.id}`, { reminders: ['PT10M'] });
      assert.deepEqual(compat.body.reminder_plan, {
        scheduled: [
          { remind_at: new Date(Date.parse(due) - 10 * MIN).toISOString(), specs: ['PT10M'], why: 'asked' },
        ],
        skipped: [],
      });
    });

    it('sends what quiet hours held back once they are turned off, without waiting for their end', async () => {
      await holdEmails('ursula', 6);
      await fireOne('ursula', 'Held back');
      assert.equal(mailsTo('ursula@example.com').length, 0, 'held during quiet hours');
      await setPrefs('ursula', { quiet_hours: null });
      await waitFor(() => mailsTo('ursula@example.com').length === 1, WAIT, 'the email, quiet hours off');
    });

    it("reads quiet hours without a zone, and says the due time, in the user's own zone", async () => {
      const zone = 'America/Los_Angeles';
      const put = await app.call('lena', 'PUT', '/api/me/settings', { timezone: zone });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      const local = (ms: number) =>
        Temporal.Instant.fromEpochMilliseconds(clock.now().getTime() + ms).toZonedDateTimeISO(zone);
      const hhmm = (ms: number) => local(ms).toPlainTime().toString({ smallestUnit: 'minute' });
      // Quiet from an hour ago to six hours ahead on Lena's clock: in UTC (eight hours ahead) not quiet now.
      const prefs = await setPrefs('lena', {
        email: 'lena@example.com',
        quiet_hours: { start: hhmm(-HOUR), end: hhmm(6 * HOUR) },
      });
      assert.equal(prefs.quiet_hours.timezone, null, 'no zone given: the user’s own, whatever it becomes');
      const task = await createTask('lena', {
        title: 'Call mum',
        due_date: at(2 * HOUR),
        reminders: [at(MIN)],
      });
      await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      clock.advance(MIN + 1_000);
      await waitForEvents(app, task.id, 'reminder.triggered', 1);
      const due = local(2 * HOUR - MIN - 1_000);
      const dueText = `Due ${due.toPlainDate()} ${due.toPlainTime().toString({ smallestUnit: 'minute' })} ${zone}`;
      const [inApp] = await waitFor(
        async () => ((await inboxFor('lena', task.id)).length === 1 ? inboxFor('lena', task.id) : false),
        WAIT,
        'the in-app one',
      );
      assert.ok(inApp.body.includes(dueText), `the in-app text: ${inApp.body}`);
      await deliveriesIdle('lena');
      assert.equal(mailsTo('lena@example.com').length, 0, 'held: quiet on her clock');
      await setPrefs('lena', { quiet_hours: null });
      await waitFor(() => mailsTo('lena@example.com').length === 1, WAIT, 'the email, quiet hours off');
      assert.ok(mailsTo('lena@example.com')[0]!.raw.includes(dueText), 'the email text');

      // The other way round: quiet in UTC now, not on Nico's clock (New York): sent at once, not held.
      await app.call('nico', 'PUT', '/api/me/settings', { timezone: 'America/New_York' });
      const utc = (ms: number) => new Date(clock.now().getTime() + ms).toISOString().slice(11, 16);
      await setPrefs('nico', {
        email: 'nico@example.com',
        quiet_hours: { start: utc(-HOUR), end: utc(2 * HOUR) },
      });
      const nicos = await createTask('nico', { title: 'Not quiet here', reminders: [at(MIN)] });
      await waitForEvents(app, nicos.id, 'reminder.scheduled', 1);
      clock.advance(MIN + 1_000);
      await waitFor(() => mailsTo('nico@example.com').length === 1, WAIT, 'the email, not quiet in New York');
    });

    it('defers email and webhook during quiet hours (in-app at once), sends them when they end, drops dismissed ones', async () => {
      const end = await holdEmails('quinn', 2, { webhook_url: `${hooks.url}/quinn`, webhook_secret: SECRET });
      const task = await createTask('quinn', { title: 'Quiet', reminders: [at(MIN), at(2 * MIN)] });
      await waitForEvents(app, task.id, 'reminder.scheduled', 2);
      clock.advance(2 * MIN + 1_000);
      const [, second] = await waitForEvents(app, task.id, 'reminder.triggered', 2);
      await waitFor(
        async () => (await inboxFor('quinn', task.id)).length === 2,
        WAIT,
        'the in-app notifications',
      );
      await deliveriesIdle('quinn'); // the email and webhook wait for the end of the quiet hours
      assert.equal(mailsTo('quinn@example.com').length, 0, 'no email during quiet hours');
      assert.equal(hooksAt('/quinn').length, 0, 'no webhook during quiet hours');
      // The user dismisses the second one: its deferred email and webhook are dropped.
      const dismissed = await app.call(
        'quinn',
        'POST',
        `/api/tasks/${task.id}/reminders/${second!.data.reminder_id}/dismiss`,
      );
      assert.equal(dismissed.status, 200);
      await waitFor(
        async () =>
          (
            await db.query(
              `SELECT 1 FROM notification_deliveries WHERE payload->>'reminder_id' = $1 AND status = 'skipped'`,
              [second!.data.reminder_id],
            )
          ).rows.length === 2,
        WAIT,
        'the deferred deliveries of the dismissed reminder to be dropped',
      );
      clock.set(new Date(Math.floor(end.getTime() / MIN) * MIN + 1_000));
      await waitFor(() => mailsTo('quinn@example.com').length === 1, WAIT, 'the deferred email');
      await waitFor(() => hooksAt('/quinn').length === 1, WAIT, 'the deferred webhook');
      await deliveriesIdle('quinn');
      assert.equal(mailsTo('quinn@example.com').length, 1);
      assert.equal(hooksAt('/quinn').length, 1);
      assert.notEqual(JSON.parse(hooksAt('/quinn')[0]!.body).data.reminder_id, second!.data.reminder_id);
    });

    it('drops what quiet hours hold of a reminder once its task is completed, deleted or moved, and sends one message for a snoozed reminder that fired again', async () => {
      const end = await holdEmails('holly', 2);
      const due = at(HOUR);
      const done = await createTask('holly', {
        title: 'Completed while held',
        due_date: due,
        reminders: [at(MIN)],
      });
      const gone = await createTask('holly', {
        title: 'Deleted while held',
        due_date: due,
        reminders: [at(MIN)],
      });
      const moved = await createTask('holly', {
        title: 'Moved while held',
        due_date: due,
        reminders: ['PT59M'],
      });
      const snoozed = await createTask('holly', {
        title: 'Snoozed while held',
        due_date: due,
        reminders: [at(MIN)],
      });
      clock.advance(MIN + 1_000);
      await firedUpToNow();
      const fired = new Map<string, ReminderCloudEvent>();
      for (const t of [done, gone, moved, snoozed])
        fired.set(t.id, (await waitForEvents(app, t.id, 'reminder.triggered', 1))[0]!);
      await waitFor(async () => (await inboxFor('holly', snoozed.id)).length === 1, WAIT, 'in-app at once');
      await deliveriesIdle('holly');
      assert.equal(mailsTo('holly@example.com').length, 0, 'every email held by the quiet hours');

      assert.equal((await app.call('holly', 'POST', `/api/tasks/${done.id}/complete`)).status, 200);
      assert.equal((await app.call('holly', 'DELETE', `/api/tasks/${gone.id}`)).status, 204);
      const later = new Date(Date.parse(due) + 3 * 24 * HOUR).toISOString();
      assert.equal(
        (await app.call('holly', 'PATCH', `/api/tasks/${moved.id}`, { due_date: later })).status,
        200,
      );
      // The snoozed one fires again, still in quiet hours: its earlier held email is replaced, not added to.
      const rid = fired.get(snoozed.id)!.data.reminder_id;
      const snooze = await app.call('holly', 'POST', `/api/tasks/${snoozed.id}/reminders/${rid}/snooze`, {
        duration: 'PT5M',
      });
      assert.equal(snooze.status, 200, JSON.stringify(snooze.body));
      clock.advance(5 * MIN + 1_000);
      await firedUpToNow();
      await waitForEvents(app, snoozed.id, 'reminder.triggered', 2);
      const skipped = (taskId: string) =>
        db.query<{ last_error: string }>(
          `SELECT last_error FROM notification_deliveries
            WHERE payload->>'task_id' = $1 AND channel = 'email' AND status = 'skipped'`,
          [taskId],
        );
      for (const [t, why] of [
        [done, 'the task was completed'],
        [gone, 'the task was deleted'],
        [moved, "the task's due date or reminders changed"],
        [snoozed, 'the reminder fired again (snoozed) before this was sent'],
      ] as const)
        await waitFor(
          async () => (await skipped(t.id)).rows.map((r) => r.last_error).join() === why,
          WAIT,
          `the held email of "${t.id}" dropped: ${why}`,
        );
      // The first firing handled again after the second (as a DLQ replay of it would be: a new id here, the
      // ledger has the original's): out of date, it is recorded as skipped and the second's email stays held.
      const first = fired.get(snoozed.id)!;
      await app.proc.runtime.bus.publisher.publish([
        { topic: TOPICS.reminders, key: first.data.user_id, event: { ...first, id: uuidv7() } },
      ]);
      await waitCaughtUp(app, GROUPS.notifications, WAIT);
      assert.deepEqual(
        (
          await db.query<{ status: string; last_error: string | null }>(
            `SELECT status, last_error FROM notification_deliveries
              WHERE payload->>'task_id' = $1 AND channel = 'email' ORDER BY id`,
            [snoozed.id],
          )
        ).rows.map((r) => [r.status, r.last_error]),
        [
          ['skipped', 'the reminder fired again (snoozed) before this was sent'],
          ['pending', null],
          ['skipped', 'a later firing of the reminder was handled first'],
        ],
      );
      // Its dismissal names the firing it retires (the notifications target drops what that firing holds).
      const retired = (await waitForEvents(app, done.id, 'reminder.dismissed', 1))[0]!;
      assert.equal(retired.data.triggered_at, fired.get(done.id)!.data.triggered_at);
      // The fired reminder of the completed task stays fired, marked as no longer applying: no snooze.
      const reminders = (await app.call('holly', 'GET', `/api/tasks/${done.id}/reminders`)).body.items;
      assert.deepEqual(
        reminders.map((r: { status: string; dismiss_reason: string | null }) => [r.status, r.dismiss_reason]),
        [['triggered', 'task_completed']],
      );
      const late = await app.call(
        'holly',
        'POST',
        `/api/tasks/${done.id}/reminders/${fired.get(done.id)!.data.reminder_id}/snooze`,
        { duration: 'PT5M' },
      );
      assert.equal(late.status, 409);
      clock.set(new Date(Math.floor(end.getTime() / MIN) * MIN + 1_000));
      await waitFor(() => mailsTo('holly@example.com').length >= 1, WAIT, 'the held emails that still apply');
      await firedUpToNow();
      await deliveriesIdle('holly');
      assert.deepEqual(
        mailsTo('holly@example.com').map((m) => /^Subject: Reminder: (.*)$/m.exec(m.raw)?.[1]?.trim()),
        ['Snoozed while held'],
        'one email, for the only task still as it was when its reminder fired',
      );
    });

    it("drops what a firing holds when a dismissal stamped a little before it names it (two processes' clocks)", async () => {
      await holdEmails('ida', 2);
      const task = await createTask('ida', {
        title: 'Held, then done',
        due_date: at(HOUR),
        reminders: [at(MIN)],
      });
      clock.advance(MIN + 1_000);
      await firedUpToNow();
      const fired = (await waitForEvents(app, task.id, 'reminder.triggered', 1))[0]!;
      await deliveriesIdle('ida');
      // The task completed on another process whose clock is a second behind the scheduler's: its dismissal
      // is stamped before the firing it retires, and names that firing.
      const dismissal = {
        ...fired,
        id: uuidv7(),
        type: 'reminder.dismissed',
        time: new Date(Date.parse(fired.data.triggered_at!) - 1_000).toISOString(),
        data: { ...fired.data, reason: 'task_completed' },
      };
      await app.proc.runtime.bus.publisher.publish([
        { topic: TOPICS.reminders, key: fired.data.user_id, event: dismissal as ReminderCloudEvent },
      ]);
      await waitFor(
        async () =>
          (
            await db.query(
              `SELECT 1 FROM notification_deliveries
                WHERE payload->>'task_id' = $1 AND channel = 'email' AND status = 'skipped'`,
              [task.id],
            )
          ).rows.length === 1,
        WAIT,
        'the held email dropped',
      );
    });

    it("keeps a task's reminders through an edit of other fields after the user changed their defaults; a new due date takes the new defaults", async () => {
      const task = await createTask('erin', { title: 'Follows the defaults', due_date: at(3 * 24 * HOUR) });
      await waitForEvents(app, task.id, 'reminder.scheduled', 2); // P1D and PT1H, the built-in defaults
      const live = async () =>
        (await app.call('erin', 'GET', `/api/tasks/${task.id}/reminders`)).body.items
          .filter((r: { status: string }) => r.status === 'scheduled')
          .map((r: { specs: string[] }) => r.specs.join())
          .sort();
      assert.deepEqual(await live(), ['P1D', 'PT1H']);
      const settings = await app.call('erin', 'PUT', '/api/me/settings', { default_reminders: ['PT15M'] });
      assert.equal(settings.status, 200);
      const renamed = await app.call('erin', 'PATCH', `/api/tasks/${task.id}`, {
        title: 'Renamed',
        priority: 'high',
      });
      assert.equal(renamed.status, 200);
      assert.equal(renamed.body.reminder_plan, undefined, 'a change of other fields answers no plan');
      // The reminders target has handled the edit once its reminders carry the new title.
      await waitFor(
        async () =>
          (await app.call('erin', 'GET', `/api/tasks/${task.id}/reminders`)).body.items.every(
            (r: { title: string }) => r.title === 'Renamed',
          ),
        WAIT,
        'the edit handled by the reminders target',
      );
      assert.deepEqual(await live(), ['P1D', 'PT1H'], 'and it moved no reminder');
      const moved = await app.call('erin', 'PATCH', `/api/tasks/${task.id}`, { due_date: at(4 * 24 * HOUR) });
      assert.deepEqual(
        moved.body.reminder_plan.scheduled.map((p: { specs: string[] }) => p.specs.join()),
        ['PT15M'],
      );
      await waitFor(
        async () => (await live()).join() === 'PT15M',
        WAIT,
        'the new defaults at the new due date',
      );
    });

    it('retries a push only to the device that failed: the others get it once', async () => {
      const ok = pushService.subscribe('wendy-phone');
      const broken = pushService.subscribe('wendy-laptop', 500);
      for (const s of [ok, broken])
        assert.equal(
          (await app.call('wendy', 'POST', '/api/notifications/push-subscriptions', s)).status,
          201,
        );
      const task = await createTask('wendy', { title: 'Two devices', reminders: [at(MIN)] });
      await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      const calls = (name: string) => pushService.calls.filter((c) => c.path === `/push/${name}`).length;
      clock.advance(MIN + 1_000);
      await waitFor(() => calls('wendy-laptop') === 1 && calls('wendy-phone') === 1, WAIT, 'first attempts');
      for (const [advance, attempts] of [
        [1_000, 2],
        [2_000, 3],
      ] as const) {
        // The backoff counts from the failure: advancing the clock before it is written moved the retry past it.
        await deliveriesIdle('wendy');
        clock.advance(advance);
        await waitFor(() => calls('wendy-laptop') === attempts, WAIT, `attempt ${attempts} to the laptop`);
      }
      await deliveriesIdle('wendy');
      clock.advance(HOUR);
      await deliveriesIdle('wendy');
      assert.equal(calls('wendy-phone'), 1, 'the phone got it once, not once per retry');
      assert.equal(calls('wendy-laptop'), 3, 'the laptop was retried up to the bound');
    });

    it('retries a failing webhook with backoff and marks it dead after N attempts; other channels are not held back', async () => {
      const deadBefore =
        (await app.proc.runtime.metrics.of(notificationsManifest).dead.get()).values.find(
          (v) => v.labels.channel === 'webhook',
        )?.value ?? 0;
      await setPrefs('fay', {
        email: 'fay@example.com',
        webhook_url: `${hooks.url}/fail/fay`,
        webhook_secret: SECRET,
      });
      await setPrefs('flo', { webhook_url: `${hooks.url}/flaky/flo`, webhook_secret: SECRET });
      const failing = await createTask('fay', { title: 'Fails', reminders: [at(MIN)] });
      const flaky = await createTask('flo', { title: 'Flaky', reminders: [at(MIN)] });
      await waitForEvents(app, failing.id, 'reminder.scheduled', 1);
      await waitForEvents(app, flaky.id, 'reminder.scheduled', 1);
      clock.advance(MIN + 1_000);
      await waitFor(
        () => mailsTo('fay@example.com').length === 1,
        WAIT,
        'the email despite the failing webhook',
      );
      await waitFor(
        () => hooksAt('/fail/fay').length === 1 && hooksAt('/flaky/flo').length === 1,
        WAIT,
        'first attempts',
      );
      // The failed webhooks wait for their backoff, counted from their failures: nothing due, nothing in flight.
      await deliveriesIdle('fay');
      await deliveriesIdle('flo');
      assert.equal(hooksAt('/fail/fay').length, 1, 'no retry before the backoff delay');
      clock.advance(1_000); // retry 1 after 0.5-1 s
      await waitFor(
        () => hooksAt('/fail/fay').length === 2 && hooksAt('/flaky/flo').length === 2,
        WAIT,
        'second attempts',
      );
      await deliveriesIdle('fay');
      await deliveriesIdle('flo');
      clock.advance(2_000); // retry 2 after 1-2 s
      await waitFor(
        () => hooksAt('/fail/fay').length === 3 && hooksAt('/flaky/flo').length === 3,
        WAIT,
        'third attempts',
      );
      // The third answers written first: an hour past their claims, they were claimed again (a fourth attempt).
      await deliveriesIdle('fay');
      await deliveriesIdle('flo');
      clock.advance(HOUR);
      await deliveriesIdle('fay');
      await deliveriesIdle('flo');
      assert.equal(hooksAt('/fail/fay').length, 3, 'given up after 3 attempts');
      assert.equal(hooksAt('/flaky/flo').length, 3);
      assert.deepEqual(
        hooksAt('/flaky/flo').map((c) => c.status),
        [503, 503, 200],
      );
      const ids = new Set(hooksAt('/flaky/flo').map((c) => c.headers['x-taskflow-delivery']));
      assert.equal(ids.size, 1, 'retries carry the same delivery id');
      const rows = await db.query<{
        user_id: string;
        status: string;
        attempts: number;
        last_error: string | null;
      }>(
        `SELECT user_id, status, attempts, last_error FROM notification_deliveries
          WHERE channel = 'webhook' AND user_id IN ('fay', 'flo') ORDER BY user_id`,
      );
      assert.deepEqual(
        rows.rows.map((r) => [r.user_id, r.status, r.attempts]),
        [
          ['fay', 'dead', 3],
          ['flo', 'sent', 3],
        ],
      );
      assert.match(rows.rows[0]!.last_error ?? '', /500/);
      const deadAfter = (await app.proc.runtime.metrics.of(notificationsManifest).dead.get()).values.find(
        (v) => v.labels.channel === 'webhook',
      )?.value;
      assert.equal(deadAfter, deadBefore + 1);
    });

    it('lists a user’s deliveries with why one died, and sends a dead one again once the user fixed the cause', async () => {
      await setPrefs('dora', { webhook_url: `${hooks.url}/fail/dora`, webhook_secret: SECRET });
      const task = await createTask('dora', { title: 'Dead letter', reminders: [at(MIN)] });
      await waitForEvents(app, task.id, 'reminder.scheduled', 1);
      clock.advance(MIN + 1_000);
      for (let attempt = 1; attempt <= 3; attempt++) {
        await waitFor(() => hooksAt('/fail/dora').length === attempt, WAIT, `attempt ${attempt}`);
        await deliveriesIdle('dora'); // the failure recorded: its backoff counts from it
        clock.advance(2_000);
      }
      await deliveriesIdle('dora');
      const dead = await app.call('dora', 'GET', '/api/notifications/deliveries?status=dead');
      assert.equal(dead.status, 200, JSON.stringify(dead.body));
      assert.equal(dead.body.items.length, 1);
      const [d] = dead.body.items;
      assert.deepEqual(
        [d.channel, d.status, d.attempts, d.task_id, d.title, d.next_attempt_at],
        ['webhook', 'dead', 3, task.id, 'Dead letter', null],
      );
      assert.match(d.last_error, /500/);
      const all = await app.call('dora', 'GET', '/api/notifications/deliveries?channel=in_app');
      assert.deepEqual(
        all.body.items.map((x: { status: string }) => x.status),
        ['sent'],
      );
      // Another user sees none of it and cannot retry it; a bad filter is named.
      assert.deepEqual(
        (await app.call('bob', 'GET', '/api/notifications/deliveries?status=dead')).body.items,
        [],
      );
      assert.equal(
        (await app.call('bob', 'POST', `/api/notifications/deliveries/${d.id}/retry`)).status,
        404,
      );
      const bad = await app.call('dora', 'GET', '/api/notifications/deliveries?status=lost&limit=0');
      assert.equal(bad.status, 400);
      assert.deepEqual(bad.body.errors.map((e: { field: string }) => e.field).sort(), ['limit', 'status']);

      await setPrefs('dora', { webhook_url: `${hooks.url}/dora` });
      const retried = await app.call('dora', 'POST', `/api/notifications/deliveries/${d.id}/retry`);
      assert.equal(retried.status, 200, JSON.stringify(retried.body));
      assert.deepEqual([retried.body.status, retried.body.attempts], ['pending', 0]);
      await waitFor(() => hooksAt('/dora').length === 1, WAIT, 'the retried webhook');
      await deliveriesIdle('dora');
      const sent = await app.call('dora', 'GET', `/api/notifications/deliveries?channel=webhook`);
      assert.deepEqual(
        sent.body.items.map((x: { id: string; status: string }) => [x.id, x.status]),
        [[d.id, 'sent']],
      );
      const again = await app.call('dora', 'POST', `/api/notifications/deliveries/${d.id}/retry`);
      assert.equal(again.status, 409, 'only a dead one');
      assert.equal(hooksAt('/dora').length, 1);
      assert.equal(
        sent.body.items[0].last_error,
        null,
        'sent: the error of an earlier attempt is not its state',
      );

      // A dead delivery of a task deleted since: a retry would send a reminder of a task that is gone.
      await setPrefs('dora', { webhook_url: `${hooks.url}/fail/dora` });
      const gone = await createTask('dora', { title: 'Deleted after it died', reminders: [at(MIN)] });
      await waitForEvents(app, gone.id, 'reminder.scheduled', 1);
      clock.advance(MIN + 1_000);
      for (let attempt = 1; attempt <= 3; attempt++) {
        await waitFor(() => hooksAt('/fail/dora').length === 3 + attempt, WAIT, `attempt ${attempt}`);
        await deliveriesIdle('dora'); // the backoff counts from the failure written, not from the call seen
        clock.advance(2_000);
      }
      await deliveriesIdle('dora');
      const [goneDead] = (await app.call('dora', 'GET', '/api/notifications/deliveries?status=dead')).body
        .items;
      assert.equal(goneDead.task_id, gone.id);
      assert.equal((await app.call('dora', 'DELETE', `/api/tasks/${gone.id}`)).status, 204);
      await waitFor(
        async () =>
          (await app.call('dora', 'GET', '/api/notifications/deliveries?status=dead')).body.items.length ===
          0,
        WAIT,
        'the dead delivery of the deleted task dropped',
      );
      const refused = await app.call('dora', 'POST', `/api/notifications/deliveries/${goneDead.id}/retry`);
      assert.equal(refused.status, 409);
    });

    it('mails reminders only to an address confirmed with the code mailed to it', async () => {
      const confirm = (code: unknown) =>
        app.call('cora', 'POST', '/api/notifications/email/confirm', { code });
      const askCode = () => app.call('cora', 'POST', '/api/notifications/email/confirmation-code');
      const codeSentAt = clock.now();
      const put = await app.call('cora', 'PUT', '/api/notifications/preferences', {
        email: 'cora@example.com',
      });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      assert.equal(put.body.email_confirmed, false);
      assert.deepEqual(put.body.email_confirmation, { sent_to: 'cora@example.com', expires_at: at(HOUR) });
      const [first] = codesTo('cora@example.com');
      assert.ok(first, 'the code is mailed to the address');
      const codeMail = smtp.mails.find((m) => m.raw.includes(`${first} is your code`))!;
      assert.doesNotMatch(codeMail.raw, /cora(?!@example\.com)/, 'nothing the user typed but the address');

      // A reminder fired before the address is confirmed: in the inbox, not mailed.
      await fireOne('cora', 'Not mailed');
      assert.equal(mailsTo('cora@example.com').length, 0, 'no reminder to an unconfirmed address');
      const queued = await app.call('cora', 'GET', '/api/notifications/deliveries?channel=email');
      assert.deepEqual(queued.body.items, [], 'no email delivery queued');

      // Wrong codes count: the fifth voids the code, the right one then confirms nothing.
      const wrong = first === '000000' ? '000001' : '000000';
      for (let left = 4; left >= 0; left--) {
        const r = await confirm(wrong);
        assert.equal(r.status, 400, JSON.stringify(r.body));
        assert.match(r.body.errors[0].message, left ? new RegExp(`${left} more tries`) : /now void/);
      }
      const voided = await confirm(first);
      assert.equal(voided.status, 409, JSON.stringify(voided.body));
      assert.match(voided.body.detail, /no code is waiting/);
      for (const bad of ['12345', 123456, null, '１２３４５６'])
        assert.equal((await confirm(bad)).status, 400, `code ${JSON.stringify(bad)}`);
      const unknownField = await app.call('cora', 'POST', '/api/notifications/email/confirm', {
        code: first,
        email: 'x@example.com',
      });
      assert.equal(unknownField.status, 400);

      // A code lasts an hour.
      const second = await askCode();
      assert.equal(second.status, 200, JSON.stringify(second.body));
      assert.equal(second.body.sent_to, 'cora@example.com');
      clock.advance(HOUR);
      const expired = await confirm(codesTo('cora@example.com').at(-1));
      assert.equal(expired.status, 400, JSON.stringify(expired.body));
      assert.match(expired.body.errors[0].message, /expired/);

      // Five codes in 24 hours; the sixth is refused until the first is a day old.
      for (let n = 3; n <= 5; n++) assert.equal((await askCode()).status, 200, `code ${n}`);
      const limited = await askCode();
      assert.equal(limited.status, 429, JSON.stringify(limited.body));
      assert.equal(
        Number(limited.headers.get('retry-after')),
        Math.ceil((codeSentAt.getTime() + 24 * HOUR - clock.now().getTime()) / 1000),
      );
      const codes = codesTo('cora@example.com');
      assert.equal(codes.length, 5);
      // Only the newest code confirms.
      if (codes[3] !== codes[4]) assert.equal((await confirm(codes[3])).status, 400, 'an older code');
      const confirmed = await confirm(codes[4]);
      assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
      assert.equal(confirmed.body.email_confirmed, true);
      assert.equal((await confirm(codes[4])).status, 200, 'confirming again (a lost answer) is fine');
      const already = await askCode();
      assert.equal(already.status, 409);
      assert.match(already.body.detail, /confirmed already/);
      assert.equal(
        (await app.call('cora', 'GET', '/api/notifications/preferences')).body.email_confirmed,
        true,
      );

      // Confirmed: reminders are mailed. One is held by quiet hours, then the address changes before it is sent.
      const mailed = await createTask('cora', { title: 'Mailed', reminders: [at(MIN)] });
      await waitForEvents(app, mailed.id, 'reminder.scheduled', 1);
      clock.advance(MIN + 1_000);
      await waitFor(() => mailsTo('cora@example.com').length === 1, WAIT, 'the reminder, confirmed');
      const hhmm = (ms: number) => new Date(clock.now().getTime() + ms).toISOString().slice(11, 16);
      await setPrefs('cora', { quiet_hours: { start: hhmm(-HOUR), end: hhmm(2 * HOUR), timezone: 'UTC' } });
      const held = await fireOne('cora', 'Held, then readdressed');
      // Another address, the day's codes used up: saved unconfirmed, and the answer says why no code went.
      const moved = await app.call('cora', 'PUT', '/api/notifications/preferences', {
        email: 'someone-else@example.com',
        quiet_hours: null,
      });
      assert.equal(moved.status, 200, JSON.stringify(moved.body));
      assert.equal(moved.body.email_confirmed, false);
      assert.match(moved.body.email_confirmation.not_sent, /codes were mailed for you in the last 24 hours/);
      const skipped = await waitFor(
        async () => {
          const r = await app.call('cora', 'GET', '/api/notifications/deliveries?channel=email');
          const d = r.body.items.find((x: { task_id: string }) => x.task_id === held.id);
          return d?.status === 'skipped' ? d : undefined;
        },
        WAIT,
        'the held email skipped',
      );
      assert.equal(skipped.last_error, 'the email address is not confirmed');
      assert.equal(mailsTo('someone-else@example.com').length, 0);
      assert.equal(mailsTo('cora@example.com').length, 1);

      // A day after the first code, a new one may be mailed, to the new address.
      clock.set(new Date(codeSentAt.getTime() + 24 * HOUR + 1_000));
      const next = await askCode();
      assert.equal(next.status, 200, JSON.stringify(next.body));
      assert.equal(next.body.sent_to, 'someone-else@example.com');
      assert.equal(codesTo('someone-else@example.com').length, 1);
    });

    it('counts no code the mail server refused, keeping the one before, and mails at most five to one address', async () => {
      const askCode = (user: string) => app.call(user, 'POST', '/api/notifications/email/confirmation-code');
      const put = (user: string, email: string) =>
        app.call(user, 'PUT', '/api/notifications/preferences', { email });
      // A refused mail: 503 with Retry-After, and the code mailed before still confirms.
      assert.equal((await put('eve', 'eve@example.com')).body.email_confirmation.sent_to, 'eve@example.com');
      smtp.refused.add('eve@example.com');
      const refused = await askCode('eve');
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      assert.equal(refused.headers.get('retry-after'), '60');
      smtp.refused.delete('eve@example.com');
      const [evesCode] = codesTo('eve@example.com');
      const confirmed = await app.call('eve', 'POST', '/api/notifications/email/confirm', { code: evesCode });
      assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));

      // Five codes mailed for dan (a refused one between them not counted), then 429.
      const shared = 'shared@example.com';
      assert.equal((await put('dan', shared)).body.email_confirmation.sent_to, shared);
      assert.equal((await askCode('dan')).status, 200);
      smtp.refused.add(shared);
      assert.equal((await askCode('dan')).status, 503);
      smtp.refused.delete(shared);
      for (let n = 3; n <= 5; n++) assert.equal((await askCode('dan')).status, 200, `code ${n}`);
      const limited = await askCode('dan');
      assert.equal(limited.status, 429, JSON.stringify(limited.body));
      assert.match(limited.body.detail, /for you/);
      assert.equal(codesTo(shared).length, 5);
      // Another account naming the same mailbox (another case, a +tag): saved, and no sixth code to it.
      const other = await put('mallory', 'Shared+again@example.com');
      assert.equal(other.status, 200, JSON.stringify(other.body));
      assert.match(other.body.email_confirmation.not_sent, /to this address in the last 24 hours/);
      assert.equal((await askCode('mallory')).status, 429);
      assert.equal(codesTo(shared).length + codesTo('Shared+again@example.com').length, 5);
    });

    it('validates preferences and push subscriptions, and requires a token', async () => {
      const bad = await app.call('vic', 'PUT', '/api/notifications/preferences', {
        email: 'nope',
        quiet_hours: { start: '22:00', end: '25:00' },
      });
      assert.equal(bad.status, 400);
      assert.deepEqual(bad.body.errors.map((e: { field: string }) => e.field).sort(), [
        'email',
        'quiet_hours.end',
      ]);
      const generated = await app.call('vic', 'PUT', '/api/notifications/preferences', {
        webhook_url: `${hooks.url}/vic`,
      });
      assert.equal(generated.status, 200);
      assert.match(generated.body.webhook_secret, /^whsec_/);
      assert.equal(
        (await app.call('vic', 'GET', '/api/notifications/preferences')).body.webhook_secret,
        undefined,
      );
      const sub = await app.call('vic', 'POST', '/api/notifications/push-subscriptions', {
        endpoint: 'http://x',
      });
      assert.equal(sub.status, 400);
      assert.equal((await app.call(null, 'GET', '/api/notifications')).status, 401);
      const misspelt = await app.call('vic', 'GET', '/api/notifications?unread_only=true');
      assert.equal(misspelt.status, 400);
      assert.deepEqual(misspelt.body.errors, [
        { field: 'unread_only', message: 'unknown query parameter; allowed: unread, limit' },
      ]);
      const key = await app.call('vic', 'GET', '/api/notifications/vapid-public-key');
      assert.equal(key.body.public_key, vapid.publicKey);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// The scheduler alone, over each database backend.

/** Inserts `n` scheduled reminders for `users` due at `remindAt`, as the consumer would have. */
async function seedReminders(db: Db, n: number, remindAt: string, users = 10): Promise<string[]> {
  const ids = Array.from({ length: n }, () => uuidv7());
  const tasks = ids.map(() => uuidv7());
  await db.query(
    `INSERT INTO reminder_schedule (id, task_id, user_id, title, specs, due_at, planned_at, remind_at, status)
     SELECT id, task_id, user_id, 'Task ' || ord, '["PT1H"]', $4::timestamptz + interval '1 hour', $4, $4, 'scheduled'
       FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY AS t(id, task_id, user_id, ord)`,
    [ids, tasks, ids.map((_, i) => `user-${i % users}`), remindAt],
  );
  return ids;
}

/** The reminder events written for `ids` (outbox or embedded log), in commit order. */
async function outboxReminders(db: Db, ids: readonly string[]) {
  const wanted = new Set(ids);
  return (await writtenEvents(db))
    .filter((e) => e.event_type.startsWith('reminder.') && wanted.has(e.event.data.reminder_id))
    .map((e) => ({ event_type: e.event_type, event: e.event as ReminderCloudEvent }));
}

for (const backend of backends) {
  describe(`reminder scheduler on ${backend.name}`, () => {
    let db: Db;
    let url: string;
    let drop: () => Promise<void>;
    before(async () => {
      ({ db, url, drop } = await backend.fresh());
    });
    after(async () => {
      await drop?.();
    });
    const schedulerApp = (
      d: Db,
      clock: ManualClock,
      opts: Parameters<typeof createRemindersTarget>[0] = {},
    ) => startApp(d, { clock, env: busEnv(), targets: [createRemindersTarget({ tickMs: 10, ...opts })] });

    // On PostgreSQL the two instances are two pools (two "processes") and must contend for real: their first
    // claims are held open until both hold one at the same time, which SKIP LOCKED allows (the second skips
    // the rows the first locked) and a blocking claim does not. PGlite has one connection: transactions
    // take turns, so there it shows exactly-once but cannot show contention.
    const contend = backend.name === 'postgres';
    it(`two scheduler instances fire each of 1,000 reminders due at the same second exactly once${contend ? ', claiming disjoint batches at the same time' : ''}`, async () => {
      const db2 = contend ? await openDb(url) : db;
      const clock = new ManualClock(START);
      const schedulers: ReminderScheduler[] = [];
      /** The claims in progress, per instance; the first pair of claims held at the same time. */
      const holding = new Map<string, readonly string[]>();
      let overlap: (readonly string[])[] | undefined;
      const waited = new Set<string>();
      const afterClaim = (name: string) => async (ids: readonly string[]) => {
        holding.set(name, ids);
        try {
          // Each instance's first claim waits for the other one to hold a claim too. Bounded: when a claim
          // blocks the other instance, this gives up after 5 s and the test fails below.
          const deadline = Date.now() + (waited.has(name) ? 0 : 5_000);
          waited.add(name);
          while (!overlap && holding.size < 2 && Date.now() < deadline)
            await new Promise((r) => setTimeout(r, 2));
          if (!overlap && holding.size === 2) overlap = [...holding.values()];
        } finally {
          holding.delete(name);
        }
      };
      const instance = (d: Db, name: string) =>
        schedulerApp(d, clock, {
          tickMs: 5,
          batchSize: 100,
          onScheduler: (s) => schedulers.push(s),
          ...(contend ? { afterClaim: afterClaim(name) } : {}),
        });
      const [a, b] = [await instance(db, 'A'), await instance(db2, 'B')];
      let stopped = false;
      const stop = async () => {
        if (stopped) return;
        stopped = true;
        await a.stop();
        await b.stop();
      };
      try {
        const due = new Date(Date.parse(START) + HOUR).toISOString();
        const ids = await seedReminders(db, 1000, due);
        // Before the due time a tick of either instance claims nothing.
        for (const s of schedulers) assert.deepEqual(await s.tick(), { triggered: 0, missed: 0 });
        assert.equal((await outboxReminders(db, ids)).length, 0);
        clock.set(due);
        await waitFor(
          async () => (await outboxReminders(db, ids)).length >= 1000,
          30_000,
          '1,000 triggered events',
        );
        // Stopped schedulers have finished their last claim: nothing can be written after this.
        await stop();
        const events = await outboxReminders(db, ids);
        assert.equal(events.length, 1000);
        assert.ok(events.every((e) => e.event_type === 'reminder.triggered'));
        assert.equal(new Set(events.map((e) => e.event.data.reminder_id)).size, 1000);
        const rows = await db.query<{ status: string; fire_count: number; n: string }>(
          `SELECT status, fire_count, count(*)::text AS n FROM reminder_schedule WHERE id = ANY($1::uuid[]) GROUP BY 1, 2`,
          [ids],
        );
        assert.deepEqual(rows.rows, [{ status: 'triggered', fire_count: 1, n: '1000' }]);
        const [s1, s2] = schedulers;
        assert.equal(s1!.fired.triggered + s2!.fired.triggered, 1000);
        console.log(
          `# ${backend.name}: instance A fired ${s1!.fired.triggered}, instance B ${s2!.fired.triggered}`,
        );
        if (contend) {
          assert.ok(overlap, 'the two instances never held a claim at the same time');
          const [x, y] = overlap;
          assert.equal(x!.length + y!.length, 200, 'two full batches claimed at once');
          assert.equal(new Set([...x!, ...y!]).size, 200, 'disjoint claims');
          assert.ok(s1!.fired.triggered > 0 && s2!.fired.triggered > 0, 'both instances fired a share');
        }
      } finally {
        await stop();
        if (db2 !== db) await db2.close();
      }
    });

    it('a crash between claim and publish rolls the claim back; the restarted scheduler fires once', async () => {
      const clock = new ManualClock(START);
      const due = new Date(Date.parse(START) + MIN).toISOString();
      const ids = await seedReminders(db, 3, due, 2);
      let crashes = 0;
      const crashing = await schedulerApp(db, clock, {
        afterClaim: () => {
          crashes++;
          throw new Error('simulated crash after the claim, before the events are written');
        },
      });
      clock.set(due);
      await waitFor(() => crashes > 0, WAIT, 'the claim');
      await crashing.stop();
      assert.equal((await outboxReminders(db, ids)).length, 0, 'nothing was published');
      const st = await db.query<{ status: string; n: string }>(
        `SELECT status, count(*)::text AS n FROM reminder_schedule WHERE id = ANY($1::uuid[]) GROUP BY 1`,
        [ids],
      );
      assert.deepEqual(st.rows, [{ status: 'scheduled', n: '3' }], 'the claim was rolled back');

      const restarted = await schedulerApp(db, clock);
      try {
        await waitFor(async () => (await outboxReminders(db, ids)).length >= 3, WAIT, 'the triggered events');
        await restarted.stop(); // a stopped scheduler has finished its last claim
        const events = await outboxReminders(db, ids);
        assert.deepEqual(
          events.map((e) => e.event_type),
          Array(3).fill('reminder.triggered'),
        );
        assert.deepEqual(events.map((e) => e.event.data.reminder_id).sort(), [...ids].sort());
      } finally {
        await restarted.stop();
      }
    });

    it('after downtime, reminders older than the grace window are missed and recent ones still fire', async () => {
      const clock = new ManualClock(START);
      const [old] = await seedReminders(db, 1, new Date(Date.parse(START) - HOUR).toISOString());
      const [recent] = await seedReminders(db, 1, new Date(Date.parse(START) - 5 * MIN).toISOString());
      const app = await schedulerApp(db, clock);
      try {
        await waitFor(
          async () => (await outboxReminders(db, [old!, recent!])).length >= 2,
          WAIT,
          'two events',
        );
        const events = await outboxReminders(db, [old!, recent!]);
        const byId = new Map(events.map((e) => [e.event.data.reminder_id, e.event_type]));
        assert.equal(byId.get(old!), 'reminder.missed');
        assert.equal(byId.get(recent!), 'reminder.triggered');
        const lateness = await app.proc.runtime.metrics.of(remindersManifest).lateness.get();
        const count = lateness.values.find(
          (v) =>
            v.metricName === 'taskflow_reminder_trigger_lateness_seconds_count' &&
            v.labels.outcome === 'missed',
        );
        assert.equal(count?.value, 1);
      } finally {
        await app.stop();
      }
    });

    it('a stop between commit and publish: the relay publishes the fired reminder exactly once later', async () => {
      const clock = new ManualClock(START);
      const due = new Date(Date.parse(START) + MIN).toISOString();
      const ids = await seedReminders(db, 1, due);
      clock.set(due);
      const scheduler = await schedulerApp(db, clock);
      await waitFor(async () => (await outboxReminders(db, ids)).length === 1, WAIT, 'the outbox row');
      await scheduler.stop(); // stopped before any relay published it
      const relay = await startApp(db, { clock, env: busEnv(), targets: findTargets(['relay']) });
      try {
        const published = async () =>
          (await relay.proc.runtime.bus.admin.read(TOPICS.reminders, { limit: 100_000 })).filter(
            (m) => (m.event.data as ReminderEventData).reminder_id === ids[0],
          );
        await waitFor(async () => (await published()).length === 1, WAIT, 'the published event');
        await outboxRelayed(db); // a row marked published is never published again
        assert.equal((await published()).length, 1);
        assert.equal((await published())[0]!.event.type, 'reminder.triggered');
      } finally {
        await relay.stop();
      }
    });

    if (backend.name === 'postgres')
      it('a scheduler process SIGKILLed while holding its claim: the restarted scheduler fires once', async () => {
        const due = new Date(Date.parse(START) + 2 * HOUR).toISOString();
        const ids = await seedReminders(db, 5, due, 3);
        const child = spawn(
          process.execPath,
          ['--import', 'tsx', new URL('../fixtures/reminder-scheduler-child.ts', import.meta.url).pathname],
          {
            env: { ...process.env, CHILD_DATABASE_URL: url, CHILD_NOW: due },
            stdio: ['ignore', 'pipe', 'inherit'],
          },
        );
        const exited = new Promise((resolve) => child.once('exit', resolve));
        let out = '';
        child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
        try {
          await waitFor(() => out.includes('CLAIMED 5'), 30_000, 'the child to claim the reminders');
        } finally {
          child.kill('SIGKILL');
          await exited;
        }
        assert.equal((await outboxReminders(db, ids)).length, 0);
        const app = await schedulerApp(db, new ManualClock(due));
        try {
          await waitFor(
            async () => (await outboxReminders(db, ids)).length >= 5,
            WAIT,
            'the triggered events',
          );
          await app.stop(); // a stopped scheduler has finished its last claim
          const events = await outboxReminders(db, ids);
          assert.equal(events.length, 5);
          assert.deepEqual(events.map((e) => e.event.data.reminder_id).sort(), [...ids].sort());
        } finally {
          await app.stop();
        }
      });
  });
}
