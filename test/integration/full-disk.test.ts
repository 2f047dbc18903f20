/**
 * The embedded default on a full disk (a tmpfs of 80 MB, mounted by the test: root only). PostgreSQL's write of
 * its log fails with a PANIC; PGlite's next statement never came back and held the thread: the server answered
 * nothing, ignored SIGTERM, and a restart said only "PGlite failed to initialize properly". Now the process ends
 * at once, saying why, and a restart names the full file system.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { signDevToken } from '../../src/auth.ts';
import { TEST_SECRET, waitFor } from '../helpers/app.ts';
import { startServer, stopChild } from '../helpers/processes.ts';

const mountPoint = mkdtempSync(join(tmpdir(), 'taskflow-full-disk-'));
const mounted =
  process.getuid?.() === 0 &&
  spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=80m', 'tmpfs', mountPoint]).status === 0;

describe(
  'a full disk under the embedded database',
  { skip: mounted ? false : 'needs root to mount a tmpfs' },
  () => {
    const dir = join(mountPoint, 'db');
    const env = { DATABASE_URL: dir, JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'warn', RATE_LIMIT_PER_MINUTE: '0' };
    after(() => {
      spawnSync('umount', [mountPoint]);
      rmSync(mountPoint, { recursive: true, force: true });
    });

    it('ends the process at once, saying why, instead of holding it for ever; a restart names the full file system', async () => {
      const server = await startServer(['api'], env);
      try {
        const token = await signDevToken(TEST_SECRET, 'filler');
        // Random text: PostgreSQL compresses a repeated one to nothing.
        const description = randomBytes(7_400).toString('base64');
        let refused = 0;
        for (let i = 0; i < 3_000 && refused === 0; i++) {
          const status = await fetch(`${server.url}/api/tasks`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ title: `f-${i}`, description: `${i} ${description}` }),
            signal: AbortSignal.timeout(10_000),
          }).then(
            (r) => r.status,
            () => 0,
          );
          if (status !== 201) refused = i;
        }
        assert.ok(refused > 0, 'the disk filled up');
        await waitFor(() => server.child.exitCode !== null, 10_000, 'the process to end').catch(
          (err: Error) => {
            throw new Error(`${err.message} (refused at ${refused}):\n${server.output().slice(-3000)}`);
          },
        );
        assert.equal(server.child.exitCode, 1);
        assert.match(
          server.output(),
          /the embedded database stopped: .*No space left on device; Taskflow stops/,
        );
      } finally {
        await stopChild(server.child);
      }
      const restart = spawnSync(process.execPath, ['bin/taskflow.js', 'serve', 'api'], {
        env: { ...process.env, ...env, PORT: '0' },
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(restart.status, 1, restart.stderr);
      assert.match(
        restart.stderr,
        /\(only \d+ KB free on the file system of .*: PostgreSQL needs room for its log; if that is the cause, free some space/,
      );
    });
  },
);
