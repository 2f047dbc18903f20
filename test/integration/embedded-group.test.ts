/**
 * Consumer groups of the embedded bus under a handler slower than the group's session: a member giving a
 * partition up waits for the message in hand there, and must go on heartbeating and renewing the partitions it
 * keeps meanwhile. On PGlite and on PostgreSQL (sessions of 1 s, heartbeats every 100 ms: test/helpers/transports.ts).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { waitFor } from '../helpers/app.ts';
import { keyPerPartition, taskCreated, titleOf } from '../helpers/events.ts';
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

    /** Two "processes" of the group `<name>-group`, and a topic of four partitions with a key for each. */
    async function groupOf(name: string) {
      const partitions = 4;
      const topic = h.unique(name);
      const group = h.unique(`${name}-group`);
      const pa = await h.start();
      const pb = await h.start();
      await pa.bus.admin.ensureTopics([{ name: topic, partitions, retentionMs: 86_400_000 }]);
      return { partitions, topic, group, pa, pb, keys: keyPerPartition(partitions, name) };
    }

    it('keeps its other partitions while one it gives up finishes a handler slower than the session', async () => {
      const { partitions, topic, group, pa, pb, keys } = await groupOf('slow');
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
        // Meanwhile A keeps the leases of all of them: those it keeps, and those it gives up until the message
        // in hand there is handled, so B starts on nothing yet (no message handled by both).
        await sleep(3 * SESSION_MS);
        assert.equal(
          byB.length,
          0,
          `B started on no partition while A had a message in hand there: ${byB.join(', ')}`,
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
      assert.equal(byA.length + byB.length, partitions, 'each message handled once by the group');
    });

    it('works a partition it gave up and wants back with one worker at a time', async () => {
      const { partitions, topic, group, pa, pb, keys } = await groupOf('back');
      const publish = (round: number) =>
        pa.bus.publisher.publish(
          keys.map((key) => ({ topic, key, event: taskCreated(key, `${key} ${round}`) })),
        );
      await publish(1);
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const inHand = new Map<number, number>();
      let most = 0;
      const byA: string[] = [];
      const subA = await pa.bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => {
          const now = (inHand.get(m.partition) ?? 0) + 1;
          inHand.set(m.partition, now);
          most = Math.max(most, now);
          try {
            await gate;
            byA.push(titleOf(m.event));
          } finally {
            inHand.set(m.partition, now - 1);
          }
        },
      });
      try {
        await waitFor(() => inHand.size === partitions, 30_000, 'A with a message in hand on each partition');
        // B joins (A gives up half the partitions, whose handlers are still running) and leaves again: A
        // wants them back while their first worker is still in hand.
        const subB = await pb.bus.subscriber.subscribe({ group, topics: [topic], handler: async () => {} });
        await sleep(2 * SESSION_MS);
        await subB.close();
        await sleep(2 * SESSION_MS);
      } finally {
        open();
      }
      await publish(2);
      await waitFor(() => byA.length === 2 * partitions, 30_000, 'A handled both rounds on every partition');
      await subA.close();
      await pa.close();
      await pb.close();
      assert.equal(most, 1, 'never two handlers in hand on one partition');
      assert.equal(new Set(byA).size, byA.length, `nothing handled twice: ${byA.join(', ')}`);
    });
  });
}
