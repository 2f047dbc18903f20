/**
 * A bulk publish through a real daprd 1.16 sidecar (the suite's Kafka) of which the broker refuses one entry for
 * good: a topic whose `max.message.bytes` is 8,000, one event of 11 KB among events of other users. A review
 * found the error said only `HTTP 500 ERR_PUBSUB_PUBLISH_MESSAGE` (daprd's `failedEntries` dropped), and every
 * retry of the relay wrote the entries that had gone through again: duplicates without bound, and every user's
 * events held behind the refused one. Now the error names the refused event and daprd's reason, the written
 * messages are marked published (once on the topic), and the other users' events flow past it in key order.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Admin, ConfigResourceTypes, IncrementalAlterConfigOperationTypes } from '@platformatic/kafka';
import { createDaprBus, DaprPublisher } from '../../src/bus/dapr/index.ts';
import { KafkaAdmin } from '../../src/bus/kafka/index.ts';
import { PartialPublishError, type Bus } from '../../src/bus/types.ts';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import { loadConfig } from '../../src/config.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import type { Runtime } from '../../src/runtime.ts';
import { Relay } from '../../src/services/relay/index.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { appendEvents } from '../../src/store/outbox.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { startSidecar, type Sidecar, daprSkip } from '../helpers/dapr.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const id = randomBytes(3).toString('hex');
const LIMIT = 8_000;
/** An event of `user` above the topic's record limit (a description at its 10,000-character limit). */
const tooLarge = (user: string, title: string) =>
  taskCreated(user, title, { description: 'x'.repeat(10_000) });

/** The titles on `topic`, per key in partition order. */
async function titlesByKey(admin: KafkaAdmin, topic: string): Promise<Map<string, string[]>> {
  const byKey = new Map<string, string[]>();
  const stored = await admin.read(topic, { limit: 10_000 });
  stored.sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
  for (const m of stored) {
    // daprd writes the structured CloudEvent as the value: the Kafka admin sees it as `data`.
    const event = ((m.event as { data?: CloudEvent }).data ?? m.event) as CloudEvent;
    const list = byKey.get(m.key) ?? [];
    list.push(titleOf(event));
    byKey.set(m.key, list);
  }
  return byKey;
}

