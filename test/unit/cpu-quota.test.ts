/** The CPU a process may use, from its cgroup's cpu.max (the event-loop admission's busy threshold). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cpuQuota } from '../../src/http/server.ts';

describe('cpuQuota', () => {
  it('reads a container limit, at most one core, and 1 without one', () => {
    const of = (text: string) => cpuQuota(() => text);
    assert.equal(of('30000 100000\n'), 0.3);
    assert.equal(of('200000 100000'), 1, 'one thread serves: more cores do not count');
    assert.equal(of('max 100000'), 1);
    assert.equal(of('garbage'), 1);
    assert.equal(
      cpuQuota(() => {
        throw new Error('ENOENT');
      }),
      1,
      'no cgroup v2 file',
    );
  });
});
