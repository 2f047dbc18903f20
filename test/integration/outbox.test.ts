/**
 * appendEvents on PGlite and PostgreSQL: a batch of several users' events gets, per user, consecutive stream
 * sequence numbers that continue across transactions, and outbox ids in the batch's order (the relay
 * publishes in id order); a rolled-back transaction leaves neither rows nor used sequence numbers.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { appendEvents } from '../../src/store/outbox.ts';
import { backends } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';

for (const backend of backends) {
  describe(`appendEvents on ${backend.name}`, async () => {
    const { db, drop } = await backend.fresh();
    after(drop);

    const rows = async () =>
      (
        await db.query<{ key: string; stream_seq: string; event: { data: { task: { title: string } } } }>(
          'SELECT key, stream_seq::text, event FROM outbox ORDER BY outbox.id',
        )
      ).rows.map((r) => ({ key: r.key, seq: Number(r.stream_seq), title: r.event.data.task.title }));

    it('numbers each key consecutively in batch order, across transactions', async () => {
      const batch = ['bob', 'ann', 'bob', 'cid', 'ann', 'bob'].map((u, i) => taskCreated(u, `${u}-${i}`));
      await db.transaction((tx) => appendEvents(tx, batch));
      await db.transaction((tx) =>
        appendEvents(tx, [taskCreated('ann', 'ann-6'), taskCreated('bob', 'bob-7')]),
      );
      assert.deepEqual(await rows(), [
        { key: 'bob', seq: 1, title: 'bob-0' },
        { key: 'ann', seq: 1, title: 'ann-1' },
        { key: 'bob', seq: 2, title: 'bob-2' },
        { key: 'cid', seq: 1, title: 'cid-3' },
        { key: 'ann', seq: 2, title: 'ann-4' },
        { key: 'bob', seq: 3, title: 'bob-5' },
        { key: 'ann', seq: 3, title: 'ann-6' },
        { key: 'bob', seq: 4, title: 'bob-7' },
      ]);
      assert.deepEqual(batch.map(titleOf), ['bob-0', 'ann-1', 'bob-2', 'cid-3', 'ann-4', 'bob-5']);
    });

    it('rolls back with its transaction: no rows, no sequence numbers used', async () => {
      const before = await rows();
      await assert.rejects(
        db.transaction(async (tx) => {
          await appendEvents(tx, [taskCreated('ann', 'lost'), taskCreated('dan', 'lost')]);
          throw new Error('abort');
        }),
        /abort/,
      );
      assert.deepEqual(await rows(), before);
      await db.transaction((tx) =>
        appendEvents(tx, [taskCreated('ann', 'ann-8'), taskCreated('dan', 'dan-9')]),
      );
      assert.deepEqual((await rows()).slice(-2), [
        { key: 'ann', seq: 4, title: 'ann-8' },
        { key: 'dan', seq: 1, title: 'dan-9' },
      ]);
    });

    it('rejects an event without a partition key before writing anything', async () => {
      const keyless = { ...taskCreated('ann', 'x'), partitionkey: '' };
      await assert.rejects(
        db.transaction((tx) => appendEvents(tx, [taskCreated('ann', 'y'), keyless])),
        /partitionkey|partition key/i,
      );
    });
  });
}