describe(
  'Dapr bulk publish with an entry the broker refuses for good',
  { skip: daprSkip, timeout: 90_000 },
  () => {
    let sidecar: Sidecar;
    let admin: KafkaAdmin;
    let kafka: Admin;
    const setLimit = async (topic: string, bytes: number) =>
      void (await kafka.incrementalAlterConfigs({
        resources: [
          {
            resourceType: ConfigResourceTypes.TOPIC,
            resourceName: topic,
            configs: [
              {
                name: 'max.message.bytes',
                configOperation: IncrementalAlterConfigOperationTypes.SET,
                value: String(bytes),
              },
            ],
          },
        ],
      }));
    const makeTopic = async (topic: string) => {
      await admin.ensureTopics([{ name: topic, partitions: 3, retentionMs: 3_600_000 }]);
      await setLimit(topic, LIMIT);
    };

    it('starts a sidecar', async () => {
      admin = new KafkaAdmin({ brokers: kafkaBrokers!.split(','), clientId: 'dapr-refusal' }, silentLogger);
      kafka = new Admin({ clientId: 'dapr-refusal', bootstrapBrokers: kafkaBrokers!.split(',') });
      sidecar = await startSidecar({
        appId: `dapr-refusal-${id}`,
        name: `dapr-refusal-${id}`,
        kafkaBrokers: kafkaBrokers!,
      });
    });

    it("names the refused event and daprd's reason, says which messages were written, and sends the other users' later ones", async () => {
      const topic = `dapr-refusal-pub-${id}`;
      await makeTopic(topic);
      const publisher = new DaprPublisher(
        { httpPort: sidecar.httpPort, pubsubName: 'pubsub-kafka' },
        silentLogger,
      );
      // Ten users' first events (user-4's too large), then second events of user-4 and user-1: two rounds.
      const events = Array.from({ length: 10 }, (_, i) =>
        i === 4 ? tooLarge('user-4', 'user-4 #1') : taskCreated(`user-${i}`, `user-${i} #1`),
      );
      events.push(taskCreated('user-4', 'user-4 #2'), taskCreated('user-1', 'user-1 #2'));
      const messages = events.map((event) => ({ topic, key: event.partitionkey!, event }));
      const err = await publisher.publish(messages).then(
        () => assert.fail('the publish succeeded'),
        (e: unknown) => e,
      );
      if (!(err instanceof PartialPublishError))
        return assert.fail(`not a PartialPublishError: ${String(err)}`);
      assert.match(err.message, new RegExp(`event ${events[4]!.id} \\(key user-4\\)`), err.message);
      assert.match(err.message, /too large/, err.message);
      assert.deepEqual(
        [...err.written].sort((a, b) => a - b),
        [0, 1, 2, 3, 5, 6, 7, 8, 9, 11],
        'written: all but user-4 #1 and, after it, user-4 #2',
      );
      assert.deepEqual(
        err.refused,
        [4],
        'refused: user-4 #1 (those batched with it are sent again one by one)',
      );
      const onTopic = await titlesByKey(admin, topic);
      assert.equal(onTopic.get('user-4'), undefined, "none of user-4's events");
      assert.deepEqual(onTopic.get('user-1'), ['user-1 #1', 'user-1 #2'], "user-1's both, in order");
      for (const i of [0, 2, 3, 5, 6, 7, 8, 9]) assert.deepEqual(onTopic.get(`user-${i}`), [`user-${i} #1`]);
    });

    it('relays past the refused row: nothing written twice over retries, per-key order kept, and the row goes once the topic takes it', async () => {
      const topic = `dapr-refusal-relay-${id}`;
      await makeTopic(topic);
      const db = await openDb('memory://');
      await migrate(db);
      const bus: Bus = createDaprBus(
        {
          httpPort: sidecar.httpPort,
          pubsubName: 'pubsub-kafka',
          kafka: { brokers: kafkaBrokers!.split(','), clientId: 'dapr-refusal' },
        },
        { log: silentLogger },
      );
      const relay = new Relay({
        config: loadConfig({
          DATABASE_URL: 'memory://',
          JWT_SECRET: TEST_SECRET,
          BUS: 'dapr',
          DAPR_HTTP_PORT: String(sidecar.httpPort),
          KAFKA_BROKERS: kafkaBrokers!,
        }),
        db,
        bus,
        log: silentLogger,
        metrics: new Metrics(),
      } as unknown as Runtime);
      const holdLease = () => (relay as unknown as { holdLease(): Promise<boolean> }).holdLease();
      try {
        // Commit order (= outbox order): user-4's too large event first, then 3 more events of each of 6 users,
        // user-4's among them: more than one batch of 8.
        const committed: CloudEvent[] = [tooLarge('user-4', 'user-4 #1')];
        for (let n = 2; n <= 4; n++)
          for (const user of ['user-1', 'user-2', 'user-3', 'user-4', 'user-5', 'user-6'])
            committed.push(taskCreated(user, `${user} #${n - (user === 'user-4' ? 0 : 1)}`));
        for (const event of committed) await appendEvents(db, [event]);
        // The relay publishes where an outbox row says: this test's topic, not the shared task-events.
        await db.query('UPDATE outbox SET topic = $1', [topic]);

        // The first round publishes the other users' events (8 per batch) past user-4's, which waits. daprd may
        // refuse more entries of a bulk request than the large one (those the broker batched with it), and a key
        // refused is held: its events may take another round, after its wait.
        assert.equal(await holdLease(), true);
        let others = (await relay.publishPending(8)).published;
        for (let round = 0; others < 15 && round < 5; round++) {
          await sleep(600);
          assert.equal(await holdLease(), true);
          others += await relay.publishPending(8).then(
            (r) => r.published,
            () => 0, // user-4's refused again, the round's other rows marked
          );
        }
        assert.equal(others, 15, "every other user's event, once");
        // Each try of it after its wait is refused again (nothing else pending: the send writes nothing).
        const errors: string[] = [];
        for (let attempt = 1; attempt <= 2; attempt++) {
          await sleep(1_100); // past its wait (250 ms, then 500 ms)
          assert.equal(await holdLease(), true);
          await relay.publishPending(8).then(
            () => errors.push('no error'),
            (e: unknown) => errors.push((e as Error).message),
          );
        }
        for (const e of errors)
          assert.match(e, new RegExp(`event ${committed[0]!.id} \\(key user-4\\): .*too large`));
        // While it waits, another user's new event goes at once.
        await appendEvents(db, [taskCreated('user-1', 'user-1 #4')]);
        await db.query('UPDATE outbox SET topic = $1', [topic]);
        assert.equal(await holdLease(), true);
        assert.equal((await relay.publishPending(8)).published, 1);
        // (a round's last batch is marked by the next round's read: user-4 still waits, nothing goes)
        assert.equal((await relay.publishPending(8)).published, 0);

        const left = await db.query<{ key: string; attempts: number; last_error: string }>(
          'SELECT key, attempts, last_error FROM outbox ORDER BY id',
        );
        assert.deepEqual(
          left.rows.map((r) => r.key),
          ['user-4', 'user-4', 'user-4', 'user-4'],
          "only user-4's rows wait: the refused one and those behind it",
        );
        assert.ok(left.rows[0]!.attempts >= 3, `attempts ${left.rows[0]!.attempts}`);
        assert.match(
          left.rows[0]!.last_error,
          new RegExp(`event ${committed[0]!.id} \\(key user-4\\): .*too large`),
        );
        const onTopic = await titlesByKey(admin, topic);
        assert.equal(onTopic.get('user-4'), undefined, "none of user-4's events");
        assert.deepEqual(
          onTopic.get('user-1'),
          ['user-1 #1', 'user-1 #2', 'user-1 #3', 'user-1 #4'],
          'user-1: each once, in order',
        );
        for (const user of ['user-2', 'user-3', 'user-5', 'user-6'])
          assert.deepEqual(
            onTopic.get(user),
            [`${user} #1`, `${user} #2`, `${user} #3`],
            `${user}: each once, in order`,
          );

        // The topic takes it now: user-4's events go, the refused one first.
        await setLimit(topic, 1_048_588);
        await sleep(1_100); // past its wait (1 s after three refusals)
        assert.equal(await holdLease(), true);
        await relay.publishPending(8);
        await relay.stop();
        assert.equal((await db.query('SELECT 1 FROM outbox')).rows.length, 0, 'the outbox is empty');
        assert.deepEqual((await titlesByKey(admin, topic)).get('user-4'), [
          'user-4 #1',
          'user-4 #2',
          'user-4 #3',
          'user-4 #4',
        ]);
      } finally {
        await relay.stop().catch(() => undefined);
        await bus.close();
        await db.close();
      }
    });

    it('stops the sidecar', async () => {
      await sidecar?.stop();
      await kafka?.close();
      await admin?.close();
    });
  },
);
