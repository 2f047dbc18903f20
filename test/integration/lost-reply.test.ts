/**
 * A create whose statement PostgreSQL committed but whose answer never reached the server (the connection
 * dropped in between: a proxy, a failover, a network blip). It was answered 503 "not applied; retry", and a
 * client that retried made the task twice; two creates of one group were written again one at a time and
 * answered 500 on their own ids. A TCP proxy between the server and PostgreSQL drops the connection that
 * carries the task INSERT as soon as PostgreSQL answers it.
 */
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { openDb, type Db } from '../../src/store/db.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';

/** Forwards to `target`; once armed, the connection that sends a task INSERT is cut when its answer comes. */
async function startCuttingProxy(target: URL) {
  let armed = false;
  let cuts = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let carriesInsert = false;
    client.on('data', (chunk) => {
      if (armed && chunk.includes('INSERT INTO tasks')) carriesInsert = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (carriesInsert) {
        armed = false;
        carriesInsert = false;
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return {
    url: url.toString(),
    arm: () => void (armed = true),
    cuts: () => cuts,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
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
