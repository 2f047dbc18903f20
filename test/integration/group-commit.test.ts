/**
 * Group commit of task creates (TaskStore.create outside a caller's transaction), on PGlite and PostgreSQL:
 * concurrent creates are written in fewer statements than creates; a create that the database refuses fails
 * alone while the others of its group are written with their events; and, with a server process killed
 * (SIGKILL) in the middle of a burst, every create it acknowledged (201) is there after the restart, with
 * exactly one task.created event.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { signDevToken } from '../../src/auth.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { EmbeddedLog } from '../../src/bus/embedded/log.ts';
import { openDb } from '../../src/store/db.ts';
import { TaskStore } from '../../src/store/tasks.ts';
import { TEST_SECRET, startApp, waitFor, writtenEvents } from '../helpers/app.ts';
import { backends, createPgDatabase } from '../helpers/db.ts';
import { plainFields } from '../helpers/events.ts';
import { startServer, type ServerProcess } from '../helpers/processes.ts';
import { migrate } from '../../src/store/migrate.ts';

const GROUP_KIND = 'with task: insert tasks + events';

for (const backend of backends) {
  for (const sink of ['outbox', 'embedded log'] as const) {
    describe(`group commit of task creates on ${backend.name}, events to the ${sink}`, async () => {
      const { db, drop } = await backend.fresh();
      after(drop);
      if (sink === 'embedded log') EmbeddedLog.of(db);
      const store = new TaskStore(db, new ManualClock('2026-03-01T12:00:00Z'));

      it('writes concurrent creates in fewer statements, each with its event', async () => {
        const before = db.statements.byKind.get(GROUP_KIND) ?? 0;
        const tasks = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            store.create(`user-${i % 4}`, plainFields(`burst-${i}`), { source: '/test' }),
          ),
        );
        const statements = (db.statements.byKind.get(GROUP_KIND) ?? 0) - before;
        assert.ok(statements < 40, `${statements} statements for 40 creates`);
        const events = (await writtenEvents(db)).filter((e) => e.event_type === 'task.created');
        for (const t of tasks)
          assert.equal(events.filter((e) => e.event.subject === t.id).length, 1, t.title);
        // One writer at a time on PGlite: per user, the events are in the order the creates were submitted.
        // (On PostgreSQL a few groups are written at once: concurrent requests commit in either order.)
        for (let u = 0; u < (backend.name === 'pglite' ? 4 : 0); u++) {
          const titles = events
            .filter((e) => e.key === `user-${u}` && String(e.event.data.task.title).startsWith('burst-'))
            .map((e) => Number(String(e.event.data.task.title).slice(6)));
          assert.deepEqual(
            titles,
            [...titles].sort((a, b) => a - b),
            `user-${u} in submit order`,
          );
        }
      });

      it('fails only the create the database refuses; the rest of its group is written', async () => {
        const titles = Array.from({ length: 12 }, (_, i) => (i === 5 ? 'bad\u0000title' : `group-${i}`));
        const results = await Promise.allSettled(
          titles.map((t) => store.create('gina', plainFields(t), { source: '/test' })),
        );
        assert.deepEqual(
          results.map((r) => r.status),
          titles.map((t) => (t.includes('\u0000') ? 'rejected' : 'fulfilled')),
        );
        const rows = await db.query<{ title: string }>(
          `SELECT title FROM tasks WHERE user_id = 'gina' ORDER BY title`,
        );
        assert.deepEqual(
          rows.rows.map((r) => r.title),
          titles.filter((t) => !t.includes('\u0000')).sort(),
        );
        const events = (await writtenEvents(db)).filter(
          (e) => e.key === 'gina' && e.event_type === 'task.created',
        );
        assert.equal(events.length, 11, 'one event per written task, none for the refused one');
      });
    });
  }
}

describe('group commit: admission control', () => {
  it(
    'answers 503 with Retry-After to a create while queued creates wait too long; the queued one is written',
    { timeout: 30_000 },
    async () => {
      const db = await openDb('memory://');
      await migrate(db);
      const app = await startApp(db, { targets: ['api'], env: { CREATE_QUEUE_MAX_MS: '200' } });
      try {
        // Another transaction holds PGlite's one connection: creates queue behind it.
        let release: () => void = () => undefined;
        const holding = db.transaction(() => new Promise<void>((r) => (release = r)));
        const queued = app.call('olga', 'POST', '/api/tasks', { title: 'waits' });
        // The condition: the queued create has waited longer than CREATE_QUEUE_MAX_MS (200 ms), as /metrics
        // reports it (however slow the machine is in getting the request there).
        await waitFor(
          async () => {
            const text = await (await fetch(`${app.url}/metrics`)).text();
            return Number(/^taskflow_create_queue_age_seconds (\S+)$/m.exec(text)?.[1] ?? 0) > 0.25;
          },
          20_000,
          'the queued create to wait past CREATE_QUEUE_MAX_MS',
        );
        const refused = await app.call('olga', 'POST', '/api/tasks', { title: 'refused' });
        assert.equal(refused.status, 503);
        assert.equal(refused.headers.get('retry-after'), '1');
        assert.match(refused.headers.get('content-type') ?? '', /^application\/problem\+json/);
        assert.match(refused.body.detail, /queued/);
        release();
        await holding;
        assert.equal((await queued).status, 201);
        assert.equal((await app.call('olga', 'POST', '/api/tasks', { title: 'later' })).status, 201);
        const titles = (await db.query<{ title: string }>(`SELECT title FROM tasks ORDER BY title`)).rows;
        assert.deepEqual(
          titles.map((t) => t.title),
          ['later', 'waits'],
        );
      } finally {
        await app.stop();
        await db.close();
      }
    },
  );
});

const pgUrl = process.env.TEST_DATABASE_URL;
describe(
  'group commit: a server killed in the middle of a burst',
  { skip: !pgUrl && 'needs TEST_DATABASE_URL' },
  () => {
    it('keeps every create it acknowledged, each with one event', async () => {
      const created = await createPgDatabase(pgUrl!);
      const db = await openDb(created.url);
      await migrate(db);
      let server: ServerProcess | undefined;
      try {
        server = await startServer(['api'], {
          DATABASE_URL: created.url,
          LOG_LEVEL: 'warn',
          BUS: 'embedded',
          JWT_SECRET: TEST_SECRET,
          RATE_LIMIT_PER_MINUTE: '0',
        });
        const { child, url } = server;
        const token = await signDevToken(TEST_SECRET, 'kim');
        const acknowledged: string[] = [];
        let sent = 0;
        const post = async (i: number) => {
          sent++;
          const res = await fetch(`${url}/api/tasks`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ title: `kill-${i}` }),
          });
          if (res.status === 201) acknowledged.push(((await res.json()) as { id: string }).id);
        };
        // Waves of 20 concurrent creates until the kill; requests in flight then fail on the client.
        const load = (async () => {
          for (let wave = 0; child.exitCode === null && child.signalCode === null; wave++)
            await Promise.allSettled(Array.from({ length: 20 }, (_, j) => post(wave * 20 + j)));
        })();
        await waitFor(() => acknowledged.length >= 200, 60_000, '200 acknowledged creates');
        child.kill('SIGKILL');
        await load;
        assert.ok(sent > acknowledged.length, 'some creates were in flight at the kill');
        const rows = await db.query<{ id: string }>(`SELECT id::text AS id FROM tasks WHERE user_id = 'kim'`);
        const stored = new Set(rows.rows.map((r) => r.id));
        assert.deepEqual(
          acknowledged.filter((id) => !stored.has(id)),
          [],
          'every acknowledged create is stored',
        );
        const events = (await writtenEvents(db)).filter(
          (e) => e.event_type === 'task.created' && e.key === 'kim',
        );
        for (const id of stored)
          assert.equal(events.filter((e) => e.event.subject === id).length, 1, `one event for task ${id}`);
      } finally {
        server?.child.kill('SIGKILL');
        await db.close();
        await created.drop();
      }
    });
  },
);
