/**
 * The broadcaster's transaction on PGlite and PostgreSQL: a run of task events becomes task.changed events
 * with gap-free per-user sequences in the run's order; an event id seen before (in an earlier run or
 * earlier in the same run) is skipped without burning a number.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import type { TaskChangedData } from '../../src/contracts/events.ts';
import { broadcastRun } from '../../src/services/broadcaster/index.ts';
import { backends } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

for (const backend of backends) {
  describe(`broadcaster run on ${backend.name}`, async () => {
    const { db, drop } = await backend.fresh();
    after(drop);
    const now = new Date('2026-03-01T12:00:00Z');
    const run = (events: CloudEvent[]) =>
      db.transaction((tx) =>
        broadcastRun(
          tx,
          events.map((event) => ({ event, traceparent: TRACEPARENT })),
          now,
        ),
      );
    const changes = async () =>
      (
        await db.query<{ event: CloudEvent<TaskChangedData> }>(
          `SELECT event FROM outbox WHERE event_type = 'task.changed' ORDER BY outbox.id`,
        )
      ).rows.map(({ event }) => `${event.data.user_id}#${event.data.sequence}:${event.data.task.title}`);

    it('numbers each user gap-free in run order and skips ids seen before', async () => {
      const a1 = taskCreated('ann', 'a1');
      const b1 = taskCreated('bob', 'b1');
      const a2 = taskCreated('ann', 'a2');
      assert.equal(await run([a1, b1, a2, a1]), 3, 'the repeated a1 is written once');
      const a3 = taskCreated('ann', 'a3');
      assert.equal(await run([a2, a3, b1]), 1, 'a2 and b1 were broadcast by the earlier run');
      assert.deepEqual(await changes(), ['ann#1:a1', 'bob#1:b1', 'ann#2:a2', 'ann#3:a3']);
      const [first] = (
        await db.query<{ event: CloudEvent<TaskChangedData> }>(
          `SELECT event FROM outbox WHERE event_type = 'task.changed' ORDER BY outbox.id LIMIT 1`,
        )
      ).rows;
      assert.equal(first!.event.traceparent, TRACEPARENT, 'continues the handler span it was given');
      assert.equal(titleOf(a1), 'a1');
    });

    it('writes nothing and uses no number when the transaction rolls back', async () => {
      const before = await changes();
      const lost = taskCreated('ann', 'lost');
      await assert.rejects(
        db.transaction(async (tx) => {
          await broadcastRun(tx, [{ event: lost, traceparent: TRACEPARENT }], now);
          throw new Error('abort');
        }),
        /abort/,
      );
      assert.deepEqual(await changes(), before);
      assert.equal(await run([lost]), 1, 'not recorded as processed by the rolled-back run');
      assert.deepEqual((await changes()).at(-1), 'ann#4:lost');
    });
  });
}
