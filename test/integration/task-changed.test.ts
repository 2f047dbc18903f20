/**
 * task.changed written with its task event (docs/adr/0011), on PGlite and PostgreSQL, into the outbox and
 * into the embedded log: every task change writes its task event and its task.changed in one statement;
 * each user's task.changed are numbered 1, 2, 3... without gaps, in commit order, through single writes
 * and group commits of both append forms (a few messages, and more than eight); a write that rolls back
 * uses no number; on the embedded log the event delivered in-process carries the number the database gave.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { EmbeddedLog, partitionId } from '../../src/bus/embedded/log.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import type { TaskChangedData } from '../../src/contracts/events.ts';
import { ManualClock } from '../../src/domain/clock.ts';
import { TaskStore } from '../../src/store/tasks.ts';
import { writtenEvents } from '../helpers/app.ts';
import { backends } from '../helpers/db.ts';
import { plainFields } from '../helpers/events.ts';

const META = { source: '/test', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };

for (const backend of backends) {
  for (const sink of ['outbox', 'embedded log'] as const) {
    describe(`task.changed with its write on ${backend.name}, into the ${sink}`, async () => {
      const { db, drop } = await backend.fresh();
      after(drop);
      const log = sink === 'embedded log' ? EmbeddedLog.of(db) : undefined;
      const store = new TaskStore(db, new ManualClock('2026-03-01T12:00:00Z'));
      // A user's task.changed in the order they are delivered: outbox id order (the relay's), or the offsets
      // of the user's partition.
      const changes = async (user: string) =>
        (
          await db.query<{ event: CloudEvent<TaskChangedData> }>(
            sink === 'outbox'
              ? `SELECT event FROM outbox WHERE event_type = 'task.changed' AND key = $1 ORDER BY id`
              : `SELECT value AS event FROM bus_messages
                  WHERE topic = 'task-updates' AND value->>'type' = 'task.changed' AND key = $1 ORDER BY "offset"`,
            [user],
          )
        ).rows.map((r) => r.event);

      it('writes one task.changed per change, numbered per user without gaps in commit order', async () => {
        const a = await store.create('ann', plainFields('a1'), META);
        await store.create('bob', plainFields('b1'), META);
        await store.update('ann', a.id, { title: 'a1 renamed' }, META);
        await store.update('ann', a.id, { status: 'completed' }, META);
        await store.delete('ann', a.id, META);
        const ann = await changes('ann');
        assert.deepEqual(
          ann.map((e) => `${e.data.sequence}:${e.data.change_type}:${e.data.task.title}`),
          ['1:created:a1', '2:updated:a1 renamed', '3:completed:a1 renamed', '4:deleted:a1 renamed'],
        );
        assert.deepEqual(
          (await changes('bob')).map((e) => e.data.sequence),
          [1],
        );
        const created = (await writtenEvents(db)).find(
          (e) => e.event_type === 'task.created' && e.event.subject === a.id,
        )!.event as CloudEvent;
        assert.equal(ann[0]!.traceparent, META.traceparent, 'in the trace of the write');
        assert.equal(ann[0]!.time, created.time, 'at the time of its task event');
        assert.equal(ann[0]!.source, '/test', 'from the writer');
      });

      it('numbers group commits of both append forms in submit order per user', async () => {
        // 40 concurrent creates of 4 users: groups of more than 8 messages (the set-based append) and,
        // once the first group is written, smaller ones.
        await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            store.create(`user-${i % 4}`, plainFields(`burst-${i}`), META),
          ),
        );
        for (let u = 0; u < 4; u++) {
          const got = await changes(`user-${u}`);
          assert.deepEqual(
            got.map((e) => e.data.sequence),
            Array.from({ length: 10 }, (_, i) => i + 1),
            `user-${u}: gap-free`,
          );
          const titles = got.map((e) => Number(e.data.task.title.slice('burst-'.length)));
          // One writer at a time on PGlite: the numbers follow the submit order. On PostgreSQL a few groups are
          // written at once (either commit order is right), so only the gap-free numbering is checked there.
          if (backend.name === 'pglite')
            assert.deepEqual(
              titles,
              [...titles].sort((x, y) => x - y),
              `user-${u} numbered in submit order`,
            );
        }
      });

      it('numbers several changes of one user in a small append', async () => {
        // The first create is written alone; the three that arrive meanwhile are one group of six messages
        // (the per-message append form) on PGlite, whose one connection writes one group at a time.
        await Promise.all(
          Array.from({ length: 4 }, (_, i) => store.create('zed', plainFields(`small-${i}`), META)),
        );
        assert.deepEqual(
          (await changes('zed')).map((e) => e.data.sequence),
          [1, 2, 3, 4],
        );
      });

      it('uses no number when the write rolls back', async () => {
        await assert.rejects(
          db.transaction(async (tx) => {
            await store.create('cleo', plainFields('lost'), META, { tx });
            throw new Error('abort');
          }),
          /abort/,
        );
        await store.create('cleo', plainFields('kept'), META);
        assert.deepEqual(
          (await changes('cleo')).map((e) => `${e.data.sequence}:${e.data.task.title}`),
          ['1:kept'],
        );
      });

      if (log)
        it('hands consumers in this process the number the database gave', async () => {
          const task = await store.create('dora', plainFields('d1'), META);
          await store.update('dora', task.id, { title: 'd2' }, META);
          const partitions = log.partitionCount('task-updates')!;
          const partition = partitionFor('dora', partitions);
          const r = await db.query<{ offset: string; sequence: string }>(
            `SELECT "offset"::text AS "offset", value #>> '{data,sequence}' AS sequence FROM bus_messages
              WHERE topic = 'task-updates' AND key = 'dora' ORDER BY "offset"`,
          );
          assert.deepEqual(
            r.rows.map((x) => x.sequence),
            ['1', '2'],
          );
          for (const row of r.rows) {
            const [m] = log.take('task-updates', partition, Number(row.offset), 1);
            assert.ok(m, `offset ${row.offset} of ${partitionId('task-updates', partition)} in the tail`);
            assert.equal((m.event.data as TaskChangedData).sequence, Number(row.sequence));
          }
        });
    });
  }

  describe(`migration 012 on ${backend.name}`, async () => {
    const { db, drop } = await backend.fresh();
    after(drop);
    it("carries the broadcaster's per-user numbers over", async () => {
      // The state an earlier version left: the broadcaster's counters.
      await db.exec(
        `CREATE TABLE broadcaster_sequences (user_id text PRIMARY KEY, last_seq bigint NOT NULL)`,
      );
      await db.query(`INSERT INTO broadcaster_sequences VALUES ('eve', 41)`);
      await db.exec(
        readFileSync(
          new URL('../../src/store/migrations/012_task_changed_with_its_write.sql', import.meta.url),
          'utf8',
        ),
      );
      const store = new TaskStore(db, new ManualClock('2026-03-01T12:00:00Z'));
      await store.create('eve', plainFields('after the upgrade'), META);
      const [change] = (await writtenEvents(db)).filter((e) => e.event_type === 'task.changed');
      assert.equal((change!.event as CloudEvent<TaskChangedData>).data.sequence, 42);
    });
  });
}
