/**
 * The notifications target against what real receivers answer, with real components (the target on the
 * embedded bus and PGlite, a ManualClock, a real SMTP server and a real HTTPS push service on 127.0.0.1): a mail
 * server that refuses the recipient for good (5xx) or for now (4xx); a mail server that kept a message whose
 * acceptance the sender never heard, so the retry is a second copy; a push whose only device is gone.
 */
import assert from 'node:assert/strict';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SMTPServer } from 'smtp-server';
import webpush from 'web-push';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { uuidv7 } from '../../src/ids.ts';
import {
  createNotificationsTarget,
  type NotificationsOptions,
} from '../../src/services/notifications/index.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { startPushService, startWebhookSink } from '../helpers/sinks.ts';

const START = '2026-03-01T12:00:00Z';
type DeliveryChannel = ReminderEventData['channels'][number];

function reminder(user: string, channel: DeliveryChannel): ReminderEventData {
  return {
    reminder_id: uuidv7(),
    task_id: uuidv7(),
    user_id: user,
    title: 'Pay rent',
    remind_at: '2026-03-01T11:59:00.000Z',
    triggered_at: '2026-03-01T11:59:00.000Z',
    due_at: '2026-03-01T13:00:00.000Z',
    reason: 'scheduled',
    channels: [channel],
  };
}

/** A pending delivery of `user` on `channel`, due a second before START, as the consumer enqueues it. */
async function enqueue(db: Db, user: string, channel: DeliveryChannel): Promise<string> {
  const id = uuidv7();
  await db.query(
    `INSERT INTO notification_deliveries (id, event_id, channel, user_id, payload, status, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5::jsonb, 'pending', $6::timestamptz)`,
    [
      id,
      `ev-${id}`,
      channel,
      user,
      JSON.stringify(reminder(user, channel)),
      new Date(Date.parse(START) - 1_000),
    ],
  );
  return id;
}

type DeliveryState = {
  status: string;
  attempts: number;
  last_error: string | null;
  claimed_by: string | null;
};

async function delivery(db: Db, id: string): Promise<DeliveryState> {
  const r = await db.query<DeliveryState>(
    'SELECT status, attempts, last_error, claimed_by FROM notification_deliveries WHERE id = $1',
    [id],
  );
  return r.rows[0]!;
}

/** The delivery's attempt has ended: not claimed, and either finished or attempted `attempts` times. */
const attemptEnded = (db: Db, id: string, attempts = 1) =>
  waitFor(
    async () => {
      const d = await delivery(db, id);
      return d.claimed_by === null && (d.status !== 'pending' || d.attempts >= attempts);
    },
    10_000,
    `attempt ${attempts} of delivery ${id} to end`,
  );

/** A user with a confirmed address, as after POST /api/notifications/email/confirm. */
async function confirmedEmail(db: Db, user: string, email: string): Promise<void> {
  await db.query(
    `INSERT INTO notification_preferences (user_id, email, email_confirmed_at) VALUES ($1, $2, $3)`,
    [user, email, START],
  );
}

/**
 * A real SMTP server whose answer to each RCPT TO and each message (the final dot) the test picks; every
 * message it kept is in `mails`, every RCPT TO in `rcpts`.
 */
