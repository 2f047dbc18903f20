/**
 * The notifications target against hostile or broken receivers and inputs, with real components (the target on
 * the embedded bus, a ManualClock, real HTTP, HTTPS and SMTP servers on 127.0.0.1): a push service that answers
 * a byte at a time; one user's slow webhooks and dead push devices beside another user's in-app notification;
 * claimDeliveries' per-user bound at the store level; an attempt in flight when its task is completed that
 * fails; push keys that are not a P-256 point or a 16-byte secret, and a user's 21st push subscription; the
 * per-mailbox limit of confirmation codes across the spellings of an IDN domain; NOTIFY_CLAIM_MS below twice
 * NOTIFY_TIMEOUT_MS. One user's receivers must hold back only that user's deliveries.
 */
import assert from 'node:assert/strict';
import { createECDH, createHmac, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Agent, createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { domainToASCII } from 'node:url';
import { after, before, describe, it } from 'node:test';
import webpush from 'web-push';
import { ConfigError } from '../../src/config.ts';
import { makeEvent } from '../../src/contracts/cloudevent.ts';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { uuidv7 } from '../../src/ids.ts';
import { subscribedTopics } from '../../src/runtime.ts';
import { GROUPS, MANIFESTS } from '../../src/services/index.ts';
import {
  createNotificationsTarget,
  type NotificationsOptions,
} from '../../src/services/notifications/index.ts';
import { notificationsManifest } from '../../src/services/notifications/manifest.ts';
import { claimDeliveries } from '../../src/services/notifications/store.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { selfSignedCertificate, startSmtpSink } from '../helpers/sinks.ts';

const START = '2026-03-01T12:00:00Z';
/** NOTIFY_TIMEOUT_MS where a receiver's slowness is the subject: small, so the file runs in seconds. */
const TIMEOUT = 1_000;

type DeliveryChannel = ReminderEventData['channels'][number];
type Listening = ReturnType<typeof createHttpServer> | ReturnType<typeof createHttpsServer>;

/** An HTTPS server trusted through the returned agent (a push service). */
function httpsServer(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const { cert, key } = selfSignedCertificate();
  return { server: createHttpsServer({ key, cert }, handler), agent: new Agent({ ca: cert }) };
}

async function listen(server: Listening, scheme: 'http' | 'https'): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function shut(server: Listening | undefined): void {
  if (!server) return;
  server.closeAllConnections();
  server.close();
}

/** A browser's push subscription keys: a P-256 public key (uncompressed point) and a 16-byte auth secret. */
function browserKeys(): { p256dh: string; auth: string } {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  return { p256dh: ecdh.getPublicKey().toString('base64url'), auth: randomBytes(16).toString('base64url') };
}

const vapid = () => ({ ...webpush.generateVAPIDKeys(), subject: 'mailto:ops@taskflow.test' });

function reminder(user: string, channel: DeliveryChannel, title = 'Pay rent'): ReminderEventData {
  return {
    reminder_id: uuidv7(),
    task_id: uuidv7(),
    user_id: user,
    title,
    remind_at: '2026-03-01T11:59:00.000Z',
    triggered_at: '2026-03-01T11:59:00.000Z',
    due_at: '2026-03-01T13:00:00.000Z',
    reason: 'scheduled',
    channels: [channel],
  };
}

/**
 * `n` pending deliveries of `user` on `channel`, all due at `at` (a second before START by default), inserted in
 * one statement as the consumer would enqueue them. Returns their ids.
 */
async function enqueue(
  db: Db,
  user: string,
  channel: DeliveryChannel,
  opts: { n?: number; at?: Date } = {},
): Promise<string[]> {
  const ids = Array.from({ length: opts.n ?? 1 }, () => uuidv7());
  const at = opts.at ?? new Date(Date.parse(START) - 1_000);
  await db.query(
    `INSERT INTO notification_deliveries (id, event_id, channel, user_id, payload, status, next_attempt_at)
     SELECT u.id, $2 || u.n, $3, $4, $5::jsonb, 'pending', $6::timestamptz
       FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n)`,
    [ids, `ev-${ids[0]}-`, channel, user, JSON.stringify(reminder(user, channel)), at.toISOString()],
  );
  return ids;
}

/** How many of `user`'s deliveries are being sent: claimed and still pending. */
async function inFlight(db: Db, user: string): Promise<number> {
  const r = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM notification_deliveries
      WHERE user_id = $1 AND claimed_by IS NOT NULL AND status = 'pending'`,
    [user],
  );
  return r.rows[0]!.n;
}

async function inAppCount(db: Db, user: string): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM notifications WHERE user_id = $1', [
    user,
  ]);
  return r.rows[0]!.n;
}

/** `p`, or a rejection naming `what` after `ms` (a stop that never ends must fail the test, not hang it). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The notifications target alone on a fresh PGlite database, private receivers allowed (all are local). */
async function notificationsApp(
  options: NotificationsOptions,
  clock = new ManualClock(START),
): Promise<{ app: TestApp; db: Db; drop(): Promise<void> }> {
  const { db, drop } = await backends[0]!.fresh();
  const app = await startApp(db, {
    clock,
    targets: [createNotificationsTarget({ webhookAllowPrivate: true, tickMs: 20, ...options })],
  });
  return { app, db, drop };
}

/** Stops the app (bounded: a stop held by a receiver fails the test's `after` instead of hanging the file). */
async function teardown(ctx: { app?: TestApp; drop?: () => Promise<void> }, stopped = false): Promise<void> {
  if (ctx.app && !stopped) await within(ctx.app.stop(), 10_000, 'app.stop()').catch(() => undefined);
  await ctx.drop?.();
}

describe('a push service that answers a byte at a time', () => {
  const ctx: { app?: TestApp; db?: Db; drop?: () => Promise<void> } = {};
  let server: Listening | undefined;
  let origin = '';
  let stopped = false;
  before(async () => {
    // 201, then one byte every 100 ms for ever: never idle for NOTIFY_TIMEOUT_MS.
    const https = httpsServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(201, { 'content-type': 'text/plain' });
        const t = setInterval(() => res.write('x'), 100);
        res.on('close', () => clearInterval(t));
      });
    });
    server = https.server;
    origin = await listen(server, 'https');
    Object.assign(
      ctx,
      await notificationsApp({ vapid: vapid(), pushAgent: https.agent, timeoutMs: TIMEOUT }),
    );
  });
  after(async () => {
    shut(server); // ends what trickles, so that a stop held by it (before the fix) can end
    await teardown(ctx, stopped);
  });

  it("ends the push within about NOTIFY_TIMEOUT_MS, delivers another user's in-app notification meanwhile, and lets the app stop promptly", async () => {
    const { app, db } = ctx as Required<typeof ctx>;
    const sub = await app.call('mallory', 'POST', '/api/notifications/push-subscriptions', {
      endpoint: `${origin}/push/mallory`,
      keys: browserKeys(),
    });
    assert.equal(sub.status, 201, JSON.stringify(sub.body));
    const [push] = await enqueue(db, 'mallory', 'push');
    const claimed = (id: string) =>
      db
        .query('SELECT 1 FROM notification_deliveries WHERE id = $1 AND claimed_by IS NOT NULL', [id])
        .then((r) => r.rows.length === 1);
    await waitFor(() => claimed(push!), 10_000, "mallory's push to be claimed");
    const claimedAt = Date.now();

    await enqueue(db, 'bob', 'in_app');
    await waitFor(async () => (await inAppCount(db, 'bob')) === 1, 2 * TIMEOUT, "bob's in-app notification");
    const bobAt = Date.now();

    await waitFor(async () => !(await claimed(push!)), 3 * TIMEOUT, "mallory's push attempt to end");
    const endedAt = Date.now();
    assert.ok(
      endedAt - claimedAt < 2 * TIMEOUT,
      `the push ended ${endedAt - claimedAt} ms after its claim (NOTIFY_TIMEOUT_MS ${TIMEOUT})`,
    );
    assert.ok(bobAt <= endedAt, "bob's in-app notification came while mallory's push was being sent");
    const row = (
      await db.query<{ status: string; attempts: number; last_error: string | null }>(
        'SELECT status, attempts, last_error FROM notification_deliveries WHERE id = $1',
        [push],
      )
    ).rows[0]!;
    assert.deepEqual([row.status, row.attempts], ['pending', 1], JSON.stringify(row));
    assert.match(row.last_error ?? '', /push service answered no status/);

    // Its retry (past the backoff) trickles again; a stop while it is in flight ends with the attempt.
    (app.clock as ManualClock).advance(3_600_000);
    await waitFor(() => claimed(push!), 10_000, "the retry of mallory's push to be claimed");
    const stopping = Date.now();
    await within(app.stop(), 3 * TIMEOUT, 'app.stop() with a trickling push in flight');
    stopped = true;
    assert.ok(
      Date.now() - stopping < 2 * TIMEOUT,
      `the app took ${Date.now() - stopping} ms to stop (NOTIFY_TIMEOUT_MS ${TIMEOUT})`,
    );
  });
});

describe("one user's slow webhooks and another's dead push devices", () => {
  const BATCH = 8; // NOTIFY_BATCH_SIZE: a user's bound is 2
  const ctx: { app?: TestApp; db?: Db; drop?: () => Promise<void> } = {};
  let hooks: Listening | undefined;
  let pushes: Listening | undefined;
  let hookOrigin = '';
  let pushOrigin = '';
  before(async () => {
    // Both take the request and never answer: each send ends at NOTIFY_TIMEOUT_MS.
    hooks = createHttpServer((req) => req.resume());
    hookOrigin = await listen(hooks, 'http');
    const https = httpsServer((req) => req.resume());
    pushes = https.server;
    pushOrigin = await listen(pushes, 'https');
    Object.assign(
      ctx,
      await notificationsApp({
        vapid: vapid(),
        pushAgent: https.agent,
        timeoutMs: TIMEOUT,
        batchSize: BATCH,
      }),
    );
  });
  after(async () => {
    shut(hooks);
    shut(pushes);
    await teardown(ctx);
  });

  it("do not hold back a third user's in-app notification beyond about NOTIFY_TIMEOUT_MS, and take at most a quarter of the slots", async () => {
    const { app, db } = ctx as Required<typeof ctx>;
    const prefs = await app.call('mallory', 'PUT', '/api/notifications/preferences', {
      webhook_url: `${hookOrigin}/hook/mallory`,
    });
    assert.equal(prefs.status, 200, JSON.stringify(prefs.body));
    const keys = browserKeys();
    for (let i = 0; i < 20; i++) {
      const s = await app.call('oscar', 'POST', '/api/notifications/push-subscriptions', {
        endpoint: `${pushOrigin}/push/oscar-${i}`,
        keys,
      });
      assert.equal(s.status, 201, JSON.stringify(s.body));
    }

    // Watched from before anything is due until the test ends.
    let maxMallory = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        maxMallory = Math.max(maxMallory, await inFlight(db, 'mallory'));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      const due = Date.parse(START);
      const [push] = await enqueue(db, 'oscar', 'push', { at: new Date(due - 2_000) });
      await enqueue(db, 'mallory', 'webhook', { n: 20, at: new Date(due - 1_000) });
      await waitFor(
        async () => (await inFlight(db, 'oscar')) === 1 && (await inFlight(db, 'mallory')) > 0,
        10_000,
        "oscar's push and mallory's webhooks to be in flight",
      );
      const started = Date.now();
      await enqueue(db, 'bob', 'in_app', { at: new Date(due - 500) });
      await waitFor(
        async () => (await inAppCount(db, 'bob')) === 1,
        4 * TIMEOUT,
        "bob's in-app notification",
      ).catch(() => undefined);
      const latency = Date.now() - started;
      assert.equal(
        await inAppCount(db, 'bob'),
        1,
        `bob's in-app notification was not delivered ${latency} ms after it was due`,
      );
      assert.ok(latency < 1.5 * TIMEOUT, `bob's in-app notification took ${latency} ms (timeout ${TIMEOUT})`);

      // Go on watching as mallory's first webhooks time out and her next ones take their slots, and until
      // oscar's push (to all 20 devices at once) has ended.
      await waitFor(
        async () =>
          (
            await db.query(
              `SELECT 1 FROM notification_deliveries WHERE user_id = 'mallory' AND attempts > 0 OFFSET 3`,
            )
          ).rows.length > 0 && (await inFlight(db, 'oscar')) === 0,
        4 * TIMEOUT,
        "mallory's next webhooks to be claimed and oscar's push to end",
      );
      const row = (
        await db.query<{ last_error: string | null }>(
          'SELECT last_error FROM notification_deliveries WHERE id = $1',
          [push],
        )
      ).rows[0]!;
      assert.match(row.last_error ?? '', /push service answered no status/);
    } finally {
      watching = false;
      await watch;
    }
    assert.ok(
      maxMallory <= BATCH / 4,
      `mallory had ${maxMallory} deliveries in flight at once (NOTIFY_BATCH_SIZE ${BATCH}: at most ${BATCH / 4})`,
    );
    assert.ok(maxMallory > 0);
  });
});

