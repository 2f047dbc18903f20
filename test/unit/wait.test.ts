import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { it } from 'node:test';
import { waitForEvent, within } from '../../src/wait.ts';

it('waitForEvent resolves on the event, on the timeout and on abort, and cleans up its listener', async () => {
  const e = new EventEmitter();
  setTimeout(() => e.emit('wake'), 5);
  assert.equal(await waitForEvent(e, 'wake', 5_000), true);
  const started = Date.now();
  assert.equal(await waitForEvent(e, 'wake', 30), false);
  assert.ok(Date.now() - started >= 25);
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 5);
  assert.equal(await waitForEvent(e, 'wake', 5_000, stop.signal), false);
  assert.equal(await waitForEvent(e, 'wake', 5_000, stop.signal), false, 'already aborted');
  assert.equal(e.listenerCount('wake'), 0);
});

it(
  'waitForEvent still times out when garbage collection runs during the wait',
  { skip: typeof globalThis.gc !== 'function' ? 'run node with --expose-gc' : false },
  async () => {
    const e = new EventEmitter();
    const waiting = waitForEvent(e, 'wake', 50, new AbortController().signal);
    (globalThis.gc as () => void)();
    assert.equal(await waiting, false);
  },
);

it('within answers what settles first: the work, or its deadline naming it', async () => {
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  assert.equal(await within(Promise.resolve(7), 60_000, 'the work'), 7);
  assert.equal(timers(), before, 'its timer is cleared once the work settles');
  await assert.rejects(within(Promise.reject(new Error('boom')), 1_000, 'the work'), /boom/);
  const hung = new Promise<never>(() => undefined);
  await assert.rejects(within(hung, 20, 'reading the head'), /reading the head took longer than 20 ms/);
});
