/**
 * Partitions added to an existing Kafka topic (`kafka-topics --alter --partitions`, as `taskflow topics ensure`
 * tells an operator to do): start-up leaves an existing topic as it is (KAFKA_TOPIC_PARTITIONS is for topics
 * being created); a running group is assigned an added partition and consumes it (this client does not notice
 * by itself: the group member looks every partitionCheckMs), `lag` and `read` see it, and so does the relay's
 * read-back on takeover.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { Admin } from '@platformatic/kafka';
import { createKafkaBus, KafkaAdmin } from '../../src/bus/kafka/index.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { waitFor } from '../helpers/app.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { FAST_RETRY, kafkaBrokers } from '../helpers/transports.ts';

const DAY = 86_400_000;
const keyOn = (partition: number, of: number) => {
  for (let i = 0; ; i++) if (partitionFor(`k-${i}`, of) === partition) return `k-${i}`;
};

describe(
  'partitions added to a Kafka topic',
  { skip: kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS' },
  () => {
    const settings = {
      brokers: kafkaBrokers!.split(','),
      clientId: 'taskflow-partitions-test',
      topicPrefix: `pgrow${randomBytes(3).toString('hex')}.`,
    };
    const raw = new Admin({ clientId: 'partitions-test', bootstrapBrokers: settings.brokers });
    after(() => raw.close());
    const newBus = () =>
      createKafkaBus(settings, {
        log: silentLogger,
        retry: FAST_RETRY,
        sessionTimeoutMs: 6_000,
        heartbeatIntervalMs: 500,
        partitionCheckMs: 500,
      });

    it('start-up leaves an existing topic as it is when KAFKA_TOPIC_PARTITIONS asks for more (documented)', async () => {
      const bus = newBus();
      try {
        await bus.admin.ensureTopics([{ name: 'kept', partitions: 1, retentionMs: DAY }]);
        await bus.admin.ensureTopics([{ name: 'kept', partitions: 3, retentionMs: DAY }]);
        const t = (await bus.admin.describeTopics()).find((x) => x.name === 'kept');
        assert.equal(t?.partitions, 1);
      } finally {
        await bus.close();
      }
    });

    it('a running group consumes a partition added to its topic', async () => {
      const topic = 'grown';
      const group = 'grown-group';
      const bus = newBus();
      await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
      const handled: string[] = [];
      const sub = await bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => void handled.push(titleOf(m.event)),
      });
      try {
        await bus.publisher.publish([{ topic, key: 'a', event: taskCreated('a', 'first') }]);
        await waitFor(() => handled.includes('first'), 30_000, 'the group consuming');
        // The operator adds a partition (kafka-topics --alter --partitions 2).
        await raw.createPartitions({ topics: [{ name: settings.topicPrefix + topic, count: 2 }] });
        // A new process (fresh metadata) writes a user whose key is now on partition 1.
        const key = keyOn(1, 2);
        const writer = newBus();
        await waitFor(
          async () => (await writer.admin.describeTopics()).find((t) => t.name === topic)?.partitions === 2,
          15_000,
          'two partitions in the metadata',
        );
        await writer.publisher.publish([{ topic, key, event: taskCreated(key, 'on-partition-1') }]);
        const stored = await writer.admin.read(topic);
        assert.deepEqual(
          stored.map((m) => [titleOf(m.event), m.partition]),
          [
            ['first', 0],
            ['on-partition-1', 1],
          ],
        );
        // lag sees the new partition (committed nothing there).
        const lag = await writer.admin.lag(group, new Map([[group, [topic]]]));
        assert.deepEqual(
          lag.map((l) => [l.partition, l.lag]),
          [
            [0, 0],
            [1, 1],
          ],
        );
        // The relay's read-back on takeover finds the event on the added partition.
        const readBack = new KafkaAdmin(settings);
        const ids = await readBack.publishedEventIds(topic, 10);
        await readBack.close();
        assert.equal(ids.size, 2);
        await writer.close();
        await waitFor(() => handled.includes('on-partition-1'), 30_000, 'the event on the added partition');
      } finally {
        await sub.close();
        await bus.close();
      }
    });
  },
);
