/**
 * Consumer groups of the embedded bus under a handler slower than the group's session: a member giving a
 * partition up waits for the message in hand there, and must go on heartbeating and renewing the partitions it
 * keeps meanwhile. On PGlite and on PostgreSQL (sessions of 1 s, heartbeats every 100 ms: test/helpers/transports.ts).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { partitionFor } from '../../src/bus/partitioner.ts';
import { waitFor } from '../helpers/app.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { embeddedHarness, embeddedPostgresHarness, type TransportHarness } from '../helpers/transports.ts';

const SESSION_MS = 1_000;

for (const factory of [embeddedHarness, embeddedPostgresHarness]) {
  describe(`embedded consumer group: ${factory.name}`, { skip: factory.skip }, () => {
    let h: TransportHarness;
    before(async () => {
      h = await factory.create();
    });
    after(async () => {
      await h.cleanup();
    });

    it('keeps its other partitions while one it gives up finishes a handler slower than the session', async () => {
      const partitions = 4;
      const topic = h.unique('slow');
      const group = h.unique('slow-group');
      const pa = await h.start();
      const pb = await h.start();
      await pa.bus.admin.ensureTopics([{ name: topic, partitions, retentionMs: 86_400_000 }]);
      const keys = Array.from({ length: partitions }, (_, part) => {
        for (let n = 0; ; n++) if (partitionFor(`slow-${n}`, partitions) === part) return `slow-${n}`;
      });
      await pa.bus.publisher.publish(keys.map((key) => ({ topic, key, event: taskCreated(key, key) })));
      // A takes every partition and holds a message in hand on each until the gate opens.
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const entered = new Set<number>();
      const byA: string[] = [];
      const byB: string[] = [];
      const subA = await pa.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => {
          entered.add(m.partition);
          await gate;
          byA.push(titleOf(m.event));
        },
      });
      let subB: Awaited<ReturnType<typeof pb.bus.subscriber.subscribe>> | undefined;
      try {
        await waitFor(
          () => entered.size === partitions,
          30_000,
          'A with a message in hand on each partition',
        );
        subB = await pb.bus.subscriber.subscribe({
          group,
          topics: [topic],
          handler: async (m) => void byB.push(titleOf(m.event)),
        });
        // B joins: A gives up half the partitions, each once its handler returns, three sessions from now.
        // Meanwhile B may claim those once their leases run out (the message in hand there is then handled
        // by both: at-least-once), but not the ones A keeps, whose handlers are as slow.
        await sleep(3 * SESSION_MS);
        assert.ok(
          byB.length <= partitions / 2,
          `B took only what A gave up, not the partitions A keeps heartbeating for (B handled ${byB.join(', ')})`,
        );
      } finally {
        open();
      }
      await waitFor(
        () => keys.every((k) => byA.includes(k) || byB.includes(k)),
        30_000,
        'every message handled',
      );
      await subA.close();
      await subB?.close();
      await pa.close();
      await pb.close();
      assert.equal(new Set(byA).size, byA.length, `A handled nothing twice: ${byA.join(', ')}`);
    });
  });
}
