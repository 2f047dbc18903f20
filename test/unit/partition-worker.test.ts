/**
 * The partition loop Kafka and the embedded bus share (src/bus/partition-worker.ts), driven with plain
 * functions: runs, what is committed when, and that a partition lost stays lost.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PartitionWorker } from '../../src/bus/partition-worker.ts';

const worker = (
  o: { commit?: (last: number) => Promise<boolean>; done?: (run: readonly number[]) => number } = {},
) => {
  const runs: number[][] = [];
  const commits: number[] = [];
  const w = new PartitionWorker<number>({
    consume: async (run) => {
      runs.push([...run]);
      return o.done ? o.done(run) : run.length;
    },
    commit: async (last) => {
      commits.push(last);
      return o.commit ? o.commit(last) : true;
    },
    maxBatch: 2,
    batchIntervalMs: 0,
  });
  return { w, runs, commits };
};

describe('partition worker', () => {
  it('hands runs of maxBatch in order and commits past the last handled message', async () => {
    const { w, runs, commits } = worker();
    assert.equal(await w.handle([1, 2, 3]), 3);
    assert.deepEqual(runs, [[1, 2], [3]]);
    assert.deepEqual(commits, [2], 'the first commit is due at once; the next waits for the interval');
    assert.ok(w.commitDueIn() > 0 && w.commitDueIn() !== Infinity, 'message 3 waits for a commit');
    assert.equal(await w.commit(), true);
    assert.deepEqual(commits, [2, 3]);
    assert.equal(w.commitDueIn(), Infinity);
  });

  it('commits nothing past a message that was not handled (shutdown in the middle of a run)', async () => {
    const { w, commits } = worker({ done: (run) => (run[0] === 3 ? 0 : run.length) });
    assert.equal(await w.handle([1, 2, 3, 4]), 2);
    await w.commit();
    assert.deepEqual(commits, [2]);
  });

  it('a refused commit loses the partition, even after the last run: nothing more is handled', async () => {
    const { w, runs } = worker({ commit: async () => false });
    assert.equal(await w.handle([1, 2]), 2);
    assert.equal(w.lost, true);
    assert.equal(await w.handle([3]), 0);
    assert.deepEqual(runs, [[1, 2]]);
  });

  it('a commit that throws keeps its position to commit later; the run goes on', async () => {
    let fail = true;
    const { w, commits } = worker({
      commit: async () => {
        if (fail) throw new Error('connection reset');
        return true;
      },
    });
    assert.equal(await w.handle([1, 2]), 2, 'handled, not handled again for a failed commit');
    assert.equal(w.lost, false);
    await assert.rejects(w.commit(), /connection reset/, 'a commit asked for says it failed');
    fail = false;
    assert.equal(await w.commit(), true);
    assert.equal(commits.at(-1), 2, 'the position after the last handled message, committed at last');
  });
});
