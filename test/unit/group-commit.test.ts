/**
 * Group commit (src/store/group-commit.ts): what arrives while a group is written goes in the next one; a
 * lone item is written at once; a failing group is written again item by item, so only the item that cannot
 * be written fails; at most `inFlight` groups are written at once; the next group is written before the callers
 * of the previous one resume.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { OverloadedError } from '../../src/domain/errors.ts';
import { GroupCommit } from '../../src/store/group-commit.ts';

const tick = () => new Promise((r) => setImmediate(r));

it('writes a lone item at once, and what arrives during a write as the next group', async () => {
  const groups: number[][] = [];
  let release: () => void = () => undefined;
  const g = new GroupCommit<number>(async (items) => {
    groups.push([...items]);
    if (groups.length === 1) await new Promise<void>((r) => (release = r));
  });
  const first = g.submit(1);
  await tick();
  assert.deepEqual(groups, [[1]], 'not held back waiting for company');
  const rest = [2, 3, 4].map((n) => g.submit(n));
  await tick();
  assert.deepEqual(groups, [[1]], 'queued behind the write in progress');
  release();
  await Promise.all([first, ...rest]);
  assert.deepEqual(groups, [[1], [2, 3, 4]]);
});

it("sends the next group to the database before the previous group's callers resume", async () => {
  const order: string[] = [];
  let release: () => void = () => undefined;
  const g = new GroupCommit<number>(
    async (items) => {
      // As node-postgres's pool: the statement leaves on a later tick (process.nextTick), after every promise
      // callback queued before it.
      await new Promise<void>((r) => process.nextTick(r));
      order.push(`sent ${items.join(',')}`);
      if (items[0] === 1) await new Promise<void>((r) => (release = r));
    },
    { inFlight: 1, maxGroup: 64, overlap: true },
  );
  const first = g.submit(1).then(() => order.push('resolved 1'));
  await tick();
  const rest = [2, 3].map((n) => g.submit(n).then(() => order.push(`resolved ${n}`)));
  release();
  await Promise.all([first, ...rest]);
  // The database works on the next group while the answers of the previous one are written; callers resume
  // in the order of their groups.
  assert.deepEqual(order, ['sent 1', 'sent 2,3', 'resolved 1', 'resolved 2', 'resolved 3']);
});

it('fails only the item that cannot be written; the others of its group succeed', async () => {
  const written: number[] = [];
  let hold: Promise<void> | undefined = new Promise<void>((r) => setTimeout(r, 10));
  const g = new GroupCommit<number>(async (items) => {
    if (hold) {
      const h = hold;
      hold = undefined;
      await h;
    }
    if (items.includes(13)) throw new Error(`bad item in ${items.join(',')}`);
    written.push(...items);
  });
  const results = await Promise.allSettled([0, 11, 12, 13, 14].map((n) => g.submit(n)));
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled'],
  );
  assert.deepEqual(written.sort(), [0, 11, 12, 14]);
  assert.match(String((results[3] as PromiseRejectedResult).reason), /bad item in 13$/);
});

it('fails only the item a writer refuses by throwing at once, before returning a promise', async () => {
  const g = new GroupCommit<number>((items) => {
    if (items.includes(13)) throw new Error('refused at once');
    return new Promise((r) => setTimeout(r, 5));
  });
  const results = await Promise.allSettled([1, 13, 14].map((n) => g.submit(n)));
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
});

it('counts no wait once a failed group has settled: admission is not left refusing', async () => {
  const g = new GroupCommit<number>(
    async (items) => {
      await new Promise((r) => setTimeout(r, 5));
      if (items.includes(13)) throw new Error('bad item');
    },
    { inFlight: 1, maxGroup: 64, maxWaitMs: 1_000 },
  );
  await Promise.allSettled([1, 13, 14].map((n) => g.submit(n)));
  assert.equal(g.queuedFor(), 0);
});

it('writes at most inFlight groups at once, each at most maxGroup items', async () => {
  let active = 0;
  let most = 0;
  const sizes: number[] = [];
  const g = new GroupCommit<number>(
    async (items) => {
      active++;
      most = Math.max(most, active);
      sizes.push(items.length);
      await new Promise((r) => setTimeout(r, 5));
      active--;
    },
    { inFlight: 2, maxGroup: 3 },
  );
  await Promise.all(Array.from({ length: 20 }, (_, i) => g.submit(i)));
  assert.equal(most, 2);
  assert.ok(sizes.every((n) => n <= 3));
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    20,
  );
});

/** A GroupCommit whose write of item 0 hangs until release(); maxWaitMs 30. */
function heldAtZero() {
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  const g = new GroupCommit<number>(
    async (items) => {
      if (items.includes(0)) await held;
    },
    { inFlight: 1, maxGroup: 64, maxWaitMs: 30 },
  );
  return { g, release: () => release() };
}

it('refuses new items while the oldest queued one has waited longer than maxWaitMs; the queued ones go through', async () => {
  const { g, release } = heldAtZero();
  const first = g.submit(0);
  const queued = g.submit(1); // waits behind the held write
  await new Promise((r) => setTimeout(r, 60));
  await assert.rejects(g.submit(2), (err: unknown) => err instanceof OverloadedError);
  release();
  await Promise.all([first, queued]);
  await g.submit(3); // caught up: accepted again
});

it('counts the wait of a group being written: a write stuck with nothing queued behind it still refuses', async () => {
  const { g, release } = heldAtZero();
  const first = g.submit(0);
  await new Promise((r) => setTimeout(r, 60));
  assert.ok(g.queuedFor() >= 30);
  await assert.rejects(g.submit(1), (err: unknown) => err instanceof OverloadedError);
  release();
  await first;
  assert.equal(g.queuedFor(), 0);
  await g.submit(2);
});
