/**
 * A signal ends a `taskflow` process that has not started serving yet, also as PID 1 in a container, where a
 * signal without a handler is ignored (src/cli/signals.ts): a pod waiting for the migrations' lock, or the
 * migrate Job, waited for SIGKILL at the end of its grace period.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { signDevToken } from '../../src/auth.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { startServer, stopChild } from '../helpers/processes.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const baseUrl = process.env.TEST_DATABASE_URL;
/** The advisory lock every process takes to migrate (src/store/migrate.ts). */
const MIGRATIONS_LOCK = 0x7a5bf10;
const pidNamespaces = spawnSync('unshare', ['--pid', '--fork', 'true']).status === 0;

describe(
  'stop signals before a process serves',
  {
    skip: !baseUrl
      ? 'needs TEST_DATABASE_URL'
      : !pidNamespaces
        ? 'needs `unshare --pid` (the process as PID 1, as in a container)'
        : false,
  },
  () => {
    for (const args of [['serve', 'api'], ['migrate']]) {
      it(`taskflow ${args.join(' ')} as PID 1 exits on SIGTERM while it waits for the migrations' lock`, async () => {
        const created = await createPgDatabase(baseUrl!, 'tf_signals');
        const holder = new pg.Client({ connectionString: created.url });
        await holder.connect();
        await holder.query('SELECT pg_advisory_lock($1)', [MIGRATIONS_LOCK]);
        const child = spawn('unshare', ['--pid', '--fork', process.execPath, 'bin/taskflow.js', ...args], {
          cwd: ROOT,
          env: {
            ...process.env,
            DATABASE_URL: created.url,
            JWT_SECRET: 'signals-test-secret-0123456789abcdef',
            PORT: '0',
            LOG_LEVEL: 'info',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stdout!.on('data', (d: Buffer) => (stderr += d.toString()));
        child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
        try {
          // Waiting for the lock (tried every 200 ms, never waited for inside a statement), as it says.
          const deadline = Date.now() + 30_000;
          while (!stderr.includes("waiting for the migrations' lock")) {
            assert.ok(Date.now() < deadline, `never waited for the lock:\n${stderr}`);
            await new Promise((r) => setTimeout(r, 100));
          }
          // The node process is unshare's child, PID 1 in its namespace.
          const node = Number(
            readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0],
          );
          assert.ok(node > 0);
          process.kill(node, 'SIGTERM');
          const code = await Promise.race([
            exited,
            new Promise<'still running'>((r) => setTimeout(() => r('still running'), 5_000)),
          ]);
          assert.equal(code, 143, `after SIGTERM: ${String(code)}\n${stderr}`);
        } finally {
          child.kill('SIGKILL');
          await holder.end().catch(() => undefined);
          await created.drop();
        }
      });
    }
  },
);

describe('stop signals once a process serves', () => {
  it('a second SIGTERM during the graceful stop does not cut it short', async () => {
    const server = await startServer(['api'], { DATABASE_URL: 'memory://', LOG_LEVEL: 'info' });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((done) =>
      server.child.once('exit', (code, signal) => done([code, signal])),
    );
    server.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 20));
    server.child.kill('SIGTERM');
    assert.deepEqual(await exited, [0, null], server.output());
    assert.match(server.output(), /shutting down/);
  });
});

/**
 * A `taskflow serve api` sent SIGTERM while a create is in flight on a connection of its own (its head read, the
 * rest of its body sent once the stop is under way): what the server answered, and how the process ended.
 */
async function stopWithCreateInFlight(connection: 'close' | 'keep-alive') {
  const server = await startServer(['api'], {
    DATABASE_URL: 'memory://',
    JWT_SECRET: TEST_SECRET,
    LOG_LEVEL: 'warn',
  });
  try {
    const token = await signDevToken(TEST_SECRET, 'gina');
    const body = JSON.stringify({ title: 'written while the server stops' });
    const { port } = new URL(server.url);
    const socket = connect(Number(port), '127.0.0.1');
    let answer = '';
    socket.on('data', (b: Buffer) => (answer += b.toString()));
    const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
    await new Promise((r) => socket.once('connect', r));
    // keep-alive: as ingress controllers and pooled clients send, the connection kept for the next request.
    socket.write(
      `POST /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: ${connection}\r\n\r\n${body.slice(0, 10)}`,
    );
    await sleep(300); // the request has begun: the server read its head
    const stopped = performance.now();
    server.child.kill('SIGTERM');
    await sleep(500); // the graceful stop is under way
    socket.write(body.slice(10));
    const code = await Promise.race([exited, sleep(20_000).then(() => 'still running')]);
    socket.destroy();
    return { answer, code, stopMs: performance.now() - stopped, output: server.output() };
  } finally {
    await stopChild(server.child);
  }
}

describe('SIGTERM with a request in flight', () => {
  it('answers it (201) before the process stops: the targets and the database close after the server', async () => {
    const { answer, output } = await stopWithCreateInFlight('close');
    assert.match(answer, /^HTTP\/1\.1 201 /, `answer: ${JSON.stringify(answer.slice(0, 300))}\n${output}`);
  });

  it('on a keep-alive connection: answers it with Connection: close and the stop goes on at once (exit 0)', async () => {
    // The connection kept its keep-alive time (72 s) after the answer: the stop waited past its 30 s and the
    // process exited 1 without stopping its targets.
    const { answer, code, stopMs, output } = await stopWithCreateInFlight('keep-alive');
    assert.match(answer, /^HTTP\/1\.1 201 /, `answer: ${JSON.stringify(answer.slice(0, 300))}`);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.equal(code, 0, output);
    assert.ok(stopMs < 8_000, `stopped in ${Math.round(stopMs)} ms`);
  });
});
