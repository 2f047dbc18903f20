/**
 * A signal ends a `taskflow` process that has not started serving yet, also as PID 1 in a container, where a
 * signal without a handler is ignored (src/cli/signals.ts): a pod waiting for the migrations' lock, or the
 * migrate Job, waited for SIGKILL at the end of its grace period.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import pg from 'pg';
import { createPgDatabase } from '../helpers/db.ts';
import { startServer } from '../helpers/processes.ts';

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
            LOG_LEVEL: 'warn',
          },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
        try {
          // Waiting on the lock: a backend of that database waits for an advisory lock.
          const deadline = Date.now() + 30_000;
          for (;;) {
            const waiting = await holder.query(
              `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'`,
            );
            if (waiting.rows.length > 0) break;
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
