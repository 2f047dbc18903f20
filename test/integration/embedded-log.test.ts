/**
 * The embedded bus's log as the database's event sink (BUS=embedded), on PGlite and PostgreSQL: a
 * transaction's events land in the log in its own statement, each partition numbered gap-free in write
 * order; a rollback leaves neither messages nor used offsets; what committed reaches this process's
 * partition tail with the right offsets; concurrent multi-partition writers neither deadlock nor leave gaps;
 * a write to a partition that does not exist fails instead of dropping the event.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { EmbeddedAdmin } from '../../src/bus/embedded/admin.ts';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { EmbeddedLog } from '../../src/bus/embedded/log.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';
import { TOPICS, topicSpec } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { appendEvents } from '../../src/store/outbox.ts';
import { backends } from '../helpers/db.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';

for (const backend of backends) {
  describe(`embedded log as the event sink on ${backend.name}`, async () => {
    const { db, drop } = await backend.fresh();
    after(drop);
    const log = EmbeddedLog.of(db);
    const topic = TOPICS.taskEvents;

    const rows = async () =>
      (
        await db.query<{
          partition: number;
          offset: string;
          key: string;
          value: { data: { task: { title: string } } };
        }>(
          `SELECT partition, "offset"::text AS offset, key, value FROM bus_messages WHERE topic = $1
            ORDER BY partition, bus_messages."offset"`,
          [topic],
        )
      ).rows.map((r) => ({
        p: r.partition,
        o: Number(r.offset),
        key: r.key,
        title: r.value.data.task.title,
      }));

    it('appends in the writer transaction, numbering each partition in write order; nothing in the outbox', async () => {
      const batch = ['bob', 'ann', 'bob', 'cid', 'ann', 'bob'].map((u, i) => taskCreated(u, `${u}-${i}`));
      await db.transaction((tx) => appendEvents(tx, batch));
      await db.transaction((tx) =>
        appendEvents(tx, [taskCreated('ann', 'ann-6'), taskCreated('bob', 'bob-7')]),
      );
      const got = await rows();
      assert.equal(got.length, 8);
      for (const r of got) assert.equal(r.p, partitionFor(r.key, 3), 'murmur2(key) mod 3');
      const byPartition = new Map<number, typeof got>();
      for (const r of got) byPartition.set(r.p, [...(byPartition.get(r.p) ?? []), r]);
      for (const list of byPartition.values())
        assert.deepEqual(
          list.map((r) => r.o),
          list.map((_, i) => i),
          'gap-free offsets from 0',
        );
      for (const key of ['ann', 'bob', 'cid'])
        assert.deepEqual(
          got.filter((r) => r.key === key).map((r) => r.title),
          [['bob-0', 'bob-2', 'bob-5', 'bob-7'], ['ann-1', 'ann-4', 'ann-6'], ['cid-3']][
            ['bob', 'ann', 'cid'].indexOf(key)
          ]!,
          `${key} in write order`,
        );
      const outbox = await db.query<{ n: string }>('SELECT count(*)::text AS n FROM outbox');
      assert.equal(outbox.rows[0]!.n, '0', 'nothing to relay');
    });

    it('hands what committed to the partition tail with its offsets, and wakes only that partition', async () => {
      const p = partitionFor('eve', 3);
      const end = Math.max(-1, ...(await rows()).filter((r) => r.p === p).map((r) => r.o)) + 1;
      const woken: string[] = [];
      const listeners = [0, 1, 2].map((i) => {
        const fn = () => woken.push(`${topic}/${i}`);
        log.appended.on(`${topic}/${i}`, fn);
        return () => log.appended.off(`${topic}/${i}`, fn);
      });
      const events = [taskCreated('eve', 'eve-1'), taskCreated('eve', 'eve-2')];
      await db.transaction((tx) => appendEvents(tx, events));
      listeners.forEach((off) => off());
      assert.deepEqual(woken, [`${topic}/${p}`]);
      const tail = log.take(topic, p, end, 10);
      assert.deepEqual(
        tail.map((m) => [Number(m.offset), titleOf(m.event), m.key]),
        [
          [end, 'eve-1', 'eve'],
          [end + 1, 'eve-2', 'eve'],
        ],
      );
      assert.equal(tail[0]!.event, events[0], 'the object the writer built, not a copy read back');
      assert.ok(log.hasFrom(topic, p, end + 1));
      assert.equal(log.hasFrom(topic, p, end + 2), false);
    });

    it('rolls back with its transaction: no messages, no offsets used, nothing in the tail', async () => {
      const before = await rows();
      const p = partitionFor('ann', 3);
      const end = Math.max(-1, ...before.filter((r) => r.p === p).map((r) => r.o)) + 1;
      await assert.rejects(
        db.transaction(async (tx) => {
          await appendEvents(tx, [taskCreated('ann', 'lost'), taskCreated('dan', 'lost')]);
          throw new Error('abort');
        }),
        /abort/,
      );
      assert.deepEqual(await rows(), before);
      assert.deepEqual(log.take(topic, p, end, 10), []);
      await db.transaction((tx) => appendEvents(tx, [taskCreated('ann', 'ann-8')]));
      const last = (await rows()).filter((r) => r.p === p).pop()!;
      assert.deepEqual([last.o, last.title], [end, 'ann-8'], 'the next offset after the rollback');
    });

    it('refuses an event that breaks its schema before writing anything', async () => {
      const before = await rows();
      const invalid = taskCreated('hal', 'x');
      (invalid.data as { task: { title: string } }).task.title = ''; // titles are 1-500 characters
      await assert.rejects(
        db.transaction((tx) => appendEvents(tx, [taskCreated('hal', 'fine'), invalid])),
        /title/,
      );
      assert.deepEqual(await rows(), before);
    });

    it('fails a write to a partition that does not exist, instead of dropping the event', async () => {
      await db.query(`DELETE FROM bus_partitions WHERE topic = $1 AND partition = $2`, [
        topic,
        partitionFor('zed', 3),
      ]);
      try {
        await assert.rejects(
          db.transaction((tx) => appendEvents(tx, [taskCreated('zed', 'z')])),
          /no partition task-events/,
        );
      } finally {
        await db.query(
          `INSERT INTO bus_partitions (topic, partition, next_offset)
           SELECT $1, $2, coalesce(max("offset") + 1, 0) FROM bus_messages WHERE topic = $1 AND partition = $2`,
          [topic, partitionFor('zed', 3)],
        );
      }
    });

    it('keeps a topic ready while its topics are provisioned again, and learns a grown partition count', async () => {
      // Topics are provisioned in the background while the API already writes (process.ts): a writer
      // between its `ready` and its `compose` must still find the topic's partitions.
      await log.ready([topic]);
      const admin = new EmbeddedAdmin(db);
      const provisioning = admin.ensureTopics([topicSpec(topic)]);
      const writes = Array.from({ length: 20 }, (_, i) =>
        db.transaction((tx) => appendEvents(tx, [taskCreated(`p${i}`, `during provisioning ${i}`)])),
      );
      await provisioning;
      const known = log.partitionCount(topic);
      for (const w of await Promise.allSettled(writes)) if (w.status === 'rejected') throw w.reason;
      assert.equal(known, topicSpec(topic).partitions, 'still known after provisioning');
      const grow = { name: 'provisioning-test.events', partitions: 2, retentionMs: 60_000 };
      await admin.ensureTopics([grow]);
      await log.ready([grow.name]);
      assert.equal(log.partitionCount(grow.name), 2);
      // A start's provisioning keeps an existing topic's partitions; `topics ensure` grows it (`grow`).
      await admin.ensureTopics([{ ...grow, partitions: 5 }]);
      assert.equal(log.partitionCount(grow.name), 2, 'kept without grow');
      await admin.ensureTopics([{ ...grow, partitions: 5 }], { grow: true });
      assert.equal(log.partitionCount(grow.name), 5, 'the grown count, without a read in between');
      await admin.ensureTopics([{ ...grow, partitions: 4 }], { grow: true });
      assert.equal(log.partitionCount(grow.name), 5, 'partitions only grow');
    });

    it('takes concurrent multi-partition writers without deadlocks or gaps', async () => {
      const before = (await rows()).length;
      const users = Array.from({ length: 12 }, (_, i) => `u${i}`);
      // Each transaction writes for several users, in different orders: partitions are locked in order.
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          db.transaction((tx) =>
            appendEvents(
              tx,
              Array.from({ length: 4 }, (_, j) => {
                const u = users[(i * 5 + j * (i % 2 ? 7 : 1)) % users.length]!;
                return taskCreated(u, `c-${i}-${j}`);
              }),
            ),
          ),
        ),
      );
      const got = await rows();
      assert.equal(got.length, before + 160);
      for (const p of [0, 1, 2]) {
        const offs = got.filter((r) => r.p === p).map((r) => r.o);
        assert.deepEqual(
          offs,
          offs.map((_, i) => i),
          `partition ${p} gap-free`,
        );
      }
    });

    it("deletes what is older than its topic's retention, page after page, and nothing younger", async () => {
      const admin = new EmbeddedAdmin(db);
      await admin.ensureTopics([
        { name: 'retention-hour', partitions: 2, retentionMs: 3_600_000 },
        { name: 'retention-day', partitions: 1, retentionMs: 86_400_000 },
      ]);
      const bus = createEmbeddedBus(db, { log: silentLogger });
      after(() => bus.close());
      const publish = (topic: string, n: number, key: string) =>
        bus.publisher.publish(
          Array.from({ length: n }, (_, i) => ({ topic, key, event: taskCreated(key, `${topic} ${i}`) })),
        );
      const partitionOf = (key: string) => partitionFor(key, 2);
      const [a, b] = ['ka', 'kb', 'kc', 'kd'].reduce<string[]>(
        (keys, k) => (keys.some((x) => partitionOf(x) === partitionOf(k)) ? keys : [...keys, k]),
        [],
      );
      // 2,500 old ones in one partition (more than a statement's page), 3 in the other, 5 in the day topic.
      await publish('retention-hour', 2_500, a!);
      await publish('retention-hour', 3, b!);
      await publish('retention-day', 5, a!);
      await db.query(
        `UPDATE bus_messages SET created_at = now() - interval '2 hours' WHERE topic LIKE 'retention-%'`,
      );
      await publish('retention-hour', 4, a!);
      await publish('retention-hour', 1, b!);
      assert.equal(await admin.applyRetention(), 2_503);
      const left = await db.query<{ topic: string; partition: number; n: number; first: string }>(
        `SELECT topic, partition, count(*)::int AS n, min("offset")::text AS first FROM bus_messages
          WHERE topic LIKE 'retention-%' GROUP BY topic, partition ORDER BY topic, partition`,
      );
      assert.deepEqual(
        left.rows
          .map(
            (r) =>
              `${r.topic}/${r.topic === 'retention-day' ? r.partition : r.partition === partitionOf(a!) ? 'a' : 'b'}: ${r.n} from ${r.first}`,
          )
          .sort(),
        ['retention-day/0: 5 from 0', 'retention-hour/a: 4 from 2500', 'retention-hour/b: 1 from 3'],
      );
      assert.equal(await admin.applyRetention(), 0);
    });
  });
}
