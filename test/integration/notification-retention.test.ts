/**
 * The notification history's retention (pruneNotifications, hourly in the delivery worker): finished
 * deliveries and read in-app notifications older than NOTIFY_RETENTION_DAYS go, and a user's unread ones beyond
 * the newest NOTIFY_UNREAD_MAX; pending deliveries and the newest unread notifications stay, whatever their age. Both tables grew without bound. The record of confirmation codes
 * mailed is kept one day (the span of their limits).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { uuidv7 } from '../../src/ids.ts';
import { pruneNotifications } from '../../src/services/notifications/store.ts';
import { backends } from '../helpers/db.ts';

const OLD = '2026-01-01T00:00:00Z';
const NEW = '2026-03-01T00:00:00Z';
const CUTOFF = new Date('2026-02-01T00:00:00Z');

for (const backend of backends)
  describe(`notification retention (${backend.name})`, () => {
    it('deletes old finished deliveries and old read notifications, nothing pending or unread', async () => {
      const { db, drop } = await backend.fresh();
      try {
        const delivery = (status: string, createdAt: string) =>
          db.query(
            `INSERT INTO notification_deliveries (id, event_id, channel, user_id, payload, status, next_attempt_at, created_at)
             VALUES ($1, $2, 'email', 'ann', '{}', $3, $4, $4)`,
            [uuidv7(), `e-${status}-${createdAt}`, status, createdAt],
          );
        const notification = (read: boolean, createdAt: string) =>
          db.query(
            `INSERT INTO notifications (id, user_id, delivery_id, reminder_id, task_id, title, body, remind_at, created_at, read_at)
             VALUES ($1, 'ann', $2, 'r', $3, 't', 'b', $4, $4, $5)`,
            [uuidv7(), uuidv7(), uuidv7(), createdAt, read ? createdAt : null],
          );
        for (const status of ['sent', 'dead', 'skipped', 'pending']) {
          await delivery(status, OLD);
          await delivery(status, NEW);
        }
        for (const read of [true, false]) {
          await notification(read, OLD);
          await notification(read, NEW);
        }
        const now = new Date(NEW);
        for (const hoursAgo of [25, 23])
          await db.query(
            `INSERT INTO email_code_sends (id, user_id, recipient, sent_at) VALUES ($1, 'ann', 'r', $2)`,
            [uuidv7(), new Date(now.getTime() - hoursAgo * 3_600_000).toISOString()],
          );
        assert.deepEqual(await pruneNotifications(db, CUTOFF, now, 1_000), {
          deliveries: 3,
          notifications: 1,
          unreadOverMax: 0,
        });
        const codes = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM email_code_sends');
        assert.equal(codes.rows[0]!.n, 1, 'the code mailed 23 hours ago is kept, the other one is not');
        const left = await db.query<{ status: string; old: boolean }>(
          `SELECT status, created_at < $1 AS old FROM notification_deliveries ORDER BY status, created_at`,
          [CUTOFF.toISOString()],
        );
        assert.deepEqual(
          left.rows.map((r) => `${r.status}${r.old ? ' (old)' : ''}`),
          ['dead', 'pending (old)', 'pending', 'sent', 'skipped'],
        );
        const inbox = await db.query<{ read: boolean; old: boolean }>(
          `SELECT read_at IS NOT NULL AS read, created_at < $1 AS old FROM notifications ORDER BY created_at, read_at NULLS FIRST`,
          [CUTOFF.toISOString()],
        );
        assert.deepEqual(
          inbox.rows.map((r) => `${r.read ? 'read' : 'unread'}${r.old ? ' (old)' : ''}`),
          ['unread (old)', 'unread', 'read'],
        );
        assert.deepEqual(await pruneNotifications(db, CUTOFF, now, 1_000), {
          deliveries: 0,
          notifications: 0,
          unreadOverMax: 0,
        });
      } finally {
        await drop();
      }
    });

    it("keeps each user's newest unread notifications up to the bound, whatever their age (an unread inbox grew for ever)", async () => {
      const { db, drop } = await backend.fresh();
      try {
        const notification = (user: string, minute: number, read = false) =>
          db.query(
            `INSERT INTO notifications (id, user_id, delivery_id, reminder_id, task_id, title, body, remind_at, created_at, read_at)
             VALUES ($1, $2, $3, 'r', $4, $5, 'b', $6, $6, $7)`,
            [
              uuidv7(),
              user,
              uuidv7(),
              uuidv7(),
              `${user}-${minute}`,
              new Date(Date.parse(NEW) + minute * 60_000).toISOString(),
              read ? NEW : null,
            ],
          );
        for (const minute of [1, 2, 3, 4, 5]) await notification('ann', minute);
        await notification('ann', 0, true); // read, younger than the retention: stays
        for (const minute of [1, 2]) await notification('bob', minute);
        const now = new Date(NEW);
        assert.deepEqual(await pruneNotifications(db, CUTOFF, now, 3), {
          deliveries: 0,
          notifications: 0,
          unreadOverMax: 2,
        });
        const left = await db.query<{ title: string }>('SELECT title FROM notifications ORDER BY title');
        assert.deepEqual(
          left.rows.map((r) => r.title),
          ['ann-0', 'ann-3', 'ann-4', 'ann-5', 'bob-1', 'bob-2'],
        );
        assert.equal((await pruneNotifications(db, CUTOFF, now, 3)).unreadOverMax, 0);
      } finally {
        await drop();
      }
    });
  });
