/**
 * /readyz while the database stops answering (a stalled connection: a network partition without a reset, a
 * paused server). Its check waited for the answer, so /readyz answered nothing until the stall ended: the
 * probe failed by its own timeout without saying why, and every probe after it waited too. A TCP proxy
 * between the server and PostgreSQL holds every byte while stalled and passes them on when resumed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { openDb, type Db } from '../../src/store/db.ts';
import { READINESS_CHECK_TIMEOUT_MS } from '../../src/http/server.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { postgresBackend } from '../helpers/db.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

/** Forwards to `target`; while stalled, holds what either side sends and passes it on when resumed. */
async function startStallingProxy(target: URL) {
  let stalled = false;
  const held: (() => void)[] = [];
  const proxy = await startTcpProxy(target, (chunk, to) => {
    if (stalled) held.push(() => to.write(chunk));
    else to.write(chunk);
  });
  return {
    ...proxy,
    stall: () => void (stalled = true),
    resume: () => {
      stalled = false;
      for (const write of held.splice(0)) write();
    },
  };
}

describe(
  '/readyz while the database stalls',
  { skip: postgresBackend ? false : 'needs TEST_DATABASE_URL' },
  () => {
    let fresh: Awaited<ReturnType<NonNullable<typeof postgresBackend>['fresh']>>;
    let proxy: Awaited<ReturnType<typeof startStallingProxy>>;
    let db: Db;
    let app: TestApp;
    before(async () => {
      fresh = await postgresBackend!.fresh();
      proxy = await startStallingProxy(new URL(fresh.url));
      db = await openDb(proxy.url);
      app = await startApp(db, { targets: ['audit'] });
    });
    after(async () => {
      proxy?.resume();
      await app?.stop();
      await db?.close();
      await proxy?.close();
      await fresh?.drop();
    });

    it('answers 503 within its bound, naming the database, and 200 once it answers again', async () => {
      assert.equal((await fetch(`${app.url}/readyz`)).status, 200, 'ready before the stall');
      proxy.stall();
      const answer = await fetch(`${app.url}/readyz`, { signal: AbortSignal.timeout(10_000) });
      assert.equal(answer.status, 503);
      const body = (await answer.json()) as { status: string; checks: Record<string, string> };
      assert.equal(body.status, 'not ready');
      assert.match(body.checks.database!, new RegExp(`took longer than ${READINESS_CHECK_TIMEOUT_MS} ms`));
      proxy.resume();
      const again = await fetch(`${app.url}/readyz`, { signal: AbortSignal.timeout(10_000) });
      assert.equal(again.status, 200, JSON.stringify(await again.json()));
    });
  },
);
