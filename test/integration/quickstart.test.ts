/**
 * The README's quick start, as a user runs it: `taskflow up` on embedded defaults prints the URL and a dev
 * token; with that token a task can be created, listed, completed and deleted; SIGTERM stops it cleanly. The
 * banner's command for more tokens gives tokens the server takes; with a database in memory the banner's token
 * works and `taskflow token` says why it cannot sign one.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { postgresBackend } from '../helpers/db.ts';

const run = promisify(execFile);

/** `taskflow up` with `env`, until its banner names the URL and the token. */
async function up(env: Record<string, string>) {
  const child = spawn(process.execPath, ['bin/taskflow.js', 'up'], {
    env: { ...process.env, PORT: '0', LOG_LEVEL: 'warn', BUS: 'embedded', JWT_SECRET: '', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let banner = '';
  const started = await new Promise<{ url: string; token: string | undefined }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner within 120 s:\n${banner}`)), 120_000);
    child.stderr!.on('data', (b: Buffer) => {
      banner += b.toString();
      const url = /running at (http:\/\/\S+)/.exec(banner)?.[1];
      const token = /export TOKEN=(\S+)/.exec(banner)?.[1];
      // The banner is one write: once it names the docs, the rest (the token, when there is one) is there.
      if (url && /API docs:/.test(banner)) {
        clearTimeout(timer);
        resolve({ url, token });
      }
    });
    child.on('exit', (code) => reject(new Error(`taskflow up exited with ${code}:\n${banner}`)));
  }).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return { ...started, child, banner: () => banner };
}

const caller = (url: string, token: string) => async (method: string, path: string, body?: unknown) => {
  const res = await fetch(url + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: res.status === 204 ? null : ((await res.json()) as any) };
};

it('`taskflow up` prints a URL and a token that work for create, list, complete and delete', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-up-'));
  const { url, token, child, banner } = await up({ DATABASE_URL: join(dir, 'db') });
  try {
    assert.ok(token, banner());
    const call = caller(url, token);
    const created = await call('POST', '/api/tasks', { title: 'Buy milk', priority: 'high' });
    assert.equal(created.status, 201);
    const listed = await call('GET', '/api/tasks');
    assert.deepEqual(
      listed.body.items.map((t: { id: string }) => t.id),
      [created.body.id],
    );
    assert.equal((await call('POST', `/api/tasks/${created.body.id}/complete`)).body.status, 'completed');
    assert.equal((await call('DELETE', `/api/tasks/${created.body.id}`)).status, 204);
    assert.equal((await fetch(url + '/')).status, 200, 'the task board page');
    assert.match(banner(), /Board: .*"Continue as" any name, or sign in with the token below/);
    // The banner's command for more tokens names this database: the dev secret is kept next to it.
    const more = /More tokens: DATABASE_URL=(\S+) npm run -s taskflow -- token --user <id>/.exec(banner());
    assert.ok(more, banner());
    assert.equal(more[1], join(dir, 'db'));
    const { stdout } = await run(process.execPath, ['bin/taskflow.js', 'token', '--user', 'bob'], {
      env: { ...process.env, DATABASE_URL: more[1], JWT_SECRET: '' },
    });
    assert.equal((await caller(url, stdout.trim())('GET', '/api/tasks')).status, 200);
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, 'a clean shutdown');
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

it('`taskflow up` on a database in memory signs with a secret of its own; `taskflow token` says why it cannot', async () => {
  const { url, token, child, banner } = await up({ DATABASE_URL: 'memory://' });
  try {
    assert.ok(token, banner());
    assert.equal((await caller(url, token)('GET', '/api/tasks')).status, 200);
    assert.doesNotMatch(banner(), /More tokens/);
    await assert.rejects(
      run(process.execPath, ['bin/taskflow.js', 'token', '--user', 'bob'], {
        env: { ...process.env, DATABASE_URL: 'memory://', JWT_SECRET: '' },
      }),
      /memory:\/\/ keeps its development secret in the server process/,
    );
  } finally {
    child.kill('SIGKILL');
  }
});

it(
  "`taskflow up` with a deployment's JWT_SECRET prints no token, and no database password",
  { skip: process.env.TEST_DATABASE_URL ? false : 'needs TEST_DATABASE_URL' },
  async () => {
    const { url: dbUrl, drop } = await postgresBackend!.fresh();
    const withPassword = new URL(dbUrl);
    withPassword.password = 'S3cretPw'; // the test server trusts local connections: any password is taken
    const { child, banner, token } = await up({
      DATABASE_URL: withPassword.toString(),
      JWT_SECRET: 'a deployment secret of at least 32 bytes',
    });
    try {
      assert.equal(token, undefined, banner());
      assert.doesNotMatch(banner(), /S3cretPw/);
      assert.match(banner(), /database: postgres:\/\/postgres:\*\*\*@/);
      assert.doesNotMatch(banner(), /More tokens|export TOKEN/);
      // The board's sign-in is a token `taskflow token` signs with the same secret (no "continue as" here).
      assert.match(banner(), /Board: .*token --user <id>, with the same JWT_SECRET/);
    } finally {
      child.kill('SIGKILL');
      await drop();
    }
  },
);
