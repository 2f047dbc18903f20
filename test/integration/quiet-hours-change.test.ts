/**
 * A change of quiet hours looks again at what they hold, and only that (migration 023): it moved every pending
 * delivery of the user to now, one waiting out a receiver's Retry-After too, so a receiver that asked for 10
 * minutes was asked again within a second, an attempt counted (README: "not tried again before then"). What
 * quiet hours held is sent once they are turned off: reminders.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ManualClock } from '../../src/domain/clock.ts';
import { uuidv7 } from '../../src/ids.ts';
import { createNotificationsTarget } from '../../src/services/notifications/index.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
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
