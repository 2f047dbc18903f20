/**
 * The exit watchdog of scripts/test (test/helpers/exit-watchdog.mjs): a test file's process that hangs after its
 * tests ended is killed and named in the hang log with its exit code, and one that ends is left alone.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';

const run = promisify(execFile);
const file = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const watchdog = file('../helpers/exit-watchdog.mjs');
const hanging = file('../fixtures/hangs-at-exit.test.mjs');

/** The fixture under a runner of its own with the watchdog preloaded (as scripts/test runs every file). */
function runFixture(hangLog: string, hang: boolean) {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEST_EXIT_HANG_LOG: hangLog,
    TEST_EXIT_WATCHDOG_S: '1',
    HANG_AT_EXIT: hang ? '1' : '0',
  };
  delete env.NODE_TEST_CONTEXT; // this file's own: the runner started here sets its child's
  return run(process.execPath, ['--import', watchdog, '--test', '--test-reporter=tap', hanging], {
    env,
    timeout: 60_000,
  }).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (err: { code?: number; stdout?: string }) => ({ code: err.code ?? -1, stdout: err.stdout ?? '' }),
  );
}

describe('the exit watchdog of scripts/test', { skip: process.platform !== 'linux', timeout: 90_000 }, () => {
  it('kills a test file that hangs after its tests passed, and logs its exit code and path', async () => {
    const log = join(mkdtempSync(join(tmpdir(), 'taskflow-watchdog-')), 'hangs');
    const r = await runFixture(log, true);
    assert.equal(r.code, 1, 'the runner reports the killed file as failed');
    assert.match(r.stdout, /^ok 1 - passes/m, 'its test passed');
    assert.match(r.stdout, /signal: 'SIGKILL'/);
    assert.equal(readFileSync(log, 'utf8'), `0 ${hanging}\n`);
  });

  it('leaves a test file that ends alone', async () => {
    const log = join(mkdtempSync(join(tmpdir(), 'taskflow-watchdog-')), 'hangs');
    const r = await runFixture(log, false);
    assert.equal(r.code, 0, r.stdout.slice(-2000));
    assert.match(r.stdout, /^ok 1 - passes/m);
    await sleep(2_000); // past the watchdog's second
    assert.equal(existsSync(log), false);
  });
});
