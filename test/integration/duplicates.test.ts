/**
 * Duplicate delivery to every consumer (audit, recurrence, reminders, notifications) with the
 * whole system in one process on the embedded bus, on PGlite and PostgreSQL. Consumers are at-least-once, so
 * the same CloudEvent (same id) can arrive again: twice in one batch, then once more on its own. Each must
 * leave exactly one effect and dead-letter nothing.
 *
 * No sleeps: after the copies, a sentinel (a new event of the same key, so in the same partition after them)
 * is published, and the test waits for the sentinel's effect in the consumer under test. Per-partition order
 * then proves the copies were handled (or dead-lettered) before the assertions run.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import type { TaskEventData } from '../../src/contracts/events.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { GROUPS } from '../../src/services/index.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { verifyChain } from '../../src/services/audit/chain.ts';
import type { Db } from '../../src/store/db.ts';
import { startApp, waitFor, writtenEvents, type TestApp } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { deadLetterLines } from '../helpers/dlq.ts';
import { sentinelOf } from '../helpers/events.ts';

const WAIT = 30_000;
const HOUR = 3_600_000;
const USER = 'dupe';

for (const backend of backends) {
  describe(`duplicate delivery to every consumer on ${backend.name}`, () => {
    let db: Db;
    let drop: () => Promise<void>;
    let app: TestApp;
    const clock = new ManualClock('2026-03-01T12:00:00Z');
    /** The events of the scenario, as the producers stored them. */
    let created: CloudEvent<TaskEventData>;
    let completed: CloudEvent<TaskEventData>;
    let triggered: CloudEvent;
    let taskId: string;
    /** A task whose due date moved (its reminder dismissed, a new one scheduled): created, then updated. */
    let moved: { id: string; created: CloudEvent<TaskEventData>; updated: CloudEvent<TaskEventData> };

    const rows = async <T extends object>(sql: string, params: unknown[] = []) =>
      (await db.query<T>(sql, params)).rows;
    const exists = async (sql: string, params: unknown[]) => (await rows(sql, params)).length > 0;
    /** The ids of the sentinels the test published (their effects are not the system's own events). */
    const sentinelIds = new Set<string>();
    /**
     * The events of `type` the system wrote (outbox or embedded log) about `taskId` (or by USER), in commit
     * order, each once: the copies the test publishes share their original's id, and sentinels are left out.
     */
    const written = async (type: string, taskId?: string) => {
      const seen = new Set<string>();
      return (await writtenEvents(db))
        .map((e) => e.event as CloudEvent<any>)
        .filter(
          (e) =>
            e.type === type &&
            (taskId === undefined
              ? e.partitionkey === USER
              : (e.data?.task_id ?? e.data?.task?.id ?? e.subject) === taskId) &&
            !sentinelIds.has(e.id) &&
            !seen.has(e.id) &&
            seen.add(e.id),
        );
    };
    const deadLetters = (group: string) => deadLetterLines(app.proc.runtime.bus.admin, group);

    /** What shows that `group` has handled `sentinel` (its effect, in the transaction of its event id). */
    const handled: Record<string, (sentinel: CloudEvent<any>) => Promise<boolean>> = {
      [GROUPS.audit]: (s) => exists('SELECT 1 FROM audit_log WHERE event_id = $1', [s.id]),
      [GROUPS.reminders]: (s) => exists('SELECT 1 FROM reminder_tasks WHERE task_id = $1', [s.data.task.id]),
      // The sentinel's task is in no store: its completion waits for the task's deletion (recurrence/series.ts).
      [GROUPS.recurrence]: (s) =>
        exists(
          `SELECT 1 FROM recurrence_occurrences WHERE source_task_id = $1
           UNION ALL SELECT 1 FROM processed_events
            WHERE consumer = 'taskflow-recurrence/completion-of-a-deleted-task' AND event_id = $2`,
          [s.data.task.id, String(s.data.task.id)],
        ),
      [GROUPS.notifications]: (s) =>
        exists('SELECT 1 FROM notification_deliveries WHERE event_id = $1', [s.id]),
    };

    /**
     * Delivers `event` again to `topic`: two copies in one publish (one batch, most likely), then one more on
     * its own, each followed by a sentinel; waits until `group` handled both sentinels. Returns the sentinels.
     */
    async function redeliver(group: string, topic: string, event: CloudEvent<any>) {
      const sentinels: CloudEvent<any>[] = [];
      for (const copies of [2, 1]) {
        const sentinel = sentinelOf(event);
        sentinels.push(sentinel);
        sentinelIds.add(sentinel.id);
        await app.proc.runtime.bus.publisher.publish(
          [...Array.from({ length: copies }, () => event), sentinel].map((e) => ({
            topic,
            key: USER,
            event: e,
          })),
        );
        await waitFor(
          () => handled[group]!(sentinel),
          WAIT,
          `${group} to handle the sentinel after the copies`,
        );
      }
      return sentinels;
    }

    before(async () => {
      ({ db, drop } = await backend.fresh());
      app = await startApp(db, {
        clock,
        env: { REMINDER_TICK_MS: '20', NOTIFY_TICK_MS: '20' },
        targets: ['api', 'relay', 'reminders', 'recurrence', 'notifications', 'audit'],
      });
      // A recurring task with a reminder; the reminder fires (an in-app notification), then it is completed
      // (the next occurrence). Every consumer has handled its events once.
      const r = await app.call(USER, 'POST', '/api/tasks', {
        title: 'Water plants',
        due_date: '2026-03-01T14:00:00Z',
        reminders: ['PT1H'],
        recurrence: 'daily',
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      taskId = r.body.id;
      await waitFor(
        async () => (await written('reminder.scheduled', taskId)).length === 1,
        WAIT,
        'scheduled',
      );
      clock.advance(HOUR + 1_000);
      const [fired] = await waitFor(
        async () => {
          const list = await written('reminder.triggered', taskId);
          return list.length > 0 && list;
        },
        WAIT,
        'the reminder to fire',
      );
      triggered = fired!;
      await waitFor(
        () => exists(`SELECT 1 FROM notifications WHERE task_id = $1`, [taskId]),
        WAIT,
        'the in-app notification',
      );
      assert.equal((await app.call(USER, 'POST', `/api/tasks/${taskId}/complete`)).status, 200);
      await waitFor(
        () => exists('SELECT 1 FROM recurrence_occurrences WHERE source_task_id = $1', [taskId]),
        WAIT,
        'the next occurrence',
      );
      created = (await written('task.created', taskId))[0]!;
      completed = (await written('task.completed', taskId))[0]!;
      const m = await app.call(USER, 'POST', '/api/tasks', {
        title: 'Move house',
        due_date: '2026-03-02T10:00:00Z',
        reminders: ['PT1H'],
      });
      assert.equal(m.status, 201, JSON.stringify(m.body));
      const patched = await app.call(USER, 'PATCH', `/api/tasks/${m.body.id}`, {
        due_date: '2026-03-02T12:00:00Z',
      });
      assert.equal(patched.status, 200, JSON.stringify(patched.body));
      await waitFor(
        async () => (await written('reminder.scheduled', m.body.id)).length === 2,
        WAIT,
        'the moved reminder',
      );
      moved = {
        id: m.body.id,
        created: (await written('task.created', m.body.id))[0]!,
        updated: (await written('task.updated', m.body.id))[0]!,
      };
      // Each consumer handles the originals before the copies: they are earlier in the same partitions.
    });
    after(async () => {
      await app?.stop();
      await drop?.();
    });

    it('audit: one record per event, the chain intact, nothing dead-lettered', async () => {
      await redeliver(GROUPS.audit, TOPICS.taskEvents, created);
      await redeliver(GROUPS.audit, TOPICS.taskEvents, completed);
      await redeliver(GROUPS.audit, TOPICS.reminders, triggered);
      for (const e of [created, completed, triggered])
        assert.equal(
          (await rows('SELECT 1 FROM audit_log WHERE event_id = $1', [e.id])).length,
          1,
          `${e.type} recorded once`,
        );
      // Gap-free user_seq, each record chained to the one before, the head on the last one.
      const chain = await verifyChain(db, { userId: USER });
      assert.equal(chain.ok, true, JSON.stringify(chain.broken));
      assert.deepEqual(await deadLetters(GROUPS.audit), []);
    });

    it('reminders: the schedule and its events unchanged, nothing dead-lettered', async () => {
      const snapshot = async (taskId: string) => ({
        events: (
          await Promise.all(
            ['reminder.dismissed', 'reminder.missed', 'reminder.scheduled', 'reminder.triggered'].map(
              async (type) => `${type}=${(await written(type, taskId)).length}`,
            ),
          )
        ).filter((x) => !x.endsWith('=0')),
        schedule: await rows(
          `SELECT id::text, status, dismiss_reason, fire_count, remind_at FROM reminder_schedule
            WHERE task_id = $1 ORDER BY id`,
          [taskId],
        ),
      });
      const before = await snapshot(taskId);
      // Fired, then retired by the completion (one reminder.dismissed, so nothing held of it is sent).
      assert.deepEqual(before.events, [
        'reminder.dismissed=1',
        'reminder.scheduled=1',
        'reminder.triggered=1',
      ]);
      assert.equal(before.schedule.length, 1);
      const movedBefore = await snapshot(moved.id);
      assert.deepEqual(movedBefore.events, ['reminder.dismissed=1', 'reminder.scheduled=2']);
      await redeliver(GROUPS.reminders, TOPICS.taskEvents, created);
      await redeliver(GROUPS.reminders, TOPICS.taskEvents, completed);
      await redeliver(GROUPS.reminders, TOPICS.taskEvents, moved.created);
      await redeliver(GROUPS.reminders, TOPICS.taskEvents, moved.updated);
      assert.deepEqual(await snapshot(taskId), before);
      assert.deepEqual(await snapshot(moved.id), movedBefore);
      assert.deepEqual(await deadLetters(GROUPS.reminders), []);
    });

    it('recurrence: one next occurrence, nothing dead-lettered', async () => {
      await redeliver(GROUPS.recurrence, TOPICS.taskEvents, completed);
      const series = await rows<{ i: number; source: string | null }>(
        `SELECT occurrence_index AS i, source_task_id::text AS source FROM recurrence_occurrences
          WHERE series_id = $1 ORDER BY occurrence_index`,
        [taskId],
      );
      assert.deepEqual(
        series.map((r) => r.i),
        [1, 2],
      );
      const tasks = await rows('SELECT id FROM tasks WHERE series_id = $1', [taskId]);
      assert.equal(tasks.length, 2, 'the completed task and one next occurrence');
      assert.deepEqual(await deadLetters(GROUPS.recurrence), []);
    });

    it('notifications: one delivery per channel, one in-app notification, nothing dead-lettered', async () => {
      await redeliver(GROUPS.notifications, TOPICS.reminders, triggered);
      const deliveries = await rows<{ channel: string }>(
        'SELECT channel FROM notification_deliveries WHERE event_id = $1 ORDER BY channel',
        [triggered.id],
      );
      assert.deepEqual(
        deliveries.map((d) => d.channel),
        ['in_app'],
      );
      const inbox = await rows('SELECT 1 FROM notifications WHERE reminder_id = $1', [
        (triggered.data as { reminder_id: string }).reminder_id,
      ]);
      assert.equal(inbox.length, 1);
      assert.deepEqual(await deadLetters(GROUPS.notifications), []);
    });
  });
}
