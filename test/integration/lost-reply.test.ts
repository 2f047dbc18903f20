/**
 * A create whose statement PostgreSQL committed but whose answer never reached the server (the connection
 * dropped in between: a proxy, a failover, a network blip). It was answered 503 "not applied; retry", and a
 * client that retried made the task twice; two creates of one group were written again one at a time and
 * answered 500 on their own ids. A TCP proxy between the server and PostgreSQL drops the connection that
 * carries the task INSERT as soon as PostgreSQL answers it. And one whose statement PostgreSQL committed after
 * the server's read of whether it had (the statement ran on past its dropped connection, waiting on a lock):
 * the read found nothing and the create was answered 503 "not applied" (a group's creates, written again, were
 * refused on their own events' ids); modelled by a Db that throws the INSERT as a dropped connection and runs
 * it when the server next reads (before that read answers) or writes (the write waits for it: before it).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EmbeddedLog } from '../../src/bus/embedded/log.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { TaskStore } from '../../src/store/tasks.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { backends, postgresBackend } from '../helpers/db.ts';
import { plainFields } from '../helpers/events.ts';
import { startTcpProxy, type ProxiedConnection } from '../helpers/tcp-proxy.ts';

/** Forwards to `target`; once armed, the connection that sends a task INSERT is cut when its answer comes. */
async function startCuttingProxy(target: URL) {
  let armed = false;
  let cuts = 0;
  const carriesInsert = new WeakSet<ProxiedConnection>();
  const proxy = await startTcpProxy(target, (chunk, to, direction, connection) => {
    if (direction === 'to-server') {
      if (armed && chunk.includes('INSERT INTO tasks')) carriesInsert.add(connection);
    } else if (carriesInsert.has(connection)) {
      armed = false;
      carriesInsert.delete(connection);
      cuts++;
      return connection.close();
    }
    to.write(chunk);
  });
  return { ...proxy, arm: () => void (armed = true), cuts: () => cuts };
}

describe(
  'a create committed whose answer was lost',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    let fresh: Awaited<ReturnType<NonNullable<typeof postgresBackend>['fresh']>>;
    let proxy: Awaited<ReturnType<typeof startCuttingProxy>>;
    let db: Db;
    let app: TestApp;
    before(async () => {
      fresh = await postgresBackend!.fresh();
      proxy = await startCuttingProxy(new URL(fresh.url));
      db = await openDb(proxy.url);
      app = await startApp(db, { targets: ['api'] });
    });
    after(async () => {
      await app?.stop();
      await db?.close();
      await proxy?.close();
      await fresh?.drop();
    });
    const tasksTitled = async (title: string) =>
      (await fresh.db.query<{ n: number }>('SELECT count(*)::int AS n FROM tasks WHERE title = $1', [title]))
        .rows[0]!.n;

    it('is answered 201 with the task it made, once', async () => {
      proxy.arm();
      const r = await app.call('ann', 'POST', '/api/tasks', { title: 'lost answer' });
      assert.equal(proxy.cuts(), 1, 'the premise: the connection was cut after the INSERT');
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(await tasksTitled('lost answer'), 1);
      assert.equal((await app.call('ann', 'GET', `/api/tasks/${r.body.id}`)).status, 200);
    });

    it('answers every create of a group whose answer was lost with its task', async () => {
      proxy.arm();
      const answers = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          app.call(`user-${i}`, 'POST', '/api/tasks', { title: 'lost group answer' }),
        ),
      );
      assert.equal(proxy.cuts(), 2);
      assert.deepEqual(
        answers.map((a) => a.status),
        answers.map(() => 201),
        JSON.stringify(answers.map((a) => a.body)),
      );
      assert.equal(await tasksTitled('lost group answer'), 6);
    });
  },
);

/**
 * `real`, with its next task INSERT of at least `rows` rows lost: thrown as a dropped connection, and committed
 * after the next read's answer (a read does not wait for it) or before the next write (a write of the same
 * rows waits for its locks).
 */
function losingFirstInsert(real: Db, rows = 1): Db {
  let armed = true;
  let pending: { sql: string; params: readonly unknown[] } | undefined;
  const lost = Object.create(real) as Db;
  const commitPending = async () => {
    const p = pending;
    pending = undefined;
    if (p) await real.query(p.sql, p.params);
  };
  (lost as { query: Db['query'] }).query = (async (sql: string, params: readonly unknown[] = []) => {
    if (armed && sql.includes('INSERT INTO tasks') && params.length >= rows * 17) {
      armed = false;
      pending = { sql, params };
      throw new Error('Connection terminated unexpectedly');
    }
    if (pending && sql.startsWith('SELECT')) {
      const seen = await real.query(sql, params);
      await commitPending();
      return seen;
    }
    if (pending && sql.includes('INSERT INTO tasks')) await commitPending();
    return real.query(sql, params);
  }) as Db['query'];
  return lost;
}

for (const backend of backends)
  for (const sink of ['outbox', 'embedded log'] as const)
    describe(`a create committed after its lost answer was asked about (${backend.name}, ${sink})`, () => {
      const created = async (db: Db, notTitle: string) => ({
        titles: (
          await db.query<{ title: string }>(`SELECT title FROM tasks WHERE title <> $1 ORDER BY title`, [
            notTitle,
          ])
        ).rows.map((r) => r.title),
        events: (
          await db.query<{ n: number }>(
            `SELECT ((SELECT count(*) FROM outbox WHERE event_type = 'task.created') +
                     (SELECT count(*) FROM bus_messages WHERE value->>'type' = 'task.created'))::int AS n`,
          )
        ).rows[0]!.n,
      });
      const outcome = (r: PromiseSettledResult<unknown>) =>
        r.status === 'rejected' ? String((r.reason as Error).message) : 'ok';

      it('answers each create of a group of two with its task, each written once', async () => {
        const { db, drop } = await backend.fresh();
        try {
          if (sink === 'embedded log') EmbeddedLog.of(db);
          const store = new TaskStore(losingFirstInsert(db, 2), new ManualClock('2026-03-01T12:00:00Z'));
          // The first create is written alone; the two that come during its write make one group.
          const first = store.create('ann', plainFields('first'), { source: '/test' });
          const results = await Promise.allSettled(
            ['a', 'b'].map((t) => store.create('ann', plainFields(t), { source: '/test' })),
          );
          await first;
          assert.deepEqual(await created(db, 'first'), { titles: ['a', 'b'], events: 3 });
          assert.deepEqual(results.map(outcome), ['ok', 'ok']);
        } finally {
          await drop();
        }
      });

      it('answers a lone create with its task, written once, not 503 "not applied"', async () => {
        const { db, drop } = await backend.fresh();
        try {
          if (sink === 'embedded log') EmbeddedLog.of(db);
          const store = new TaskStore(losingFirstInsert(db), new ManualClock('2026-03-01T12:00:00Z'));
          const r = await Promise.allSettled([store.create('bob', plainFields('lone'), { source: '/test' })]);
          assert.deepEqual(await created(db, ''), { titles: ['lone'], events: 1 });
          assert.deepEqual(r.map(outcome), ['ok']);
        } finally {
          await drop();
        }
      });
    });
