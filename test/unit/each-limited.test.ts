/** eachLimited: at most `limit` calls in flight, in order; after a failure none starts, and it rejects with it. */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { it } from 'node:test';
import { eachLimited } from '../../src/each-limited.ts';

it('runs every item in order with at most `limit` in flight', async () => {
  const started: number[] = [];
  let inFlight = 0;
  let most = 0;
  await eachLimited([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
    started.push(n);
    most = Math.max(most, ++inFlight);
    await sleep(n % 2 ? 5 : 1);
    inFlight--;
  });
  assert.deepEqual(started, [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(most, 3);
});

it('starts nothing after the first failure and rejects with it once the calls in flight are done', async () => {
  const started: number[] = [];
  const finished: number[] = [];
  await assert.rejects(
    eachLimited([1, 2, 3, 4, 5], 2, async (n) => {
      started.push(n);
      if (n === 2) throw new Error('two failed');
      if (n === 3) throw new Error('three failed too');
      await sleep(10);
      finished.push(n);
    }),
    /^Error: two failed$/,
  );
  assert.deepEqual(started, [1, 2]);
  assert.deepEqual(finished, [1], 'the call in flight finished before the rejection');
});

it('does nothing for no items', async () => {
  await eachLimited([], 4, async () => assert.fail('not called'));
});