describe('claimDeliveries', () => {
  it("gives one user at most perUser rows of a claim, and a later claim the other user's rows", async () => {
    for (const b of backends) {
      const { db, drop } = await b.fresh();
      try {
        const now = new Date(START);
        const slow = await enqueue(db, 'slow', 'webhook', { n: 20, at: new Date(now.getTime() - 60_000) });
        const other = await enqueue(db, 'other', 'webhook', { n: 2, at: new Date(now.getTime() - 1_000) });
        const count = (rows: { user_id: string }[], user: string) =>
          rows.filter((r) => r.user_id === user).length;
        // NOTIFY_BATCH_SIZE 16: a user's bound is 4.
        const first = await claimDeliveries(db, 'h1', now, 16, 60_000, 4);
        assert.ok(count(first, 'slow') > 0, `${b.name}: the first claim took none of the first due rows`);
        assert.ok(
          count(first, 'slow') <= 4,
          `${b.name}: the first claim gave one user ${count(first, 'slow')} of 16 slots (perUser 4)`,
        );
        const second = await claimDeliveries(db, 'h2', now, 16, 60_000, 4);
        const claimed = [...first, ...second];
        assert.equal(count(claimed, 'slow'), count(first, 'slow'), `${b.name}: a user at the bound got more`);
        assert.deepEqual(
          claimed
            .filter((r) => r.user_id === 'other')
            .map((r) => r.id)
            .sort(),
          [...other].sort(),
          `${b.name}: the other user's rows, once each, by the second claim`,
        );
        assert.ok(claimed.every((r) => slow.includes(r.id) || other.includes(r.id)));
      } finally {
        await drop();
      }
    }
  });
});

