/**
 * The target list: a retired target (the broadcaster, ADR 0011) named by a deployment written for an earlier
 * version runs nothing and says why; an unknown name is an error; naming only retired targets is an error
 * of the CLI with that reason and the targets there are.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { TARGETS, findTargets, retiredTargets } from '../../src/services/index.ts';

const run = promisify(execFile);

describe('targets', () => {
  it('skips a retired target, with its reason, and refuses an unknown one', () => {
    assert.deepEqual(
      findTargets(['api', 'broadcaster', 'gateway']).map((t) => t.name),
      ['api', 'gateway'],
    );
    const [why] = retiredTargets(['api', 'broadcaster']);
    assert.match(why!, /broadcaster target was retired.*adr\/0011/);
    assert.deepEqual(retiredTargets(['api']), []);
    assert.ok(!TARGETS.some((t) => (t.name as string) === 'broadcaster'));
    assert.throws(
      () => findTargets(['api', 'brodcaster']),
      /unknown target\(s\) brodcaster; available: api,/,
    );
  });

  it('`taskflow serve broadcaster` alone exits with the reason and the targets there are', async () => {
    const failed = await run(process.execPath, ['bin/taskflow.js', 'serve', 'broadcaster'], {
      env: { ...process.env, DATABASE_URL: 'memory://', LOG_LEVEL: 'warn' },
    }).then(
      () => assert.fail('serve broadcaster alone started'),
      (err: { code: number; stderr: string }) => err,
    );
    assert.notEqual(failed.code, 0);
    assert.match(failed.stderr, /broadcaster target was retired/);
    assert.match(failed.stderr, /no target to run; targets: api, relay, /);
  });
});

describe('BUS=dapr', () => {
  it('refuses, before anything opens, two consuming targets that read one topic in one process', async () => {
    const failed = await run(process.execPath, ['bin/taskflow.js', 'up'], {
      env: { ...process.env, BUS: 'dapr', DATABASE_URL: 'memory://', PORT: '0', LOG_LEVEL: 'warn' },
    }).then(
      () => assert.fail('taskflow up on Dapr started'),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(failed.code, 2);
    assert.match(failed.stderr, /BUS=dapr: targets recurrence and audit both read task-events/);
    assert.match(failed.stderr, /taskflow serve audit, app id taskflow-audit/);
  });
});
