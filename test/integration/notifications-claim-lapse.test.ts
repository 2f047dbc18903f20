/**
 * A delivery whose claim lapsed before its send: two notifications targets on one PostgreSQL database (two
 * instances, each its own pool), the real clock, a webhook receiver on 127.0.0.1. The first instance claims the
 * delivery and then waits, past its claim, on its read of the recipient's preferences (another connection holds
 * an ACCESS EXCLUSIVE lock on notification_preferences, as a migration's ALTER TABLE would); the second
 * claims it once the claim has lapsed. When the lock goes both go on: the receiver must be called once (the
 * first instance sent it too, after its claim, and the reminder went out twice).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { ReminderEventData } from '../../src/contracts/events.ts';
import { systemClock } from '../../src/domain/clock.ts';
import { uuidv7 } from '../../src/ids.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';
import { startWebhookSink } from '../helpers/sinks.ts';

const CLAIM_MS = 2_000;
const TIMEOUT_MS = 500;

function reminder(user: string): ReminderEventData {
  const at = new Date(Date.now() - 60_000).toISOString();
  return {
    reminder_id: uuidv7(),
    task_id: uuidv7(),
    user_id: user,
    title: 'Pay rent',
    remind_at: at,
    triggered_at: at,
    due_at: new Date(Date.now() + 3_600_000).toISOString(),
    reason: 'scheduled',
    channels: ['webhook'],
  };
}

type Claim = { status: string; attempts: number; claimed_by: string | null };

async function claimOf(db: Db, id: string): Promise<Claim> {
  const r = await db.query<Claim>(
    'SELECT status, attempts, claimed_by FROM notification_deliveries WHERE id = $1',
    [id],
  );
  return r.rows[0]!;
}

/** A notifications target alone, on the real clock, with a short claim; `tickMs` how often it looks when idle. */
const instance = (db: Db, tickMs: number) =>
  startApp(db, {
    clock: systemClock,
    targets: [
      createNotificationsTarget({
        webhookAllowPrivate: true,
        claimMs: CLAIM_MS,
        timeoutMs: TIMEOUT_MS,
        tickMs,
      }),
    ],
  });

describe(
  'a delivery whose sender stalled past its claim',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    let db: Db;
    let secondDb: Db | undefined;
    let drop: () => Promise<void> = async () => {};
    let locker: pg.Client | undefined;
    let receiver: Awaited<ReturnType<typeof startWebhookSink>>;
    const apps: TestApp[] = [];

    before(async () => {
      const fresh = await postgresBackend!.fresh();
      ({ db, drop } = fresh);
      secondDb = await openDb(fresh.url);
      locker = new pg.Client({ connectionString: fresh.url });
      await locker.connect();
      receiver = await startWebhookSink();
    });

    after(async () => {
      await locker?.query('ROLLBACK').catch(() => undefined);
      await locker?.end().catch(() => undefined);
      for (const app of apps) await app.stop().catch(() => undefined);
      await secondDb?.close();
      await receiver?.close();
      await drop();
    });

    it('is sent once: by the instance that claimed it again, not also by the stalled one', async () => {
      await db.query(
        `INSERT INTO notification_preferences (user_id, webhook_enabled, webhook_url, webhook_secret)
         VALUES ('rita', true, $1, 'whsec_0123456789abcdef0123456789abcdef')`,
        [`${receiver.url}/hook/rita`],
      );
      const id = uuidv7();
      await db.query(
        `INSERT INTO notification_deliveries (id, event_id, channel, user_id, payload, status, next_attempt_at)
         VALUES ($1, $2, 'webhook', 'rita', $3::jsonb, 'pending', $4::timestamptz)`,
        [id, `ev-${id}`, JSON.stringify(reminder('rita')), new Date(Date.now() - 1_000)],
      );
      // Until released, every read of a recipient's preferences waits: the first instance's claim runs out
      // between its claim and its send.
      await locker!.query('BEGIN');
      await locker!.query('LOCK TABLE notification_preferences IN ACCESS EXCLUSIVE MODE');

      // The first instance looks once (at its start) within the test: only the second can claim it again.
      apps.push(await instance(db, 60_000));
      const first = await waitFor(
        async () => {
          const c = await claimOf(db, id);
          return c.claimed_by !== null && c;
        },
        10_000,
        'the first instance to claim the delivery',
      );
      assert.equal(first.attempts, 1);

      apps.push(await instance(secondDb!, 50));
      const second = await waitFor(
        async () => {
          const c = await claimOf(db, id);
          return c.attempts === 2 && c;
        },
        CLAIM_MS + 10_000,
        'the second instance to claim the delivery once the first claim lapsed',
      );
      assert.notEqual(second.claimed_by, first.claimed_by, 'claimed again by the other instance');

      // Both read the preferences now: the second sends under its fresh claim, the first must not.
      await locker!.query('COMMIT');
      await waitFor(async () => (await claimOf(db, id)).status === 'sent', 10_000, 'the delivery to be sent');
      // Stopping waits for the deliveries in flight: the first instance's has ended too.
      for (const app of apps.splice(0)) await app.stop();

      const calls = receiver.calls.filter((c) => c.path === '/hook/rita');
      assert.equal(
        calls.length,
        1,
        `the receiver got the delivery ${calls.length} times (one sender's claim had lapsed)`,
      );
      assert.equal(calls[0]!.headers['x-taskflow-delivery'], id);
      const done = await claimOf(db, id);
      assert.deepEqual([done.status, done.claimed_by], ['sent', null]);
    });
  },
);