async function startMailServer(opts: {
  rcpt?: (address: string, nth: number) => number;
  data?: (nth: number) => number;
}) {
  const mails: string[] = [];
  const rcpts: string[] = [];
  let messages = 0;
  const refuse = (code: number) =>
    Object.assign(new Error(code >= 500 ? 'mailbox unavailable' : 'try again later'), { responseCode: code });
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onRcptTo(address, _session, callback) {
      rcpts.push(address.address);
      const code = opts.rcpt?.(address.address, rcpts.filter((a) => a === address.address).length) ?? 250;
      callback(code >= 400 ? refuse(code) : undefined);
    },
    onData(stream, _session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        // The message is kept whatever is answered: a server that stored it and then failed to say so.
        mails.push(Buffer.concat(chunks).toString('utf8'));
        const code = opts.data?.(++messages) ?? 250;
        callback(code >= 400 ? refuse(code) : undefined);
      });
    },
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.server.address() as AddressInfo).port)),
  );
  return {
    url: `smtp://127.0.0.1:${port}`,
    mails,
    rcpts,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const messageId = (raw: string) => /^message-id:\s*(.+)$/im.exec(raw)?.[1]?.trim();

/**
 * The notifications target alone (ticking every 20 ms) on a fresh PGlite with a ManualClock at START, and
 * `receiver` (a mail server, a push service, a webhook receiver) started before it and closed after it.
 */
function withTarget<R extends { close(): Promise<void> }>(
  start: () => Promise<R>,
  options: (receiver: R) => NotificationsOptions,
) {
  const t = { clock: new ManualClock(START) } as { clock: ManualClock; receiver: R; app: TestApp; db: Db };
  let drop: (() => Promise<void>) | undefined;
  before(async () => {
    t.receiver = await start();
    ({ db: t.db, drop } = await backends[0]!.fresh());
    t.app = await startApp(t.db, {
      clock: t.clock,
      targets: [createNotificationsTarget({ tickMs: 20, ...options(t.receiver) })],
    });
  });
  after(async () => {
    await t.app?.stop();
    await drop?.();
    await t.receiver?.close();
  });
  return t;
}

describe('a mail server that refuses the recipient', () => {
  const t = withTarget(
    () =>
      startMailServer({
        rcpt: (address) => (address.startsWith('gone@') ? 550 : address.startsWith('busy@') ? 451 : 250),
      }),
    (smtp) => ({ smtpUrl: smtp.url, maxAttempts: 8 }),
  );

  it('for good (5xx) marks the delivery dead at once, saying why; for now (4xx) retries it with backoff', async () => {
    await confirmedEmail(t.db, 'gina', 'gone@mail.example');
    await confirmedEmail(t.db, 'hank', 'busy@mail.example');
    const permanent = await enqueue(t.db, 'gina', 'email');
    const temporary = await enqueue(t.db, 'hank', 'email');
    await attemptEnded(t.db, permanent);
    await attemptEnded(t.db, temporary);

    const retried = await delivery(t.db, temporary);
    assert.deepEqual(
      [retried.status, retried.attempts],
      ['pending', 1],
      `the 451: ${JSON.stringify(retried)}`,
    );
    assert.match(retried.last_error ?? '', /451/);

    const p = await delivery(t.db, permanent);
    assert.deepEqual(
      [p.status, p.attempts],
      ['dead', 1],
      `the mail server answered 550 to the recipient: ${JSON.stringify(p)}`,
    );
    assert.match(p.last_error ?? '', /550/);
    // Past every backoff of the retries: the refused mailbox is not asked again.
    t.clock.advance(3_600_000);
    await attemptEnded(t.db, temporary, 2);
    assert.equal(
      t.receiver.rcpts.filter((a) => a === 'gone@mail.example').length,
      1,
      t.receiver.rcpts.join(', '),
    );
  });
});

describe('a delivery whose sender stopped during each attempt', () => {
  const t = withTarget(
    () => startMailServer({}),
    (smtp) => ({ smtpUrl: smtp.url, maxAttempts: 3 }),
  );

  it('is dead once claimed more often than it may be tried, not sent again (it was claimed for good)', async () => {
    await confirmedEmail(t.db, 'kim', 'kim@mail.example');
    await confirmedEmail(t.db, 'lou', 'lou@mail.example');
    // Claimed three times by processes killed while sending (no outcome recorded), their claims run out.
    const stopped = await enqueue(t.db, 'kim', 'email');
    const once = await enqueue(t.db, 'lou', 'email');
    await t.db.query(
      `UPDATE notification_deliveries SET attempts = CASE WHEN user_id = 'kim' THEN 3 ELSE 2 END,
              claimed_by = 'killed-process' WHERE id = ANY($1::uuid[])`,
      [[stopped, once]],
    );
    await attemptEnded(t.db, stopped, 4);
    await waitFor(async () => (await delivery(t.db, once)).status === 'sent', 10_000, 'the last try of lou');
    const d = await delivery(t.db, stopped);
    assert.deepEqual([d.status, d.attempts], ['dead', 4], JSON.stringify(d));
    assert.match(d.last_error ?? '', /3 attempts never ended/);
    assert.deepEqual(t.receiver.rcpts, ['lou@mail.example'], 'only the delivery with a try left is sent');
  });
});

describe('a webhook receiver that says when to come back, or that it is gone', () => {
  // The target's clock, which a receiver's slow answer moves on.
  const target: { clock?: ManualClock } = {};
  const t = withTarget(
    () =>
      startWebhookSink((path) =>
        path === '/busy'
          ? { status: 429, headers: { 'retry-after': '600' } }
          : path === '/slow-busy'
            ? // The answer comes 30 s into the attempt.
              (target.clock?.advance(30_000), { status: 429, headers: { 'retry-after': '600' } })
            : path === '/gone'
              ? 410
              : 200,
      ),
    () => ({ webhookAllowPrivate: true, retryBaseMs: 1_000, retryMaxMs: 3_600_000 }),
  );
  target.clock = t.clock;

  const webhookTo = (user: string, path: string) =>
    t.db.query(
      `INSERT INTO notification_preferences (user_id, webhook_enabled, webhook_url, webhook_secret)
       VALUES ($1, true, $2, 'whsec_0123456789abcdef0123456789abcdef')`,
      [user, `${t.receiver.url}${path}`],
    );

  it("waits a 429's Retry-After before the next attempt; a 410 is dead at once", async () => {
    await webhookTo('max', '/busy');
    await webhookTo('ned', '/gone');
    const busy = await enqueue(t.db, 'max', 'webhook');
    const gone = await enqueue(t.db, 'ned', 'webhook');
    await attemptEnded(t.db, busy);
    await attemptEnded(t.db, gone);
    const next = await t.db.query<{ wait_s: number }>(
      `SELECT extract(epoch FROM next_attempt_at - $2::timestamptz)::int AS wait_s
         FROM notification_deliveries WHERE id = $1`,
      [busy, t.clock.now().toISOString()],
    );
    assert.ok(next.rows[0]!.wait_s >= 600, `the next attempt in ${next.rows[0]!.wait_s} s, asked 600`);
    const g = await delivery(t.db, gone);
    assert.deepEqual([g.status, g.attempts], ['dead', 1], JSON.stringify(g));
    assert.match(g.last_error ?? '', /410/);
  });

  it('counts the Retry-After from the answer, not from the start of the attempt', async () => {
    await webhookTo('ola', '/slow-busy');
    const slow = await enqueue(t.db, 'ola', 'webhook');
    await attemptEnded(t.db, slow);
    const next = await t.db.query<{ wait_s: number }>(
      `SELECT extract(epoch FROM next_attempt_at - $2::timestamptz)::int AS wait_s
         FROM notification_deliveries WHERE id = $1`,
      [slow, t.clock.now().toISOString()],
    );
    assert.ok(
      next.rows[0]!.wait_s >= 600,
      `the next attempt ${next.rows[0]!.wait_s} s after the answer, asked 600`,
    );
  });
});

describe('a mail server that kept a message it failed to acknowledge', () => {
  // The first message is stored, then answered 451: the sender retries, and the mailbox has two copies.
  const t = withTarget(
    () => startMailServer({ data: (nth) => (nth === 1 ? 451 : 250) }),
    (smtp) => ({ smtpUrl: smtp.url }),
  );

  it("sends the retry with the first copy's Message-ID, which names the delivery (mail systems drop the duplicate)", async () => {
    await confirmedEmail(t.db, 'iris', 'iris@mail.example');
    const id = await enqueue(t.db, 'iris', 'email');
    await attemptEnded(t.db, id);
    t.clock.advance(3_600_000);
    await waitFor(async () => (await delivery(t.db, id)).status === 'sent', 10_000, 'the retry to be sent');
    assert.equal(t.receiver.mails.length, 2);
    const [first, second] = t.receiver.mails.map(messageId);
    assert.ok(first, t.receiver.mails[0]);
    assert.equal(second, first, 'one message, one Message-ID');
    assert.ok(first.includes(id), `${first} names delivery ${id}`);
  });
});

/**
 * A mail server that takes the message and then answers it a line at a time ("250-" continuation lines, one
 * every 100 ms) until it drops the connection 5 s later: every wait is short, the answer never ends.
 */
async function startTricklingMailServer() {
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write('220 trickle ESMTP\r\n');
    let inData = false;
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (;;) {
        const end = buffered.indexOf('\r\n');
        if (end < 0) return;
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (inData) {
          if (line !== '.') continue;
          inData = false;
          const timer = setInterval(() => socket.write('250-still thinking\r\n'), 100);
          socket.on('close', () => clearInterval(timer));
          // For ever in effect: a sender without a bound of its own is cut off only here, after 5 s (so that
          // the test of one ends, failing).
          setTimeout(() => socket.destroy(), 5_000).unref();
        } else if (/^(EHLO|HELO)/i.test(line)) socket.write('250 trickle\r\n');
        else if (/^DATA/i.test(line)) {
          inData = true;
          socket.write('354 go ahead\r\n');
        } else if (/^QUIT/i.test(line)) socket.end('221 bye\r\n');
        else socket.write('250 ok\r\n');
      }
    });
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
  return {
    url: `smtp://127.0.0.1:${port}`,
    /** Connections still open. */
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('a mail server that answers a line at a time for ever', () => {
  const t = withTarget(startTricklingMailServer, (smtp) => ({ smtpUrl: smtp.url, timeoutMs: 500 }));

  it('is given up on after NOTIFY_TIMEOUT_MS in all, its connection closed, and the delivery retried later', async () => {
    await confirmedEmail(t.db, 'jack', 'jack@mail.example');
    const id = await enqueue(t.db, 'jack', 'email');
    const started = performance.now();
    // Each wait is short; before, the send never ended and the claim ran out under it (mailed again by
    // whichever instance claimed it next, while this one still held the connection).
    await attemptEnded(t.db, id);
    const took = performance.now() - started;
    assert.ok(took < 4_000, `the attempt ended after ${Math.round(took)} ms, when the server dropped it`);
    const d = await delivery(t.db, id);
    assert.deepEqual([d.status, d.attempts], ['pending', 1], JSON.stringify(d));
    assert.match(d.last_error ?? '', /500 ms/);
    await waitFor(async () => t.receiver.sockets.size === 0, 5_000, 'the connection closed');
  });
});

describe("a push whose user's only device is gone", () => {
  const t = withTarget(startPushService, (service) => ({
    vapid: { ...webpush.generateVAPIDKeys(), subject: 'mailto:ops@taskflow.test' },
    pushAgent: service.agent,
    webhookAllowPrivate: true,
  }));

  it('is not reported sent: the delivery is skipped, saying no device was left, and the subscription is removed', async () => {
    const browser = t.receiver.subscribe('jo-old-browser', 410);
    const r = await t.app.call('jo', 'POST', '/api/notifications/push-subscriptions', browser);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = await enqueue(t.db, 'jo', 'push');
    await attemptEnded(t.db, id);
    assert.equal(t.receiver.calls.length, 1);
    assert.deepEqual(
      (await t.db.query(`SELECT 1 FROM push_subscriptions WHERE user_id = 'jo'`)).rows,
      [],
      'the gone subscription is removed',
    );
    const d = await delivery(t.db, id);
    assert.equal(d.status, 'skipped', `no device got the reminder: ${JSON.stringify(d)}`);
    assert.match(d.last_error ?? '', /no push subscription/);
    const listed = await t.app.call('jo', 'GET', '/api/notifications/deliveries?channel=push');
    assert.deepEqual(
      listed.body.items.map((x: { status: string }) => x.status),
      ['skipped'],
    );
  });
});
