/**
 * BUS=dapr's admin on a broker shared with Kafka-transport environments (the suite's Kafka): their topics carry
 * a KAFKA_TOPIC_PREFIX, which Dapr's topics do not, and a review found them listed as this deployment's
 * (`taskflow dlq list` with no group read `staging.<group>.dlq` as a group `staging.<group>`). Now another
 * environment's topics (known by its `<prefix>task-events`) are left out; this deployment's are kept, even one
 * that starts like such a prefix.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { DaprAdmin } from '../../src/bus/dapr/index.ts';
import { KafkaAdmin } from '../../src/bus/kafka/index.ts';
import { DLQ_SPEC, dlqTopic } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const skip = kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS';
const id = randomBytes(3).toString('hex');

describe('Dapr admin on a shared broker', { skip, timeout: 60_000 }, () => {
  it("lists no other environment's prefixed topics", async () => {
    const kafka = new KafkaAdmin(
      { brokers: kafkaBrokers!.split(','), clientId: 'dapr-admin', topicPrefix: '' },
      silentLogger,
    );
    const admin = new DaprAdmin(kafka);
    try {
      const group = `dapr-admin-${id}-audit`; // a group of this deployment
      const prefix = `staging${id}.`; // another environment's KAFKA_TOPIC_PREFIX
      const alike = `dapr-admin-${id}-`; // a prefix this deployment's own topic names start with
      const topic = (name: string, partitions = 1) => ({ name, partitions, retentionMs: 3_600_000 });
      await kafka.ensureTopics([
        { name: dlqTopic(group), ...DLQ_SPEC },
        topic(`${prefix}task-events`, 3),
        topic(`${prefix}reminders`, 3),
        { name: `${prefix}${dlqTopic(group)}`, ...DLQ_SPEC },
        topic(`${alike}task-events`),
      ]);
      const names = (await admin.describeTopics()).map((t) => t.name);
      assert.ok(names.includes(dlqTopic(group)), "this deployment's dead-letter topic is listed");
      for (const other of [`${prefix}task-events`, `${prefix}reminders`, `${prefix}${dlqTopic(group)}`])
        assert.ok(!names.includes(other), `${other} is another environment's`);
      const all = (await kafka.describeTopics()).map((t) => t.name);
      assert.ok(all.includes(`${prefix}${dlqTopic(group)}`), 'the brokers have it');
    } finally {
      await admin.close();
    }
  });
});