describe('an attempt in flight when its task is completed', () => {
  const clock = new ManualClock(START);
  const ctx: { app?: TestApp; db?: Db; drop?: () => Promise<void> } = {};
  let server: Listening | undefined;
  let origin = '';
  const calls: string[] = [];
  /** Answers carol's first call (503) when the test lets it. */
  let release: () => void = () => undefined;
  const released = new Promise<void>((r) => (release = r));
  before(async () => {
    server = createHttpServer((req, res) => {
      req.resume();
      const path = req.url ?? '/';
      calls.push(path);
      if (path === '/hook/carol' && calls.filter((c) => c === path).length === 1)
        void released.then(() => res.writeHead(503).end('down'));
      else res.writeHead(200).end('ok');
    });
    origin = await listen(server, 'http');
    Object.assign(
      ctx,
      await notificationsApp({ timeoutMs: 5_000, retryBaseMs: 1_000, retryMaxMs: 4_000 }, clock),
    );
  });
  after(async () => {
    release();
    shut(server);
    await teardown(ctx);
  });

  it('that fails is not retried: the delivery ends skipped after one attempt', async () => {
    const { app, db } = ctx as Required<typeof ctx>;
    for (const user of ['carol', 'dave']) {
      const r = await app.call(user, 'PUT', '/api/notifications/preferences', {
        webhook_url: `${origin}/hook/${user}`,
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    const publish = (type: string, d: ReminderEventData) =>
      app.proc.runtime.bus.publisher.publish([
        {
          topic: TOPICS.reminders,
          key: d.user_id,
          event: makeEvent({
            type,
            source: '/taskflow/reminders',
            subject: d.task_id,
            key: d.user_id,
            time: clock.now(),
            data: d,
          }),
        },
      ]);
    const consumed = () =>
      waitFor(
        async () => {
          const lag = await app.proc.runtime.bus.admin.lag(GROUPS.notifications, subscribedTopics(MANIFESTS));
          return lag.length > 0 && lag.every((l) => l.lag === 0);
        },
        10_000,
        'the events to be consumed',
      );
    const carol = reminder('carol', 'webhook', 'Call the bank');
    await publish('reminder.triggered', carol);
    await waitFor(() => calls.includes('/hook/carol'), 10_000, "carol's webhook attempt to be in flight");
    // The user completes the task while that attempt is held: the reminders target dismisses the reminder.
    await publish('reminder.dismissed', { ...carol, reason: 'task_completed' });
    await consumed();
    release(); // the held attempt fails (503)
    await waitFor(
      async () =>
        (
          await db.query(
            `SELECT 1 FROM notification_deliveries WHERE user_id = 'carol' AND claimed_by IS NULL AND attempts = 1`,
          )
        ).rows.length === 1,
      10_000,
      "carol's attempt to end",
    );

    // Past any retry's backoff (at most 4 s), a later delivery of dave's: a retry of carol's, due before it,
    // would be claimed no later than it.
    clock.advance(10_000);
    await publish('reminder.triggered', reminder('dave', 'webhook', 'Water the plants'));
    await waitFor(
      async () =>
        (await db.query(`SELECT 1 FROM notification_deliveries WHERE user_id = 'dave' AND status = 'sent'`))
          .rows.length === 1,
      10_000,
      "dave's webhook to be sent",
    );
    const row = (
      await db.query<{
        status: string;
        attempts: number;
        last_error: string | null;
        claimed_by: string | null;
      }>(
        `SELECT status, attempts, last_error, claimed_by FROM notification_deliveries WHERE user_id = 'carol'`,
      )
    ).rows;
    assert.equal(row.length, 1);
    assert.deepEqual(
      { status: row[0]!.status, attempts: row[0]!.attempts, claimed_by: row[0]!.claimed_by },
      { status: 'skipped', attempts: 1, claimed_by: null },
      `carol's delivery: ${JSON.stringify(row[0])}`,
    );
    assert.match(row[0]!.last_error ?? '', /complete/i);
    assert.deepEqual(
      calls.filter((c) => c === '/hook/carol'),
      ['/hook/carol'],
      'the webhook was called once for a completed task',
    );
  });
});

describe('push subscriptions', () => {
  const ctx: { app?: TestApp; db?: Db; drop?: () => Promise<void> } = {};
  before(async () => {
    Object.assign(ctx, await notificationsApp({ vapid: vapid() }));
  });
  after(() => teardown(ctx));

  it("refuse keys that are not a P-256 point or a 16-byte auth (400 naming the field); a user's 21st replaces the oldest", async () => {
    const { app, db } = ctx as Required<typeof ctx>;
    const good = browserKeys();
    // 65 bytes starting 0x04 (the shape of an uncompressed point: "B" and 86 more characters), (1, 1) is off the curve.
    const offCurve = Buffer.alloc(65);
    offCurve[0] = 0x04;
    offCurve[32] = 1;
    offCurve[64] = 1;
    // A point of the curve with a first byte 0x05: its text starts with "B" too.
    const wrongPrefix = Buffer.from(good.p256dh, 'base64url');
    wrongPrefix[0] = 0x05;
    const refused: [string, { p256dh: string; auth: string }][] = [
      ['keys.p256dh', { p256dh: offCurve.toString('base64url'), auth: good.auth }],
      ['keys.p256dh', { p256dh: wrongPrefix.toString('base64url'), auth: good.auth }],
      ['keys.auth', { p256dh: good.p256dh, auth: randomBytes(8).toString('base64url') }],
      ['keys.auth', { p256dh: good.p256dh, auth: randomBytes(32).toString('base64url') }],
    ];
    for (const [field, keys] of refused) {
      const r = await app.call('erin', 'POST', '/api/notifications/push-subscriptions', {
        endpoint: 'https://push.example/erin',
        keys,
      });
      assert.equal(r.status, 400, `${JSON.stringify(keys)}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.deepEqual(
        (r.body.errors as { field: string }[]).map((e) => e.field),
        [field],
        JSON.stringify(r.body),
      );
    }
    const stored = async () =>
      (
        await db.query<{ endpoint: string }>(
          `SELECT endpoint FROM push_subscriptions WHERE user_id = 'erin' ORDER BY created_at, id`,
        )
      ).rows.map((r) => r.endpoint);
    assert.deepEqual(await stored(), []);

    const endpoints = Array.from({ length: 21 }, (_, i) => `https://push.example/erin/device-${i}`);
    for (const endpoint of endpoints) {
      const r = await app.call('erin', 'POST', '/api/notifications/push-subscriptions', {
        endpoint,
        keys: browserKeys(),
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
    assert.deepEqual(await stored(), endpoints.slice(1), 'the 20 newest remain, the first is gone');
  });
});

describe('the per-mailbox limit of confirmation codes', () => {
  const ctx: { app?: TestApp; db?: Db; drop?: () => Promise<void> } = {};
  let smtp: Awaited<ReturnType<typeof startSmtpSink>> | undefined;
  before(async () => {
    smtp = await startSmtpSink();
    Object.assign(ctx, await notificationsApp({ smtpUrl: smtp.url }));
  });
  after(async () => {
    await teardown(ctx);
    await smtp?.close();
  });

  it('holds for a mailbox whatever the spelling of its domain (IDN, punycode, case): 5 codes reach it, the 6th is 429', async () => {
    const { app } = ctx as Required<typeof ctx>;
    const spellings = ['victim@bücher.example', 'victim@xn--bcher-kva.example', 'Victim@BÜCHER.example'];
    for (let i = 0; i < 5; i++) {
      const email = spellings[i % spellings.length]!;
      const r = await app.call(`attacker-${i}`, 'PUT', '/api/notifications/preferences', { email });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.ok(r.body.email_confirmation?.sent_to, `code ${i + 1} to ${email}: ${JSON.stringify(r.body)}`);
    }
    for (const [i, email] of spellings.entries()) {
      const user = `attacker-${5 + i}`;
      const r = await app.call(user, 'PUT', '/api/notifications/preferences', { email });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.match(
        r.body.email_confirmation?.not_sent ?? '',
        /to this address/,
        `a 6th code to ${email}: ${JSON.stringify(r.body.email_confirmation)}`,
      );
      const again = await app.call(user, 'POST', '/api/notifications/email/confirmation-code');
      assert.equal(
        again.status,
        429,
        `a 6th code to ${email}: ${again.status} ${JSON.stringify(again.body)}`,
      );
    }
    const mailbox = (address: string) => {
      const at = address.lastIndexOf('@');
      return `${address.slice(0, at).toLowerCase()}@${domainToASCII(address.slice(at + 1))}`;
    };
    const received = smtp!.mails.filter((m) =>
      m.to.some((t) => mailbox(t) === 'victim@xn--bcher-kva.example'),
    );
    assert.equal(received.length, 5, `envelopes: ${smtp!.mails.map((m) => m.to.join(',')).join('; ')}`);
  });
});

describe('NOTIFY_CLAIM_MS', () => {
  it('below twice NOTIFY_TIMEOUT_MS is a configuration error naming both', () => {
    assert.throws(
      () => notificationsManifest.config({ NOTIFY_TIMEOUT_MS: '1000', NOTIFY_CLAIM_MS: '1999' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, /NOTIFY_CLAIM_MS \(1999\).*NOTIFY_TIMEOUT_MS \(1000\)/);
        return true;
      },
    );
    const atBound = notificationsManifest.config({ NOTIFY_TIMEOUT_MS: '1000', NOTIFY_CLAIM_MS: '2000' });
    assert.deepEqual([atBound.timeoutMs, atBound.claimMs], [1000, 2000]);
    // Unset, the claim follows a long timeout.
    assert.equal(notificationsManifest.config({ NOTIFY_TIMEOUT_MS: '100000' }).claimMs, 200_000);
  });
});

describe('webhooks: the secret and the address', () => {
  /** The status, attempts and last error of delivery `id`. */
  async function delivery(db: Db, id: string) {
    const r = await db.query<{ status: string; attempts: number; last_error: string | null }>(
      'SELECT status, attempts, last_error FROM notification_deliveries WHERE id = $1',
      [id],
    );
    return r.rows[0]!;
  }

  it('signs the webhooks of a webhook_url saved without a secret with the generated secret it answered', async () => {
    const calls: { headers: IncomingMessage['headers']; body: string }[] = [];
    const hooks = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (b: Buffer) => (body += b.toString()));
      req.on('end', () => {
        calls.push({ headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    const url = (await listen(hooks, 'http')) + '/hook';
    const { db, drop } = await backends[0]!.fresh();
    const app = await startApp(db, {
      clock: new ManualClock(START),
      targets: [createNotificationsTarget({ webhookAllowPrivate: true, tickMs: 20 })],
    });
    try {
      const saved = await app.call('vic', 'PUT', '/api/notifications/preferences', { webhook_url: url });
      assert.equal(saved.status, 200, JSON.stringify(saved.body));
      const secret = saved.body.webhook_secret as string;
      assert.match(secret, /^whsec_/);
      const [id] = await enqueue(db, 'vic', 'webhook');
      await waitFor(
        async () => (await delivery(db, id!)).status !== 'pending',
        10_000,
        'the delivery to end',
      );
      const d = await delivery(db, id!);
      assert.equal(d.status, 'sent', `the webhook was not sent: ${d.last_error}`);
      assert.equal(calls.length, 1);
      const expected = `sha256=${createHmac('sha256', secret).update(calls[0]!.body).digest('hex')}`;
      assert.equal(calls[0]!.headers['x-taskflow-signature'], expected);
    } finally {
      await app.stop();
      await drop();
      shut(hooks);
    }
  });

  it("gives a new webhook_url saved without a secret a new secret: the previous receiver's cannot sign for it", async () => {
    const { db, drop } = await backends[0]!.fresh();
    const app = await startApp(db, { clock: new ManualClock(START), targets: [createNotificationsTarget()] });
    try {
      const put = (body: object) => app.call('wes', 'PUT', '/api/notifications/preferences', body);
      const first = await put({ webhook_url: 'https://one.example.com/hook' });
      assert.match(first.body.webhook_secret, /^whsec_/);
      // The same address again, or another field: the secret stays (and is not shown).
      const same = await put({ webhook_url: 'https://one.example.com/hook', channels: { in_app: false } });
      assert.equal(same.status, 200, JSON.stringify(same.body));
      assert.equal(same.body.webhook_secret, undefined);
      const moved = await put({ webhook_url: 'https://two.example.com/hook' });
      assert.equal(moved.status, 200, JSON.stringify(moved.body));
      assert.match(moved.body.webhook_secret ?? '', /^whsec_/, 'a new secret for the new receiver');
      assert.notEqual(moved.body.webhook_secret, first.body.webhook_secret);
      const stored = await db.query<{ webhook_secret: string }>(
        `SELECT webhook_secret FROM notification_preferences WHERE user_id = 'wes'`,
      );
      assert.equal(stored.rows[0]!.webhook_secret, moved.body.webhook_secret);
      // A new address with its own secret keeps that one.
      const own = await put({
        webhook_url: 'https://three.example.com/hook',
        webhook_secret: 'whsec_mine_0123456789',
      });
      assert.equal(own.body.webhook_secret, undefined);
      const kept = await db.query<{ webhook_secret: string }>(
        `SELECT webhook_secret FROM notification_preferences WHERE user_id = 'wes'`,
      );
      assert.equal(kept.rows[0]!.webhook_secret, 'whsec_mine_0123456789');
    } finally {
      await app.stop();
      await drop();
    }
  });

  it('marks a delivery to a webhook on a non-public address dead at its first attempt (a name rebound to loopback)', async () => {
    const { db, drop } = await backends[0]!.fresh();
    const app = await startApp(db, {
      clock: new ManualClock(START),
      targets: [createNotificationsTarget({ webhookAllowPrivate: false, tickMs: 20, maxAttempts: 8 })],
    });
    try {
      // Saved when its name resolved to a public address, loopback now: written directly (the API refuses it).
      await db.query(
        `INSERT INTO notification_preferences (user_id, webhook_url, webhook_secret)
         VALUES ('rita', 'http://127.0.0.1:9/hook', 'whsec_0123456789abcdef0123456789')`,
      );
      const [id] = await enqueue(db, 'rita', 'webhook');
      await waitFor(
        async () => (await delivery(db, id!)).status !== 'pending',
        10_000,
        'the delivery to end',
      );
      const d = await delivery(db, id!);
      assert.deepEqual([d.status, d.attempts], ['dead', 1]);
      assert.match(d.last_error ?? '', /not a public address/);
    } finally {
      await app.stop();
      await drop();
    }
  });
});
