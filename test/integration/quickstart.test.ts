/**
 * The README's quick start, as a user runs it: `taskflow up` on embedded defaults prints the URL and a dev
 * token; with that token a task can be created, listed, completed and deleted; SIGTERM stops it cleanly.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';

it('`taskflow up` prints a URL and a token that work for create, list, complete and delete', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskflow-up-'));
  const child = spawn(process.execPath, ['bin/taskflow.js', 'up'], {
    env: {
      ...process.env,
      DATABASE_URL: join(dir, 'db'),
      PORT: '0',
      LOG_LEVEL: 'warn',
      BUS: 'embedded',
      JWT_SECRET: '',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    let banner = '';
    const { url, token } = await new Promise<{ url: string; token: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner within 120 s:\n${banner}`)), 120_000);
      child.stderr!.on('data', (b: Buffer) => {
        banner += b.toString();
        const url = /running at (http:\/\/\S+)/.exec(banner)?.[1];
        const token = /export TOKEN=(\S+)/.exec(banner)?.[1];
        if (url && token) {
          clearTimeout(timer);
          resolve({ url, token });
        }
      });
      child.on('exit', (code) => reject(new Error(`taskflow up exited with ${code}:\n${banner}`)));
    });
    const call = async (method: string, path: string, body?: unknown) => {
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
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, 'a clean shutdown');
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
