/**
 * Development sign-in (src/services/api/dev-sign-in.ts): with the generated development secret a request from
 * this machine gets a token for a name, which the API then accepts; from another address, under another
 * site's name, with a configured JWT_SECRET, or for a name that is not an id, it is refused.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { request } from 'node:http';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { apiTarget } from '../../src/services/api/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, type TestApp } from '../helpers/app.ts';
import { othersCanRead } from '../helpers/files.ts';

const signIn = (url: string, user: string) =>
  fetch(`${url}/api/dev/sign-in`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });

/** A node binary user nobody may run (the request needs only fetch): Node from npm lives under /root/.npm. */
const nodeForOthers = [process.execPath, '/usr/bin/node', '/usr/local/bin/node'].find(
  (file) => existsSync(file) && othersCanRead(file, true),
);

/** A sign-in request over a real connection with the given Host and Origin: its status. */
function postOverSocket(url: string, headers: Record<string, string>): Promise<number> {
  const body = JSON.stringify({ user: 'ada' });
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/api/dev/sign-in`,
      {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', 'content-length': body.length },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode!);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('development sign-in', () => {
  let dir: string;
  let db: Db;
  let dev: TestApp;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'taskflow-dev-sign-in-'));
    db = await openDb('memory://');
    await migrate(db);
    // No JWT_SECRET, a data directory: the embedded default, with its generated secret.
    dev = await startApp(db, {
      targets: [apiTarget],
      env: { JWT_SECRET: '', DATABASE_URL: join(dir, 'db') },
    });
  });
  after(async () => {
    await dev.stop();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('mints a token for a name, for requests from this machine, that the API accepts', async () => {
    assert.equal((await fetch(`${dev.url}/api/dev/sign-in`)).status, 200);
    const res = await signIn(dev.url, 'ada@example.com');
    assert.equal(res.status, 200);
    const { user, token } = (await res.json()) as { user: string; token: string };
    assert.equal(user, 'ada@example.com');
    const tasks = await fetch(`${dev.url}/api/tasks`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(tasks.status, 200);
    const bad = await signIn(dev.url, '../admin');
    assert.equal(bad.status, 400);
  });

  it('is not there for a request from another address (no forwarded header is trusted)', async () => {
    const app = dev.proc.runtime.http.app;
    for (const method of ['GET', 'POST'] as const) {
      const r = await app.inject({
        method,
        url: '/api/dev/sign-in',
        remoteAddress: '10.1.2.3',
        headers: { 'x-forwarded-for': '127.0.0.1' },
        ...(method === 'POST' ? { payload: { user: 'mallory' } } : {}),
      });
      assert.equal(r.statusCode, 404, method);
      assert.doesNotMatch(r.body, /token/);
    }
  });

  it('is not there for a page of another site whose name resolves to this machine (DNS rebinding)', async () => {
    const app = dev.proc.runtime.http.app;
    const post = (headers: Record<string, string>) =>
      app.inject({
        method: 'POST',
        url: '/api/dev/sign-in',
        remoteAddress: '127.0.0.1',
        headers,
        payload: { user: 'mallory' },
      });
    const port = new URL(dev.url).port;
    const refused: Record<string, string>[] = [
      { host: `attacker.example:${port}`, origin: `http://attacker.example:${port}` },
      { host: `attacker.example:${port}` },
      { host: `127.0.0.1:${port}`, origin: `http://attacker.example:${port}` },
      { host: `127.0.0.1:${port}`, origin: 'null' },
    ];
    for (const headers of refused) {
      const r = await post(headers);
      assert.equal(r.statusCode, 404, JSON.stringify(headers));
      assert.doesNotMatch(r.body, /token/);
    }
    // On a real connection: who holds its other end is read from the kernel (an injected request has none).
    const accepted: Record<string, string>[] = [
      { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}` },
      { host: `localhost:${port}` },
      { host: `[::1]:${port}`, origin: `http://[::1]:${port}` },
    ];
    for (const headers of accepted)
      assert.equal(await postOverSocket(dev.url, headers), 200, JSON.stringify(headers));
  });

  it(
    'is not there for another account of this machine (it cannot read the secret, nor sign in here)',
    {
      skip:
        process.platform !== 'linux' || process.getuid?.() !== 0
          ? 'needs Linux, run as root'
          : nodeForOthers === undefined
            ? 'no node binary user nobody may run'
            : false,
    },
    async () => {
      // The same request from a process of another uid (nobody), which the secret's file (mode 600) refuses.
      // Not spawnSync: the server runs on this thread.
      const asked = await promisify(execFile)(
        nodeForOthers!,
        [
          '-e',
          `Promise.all([fetch(process.argv[1] + '/api/dev/sign-in'), fetch(process.argv[1] + '/api/dev/sign-in', {
           method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"user":"demo-user"}' })])
           .then(async (rs) => console.log(JSON.stringify(await Promise.all(rs.map(async (r) => [r.status, await r.text()])))))`,
          dev.url,
        ],
        { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 30_000, cwd: tmpdir() },
      );
      const answers = JSON.parse(asked.stdout) as [number, string][];
      for (const [status, body] of answers) {
        assert.equal(status, 404, body);
        assert.match(body, /by the account that runs taskflow/);
        assert.doesNotMatch(body, /token/);
      }
      // ... while this account's own request over a socket is answered.
      assert.equal((await signIn(dev.url, 'demo-user')).status, 200);
    },
  );

  it('is not there through a reverse proxy on this machine (it connects from loopback, to a loopback name)', async () => {
    const app = dev.proc.runtime.http.app;
    const host = `127.0.0.1:${new URL(dev.url).port}`;
    for (const added of [
      { 'x-forwarded-for': '203.0.113.9' },
      { 'x-real-ip': '203.0.113.9' },
      { forwarded: 'for=203.0.113.9' },
      { 'x-forwarded-host': 'taskflow.example.com' },
      { via: '1.1 proxy' },
    ]) {
      const r = await app.inject({
        method: 'POST',
        url: '/api/dev/sign-in',
        remoteAddress: '127.0.0.1',
        headers: { host, ...added },
        payload: { user: 'victim' },
      });
      assert.equal(r.statusCode, 404, JSON.stringify(added));
      assert.doesNotMatch(r.body, /token/);
    }
  });

  it('does not exist with a configured JWT_SECRET', async () => {
    const configured = await startApp(db, { targets: [apiTarget] });
    try {
      assert.equal((await fetch(`${configured.url}/api/dev/sign-in`)).status, 404);
      const post = await signIn(configured.url, 'mallory');
      assert.equal(post.status, 404);
    } finally {
      await configured.stop();
    }
  });
});
