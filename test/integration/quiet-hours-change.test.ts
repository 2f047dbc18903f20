/**
 * A change of quiet hours looks again at what they hold, and only that (migration 023): it moved every pending
 * delivery of the user to now, one waiting out a receiver's Retry-After too, so a receiver that asked for 10
 * minutes was asked again within a second, an attempt counted (README: "not tried again before then"). What
 * quiet hours held is sent once they are turned off: reminders.test.ts. What they hold is known by its time
 * (`held_until`), which any other deferral moves away from, a previous version's worker's too.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ManualClock } from '../../src/domain/clock.ts';
import { uuidv7 } from '../../src/ids.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import {
  claimDeliveries,
  enqueueDeliveries,
  putPreferences,
} from '../../src/services/notifications/store.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { backends, postgresBackend } from '../helpers/db.ts';
import { startWebhookSink } from '../helpers/sinks.ts';

const START = '2026-03-01T12:00:00Z';

for (const backend of backends)
  describe(`a change of quiet hours while a webhook waits out its Retry-After (${backend.name})`, () => {
    let sink: Awaited<ReturnType<typeof startWebhookSink>>;
    let db: Db;
    let drop: () => Promise<void>;
    let app: TestApp;
    const clock = new ManualClock(START);
    before(async () => {
      sink = await startWebhookSink((path) =>
        path === '/busy' ? { status: 429, headers: { 'retry-after': '600' } } : 200,
      );
      ({ db, drop } = await backend.fresh());
      app = await startApp(db, {
        clock,
        targets: [createNotificationsTarget({ tickMs: 20, webhookAllowPrivate: true, retryBaseMs: 1_000 })],
      });
    });
    after(async () => {
      await app?.stop();
      await drop?.();
      await sink?.close();
    });

    it('does not send it before the time the receiver asked for', async () => {
      await db.query(
        `INSERT INTO notification_preferences (user_id, webhook_enabled, webhook_url, webhook_secret)
       VALUES ('max', true, $1, 'whsec_0123456789abcdef0123456789abcdef')`,
        [`${sink.url}/busy`],
      );
      const id = uuidv7();
      await db.query(
        `INSERT INTO notification_deliveries (id, event_id, channel, user_id, payload, status, next_attempt_at)
       VALUES ($1, $2, 'webhook', 'max', $3::jsonb, 'pending', $4::timestamptz)`,
        [
          id,
          `ev-${id}`,
          JSON.stringify({
            reminder_id: uuidv7(),
            task_id: uuidv7(),
            user_id: 'max',
            title: 'Pay rent',
            remind_at: '2026-03-01T11:59:00.000Z',
            triggered_at: '2026-03-01T11:59:00.000Z',
            due_at: '2026-03-01T13:00:00.000Z',
            reason: 'scheduled',
            channels: ['webhook'],
          }),
          new Date(Date.parse(START) - 1_000),
        ],
      );
      await waitFor(
        async () =>
          (
            await db.query<{ attempts: number; claimed_by: string | null }>(
              'SELECT attempts, claimed_by FROM notification_deliveries WHERE id = $1',
              [id],
            )
          ).rows.some((r) => r.attempts === 1 && r.claimed_by === null),
        10_000,
        'the first attempt to be recorded',
      );
      assert.equal(sink.calls.length, 1);
      // Quiet hours at night, nowhere near 12:00 UTC: nothing to do with this delivery.
      const put = await app.call('max', 'PUT', '/api/notifications/preferences', {
        quiet_hours: { start: '23:00', end: '06:00', timezone: 'UTC' },
      });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      // The clock does not move: the receiver's 600 s are not over. Let the loop tick (every 20 ms) a while.
      await new Promise((r) => setTimeout(r, 1_500));
      const row = (
        await db.query<{ attempts: number; wait_s: number }>(
          `SELECT attempts, extract(epoch FROM next_attempt_at - $2::timestamptz)::int AS wait_s
           FROM notification_deliveries WHERE id = $1`,
          [id, clock.now().toISOString()],
        )
      ).rows[0]!;
      assert.equal(
        sink.calls.length,
        1,
        'asked again inside its Retry-After (600 s) with the clock not moved',
      );
      assert.deepEqual([row.attempts, row.wait_s], [1, 600]);
    });
  });

describe(
  'a change of quiet hours during a rolling upgrade',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    let db: Db;
    let drop: () => Promise<void>;
    before(async () => ({ db, drop } = await postgresBackend!.fresh()));
    after(async () => drop?.());

    it("keeps the retry time a previous version's worker gave a delivery quiet hours had held", async () => {
      const quietEnd = new Date('2026-03-02T07:00:00Z');
      await putPreferences(
        db,
        'u1',
        {
          quiet_hours: { start: '22:00', end: '07:00', timezone: 'UTC' },
          webhook_url: 'https://example.com/h',
        },
        new Date('2026-03-01T23:00:00Z'),
      );
      const data = {
        reminder_id: uuidv7(),
        task_id: uuidv7(),
        user_id: 'u1',
        title: 'Pay rent',
        remind_at: '2026-03-01T23:00:00.000Z',
        due_at: null,
        channels: ['webhook'],
      };
      await enqueueDeliveries(db, `ev-${uuidv7()}`, data as never, [
        { channel: 'webhook', at: quietEnd, heldByQuietHours: true },
      ]);
      // At the window's end a worker of the previous version claims it, and the receiver answers 429 with
      // Retry-After: 600; that worker's deferral knows nothing of held_until.
      const [row] = await claimDeliveries(db, 'old-worker', quietEnd, 10, 60_000, 10);
      assert.ok(row);
      const retryAt = new Date(quietEnd.getTime() + 600_000);
      await db.query(
        `UPDATE notification_deliveries SET next_attempt_at = $3, claimed_by = NULL,
              attempts = attempts - CASE WHEN $4 THEN 0 ELSE 1 END, last_error = coalesce($5, last_error)
        WHERE id = $1 AND claimed_by = $2 AND status = 'pending'`,
        [row.id, 'old-worker', retryAt.toISOString(), true, 'webhook answered 429'],
      );
      await putPreferences(
        db,
        'u1',
        { quiet_hours: { start: '23:00', end: '06:00', timezone: 'UTC' } },
        new Date(quietEnd.getTime() + 60_000),
      );
      const { rows } = await db.query<{ next_attempt_at: Date }>(
        'SELECT next_attempt_at FROM notification_deliveries WHERE id = $1',
        [row.id],
      );
      assert.equal(
        rows[0]!.next_attempt_at.toISOString(),
        retryAt.toISOString(),
        'the Retry-After is waited out',
      );
    });
  },
);
