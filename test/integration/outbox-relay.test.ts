/**
 * API → outbox → relay → embedded bus → consumer group, across a restart of the whole process: every event
 * exactly once, in commit order per user, positions persisted; a throwing handler is retried then
 * dead-lettered.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { listDeadLetters } from '../../src/bus/dlq.ts';
import type { Subscription } from '../../src/bus/types.ts';
import { openDb } from '../../src/store/db.ts';
import { startApp, waitFor } from '../helpers/app.ts';

describe('outbox relay on the embedded bus', () => {
  it('delivers every API event once, in order per user, across a process restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskflow-relay-'));
    const received: { key: string; title: string; type: string; id: string }[] = [];
    const collect = async (app: Awaited<ReturnType<typeof startApp>>): Promise<Subscription> =>
      app.proc.runtime.bus.subscriber.subscribe({
        group: 'order-check',
        topics: ['task-events'],
        handler: async (m) => {
          const data = m.event.data as { task: { title: string } };
          received.push({ key: m.key, title: data.task.title, type: m.event.type, id: m.event.id });
        },
      });
    try {
      let db = await openDb(dir);
      let app = await startApp(db, { targets: ['api', 'relay'] });
      let sub = await collect(app);
      const users = ['ann', 'bob', 'cid'];
      for (let i = 0; i < 45; i++) {
        const user = users[i % 3]!;
        const t = (await app.call(user, 'POST', '/api/tasks', { title: `${user}-${i}` })).body;
        if (i % 5 === 0)
          await app.call(user, 'PATCH', `/api/tasks/${t.id}`, { title: `${user}-${i}-edited` });
      }
      await waitFor(() => received.length >= 54, 30_000, 'first 54 events');
      await sub.close();
      await app.stop();
      await db.close();

      // A new process on the same data directory: positions and the log survive.
      db = await openDb(dir);
      app = await startApp(db, { targets: ['api', 'relay'] });
      for (let i = 45; i < 60; i++)
        await app.call(users[i % 3]!, 'POST', '/api/tasks', { title: `${users[i % 3]}-${i}` });
      sub = await collect(app);
      await waitFor(() => received.length >= 69, 30_000, 'events after the restart');
      // Barrier before "exactly once": one more task per user, after the events under test in that user's
      // partition; once each has arrived, so has any event that was going to come again.
      for (const user of users) await app.call(user, 'POST', '/api/tasks', { title: `${user}-sentinel` });
      await waitFor(
        () => users.every((u) => received.some((r) => r.title === `${u}-sentinel`)),
        30_000,
        'a sentinel task of each user',
      );
      await sub.close();
      await app.stop();
      await db.close();

      assert.equal(received.length, 69 + users.length, 'exactly once');
      assert.equal(new Set(received.map((r) => r.id)).size, 69 + users.length);
      for (const user of users) {
        const mine = received.filter((r) => r.key === user && !r.title.endsWith('-sentinel'));
        const order = mine.map((r) => Number(r.title.split('-')[1]));
        assert.deepEqual(
          order,
          [...order].sort((a, b) => a - b),
          `${user}: commit order`,
        );
        assert.equal(mine.filter((r) => r.type === 'task.updated').length, 3);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('retries a throwing consumer, then dead-letters the event and moves on', async () => {
    const db = await openDb('memory://');
    const app = await startApp(db, { targets: ['api', 'relay'] });
    try {
      let calls = 0;
      const handled: string[] = [];
      const sub = await app.proc.runtime.bus.subscriber.subscribe({
        group: 'taskflow-audit',
        topics: ['task-events'],
        handler: async (m) => {
          const title = (m.event.data as { task: { title: string } }).task.title;
          if (title === 'bad') {
            calls++;
            throw new Error('handler bug');
          }
          handled.push(title);
        },
      });
      await app.call('dee', 'POST', '/api/tasks', { title: 'bad' });
      await app.call('dee', 'POST', '/api/tasks', { title: 'good' });
      await waitFor(() => handled.includes('good'), 20_000, 'the next event');
      assert.equal(calls, 3, 'CONSUMER_MAX_ATTEMPTS=3 in tests');
      const [letter] = await listDeadLetters(app.proc.runtime.bus.admin, 'taskflow-audit');
      assert.match(letter!.error, /handler bug/);
      assert.equal(letter!.attempts, 3);
      await sub.close();
    } finally {
      await app.stop();
      await db.close();
    }
  });
});
