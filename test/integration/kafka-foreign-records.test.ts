/**
 * Records another producer wrote, which the Kafka transport must handle or dead-letter and read on past, each
 * failing before its fix on a real broker:
 * - a CreateTime beyond what Date holds (a clock in the wrong unit) threw out of the decode, unhandled: the
 *   process ended, and again at the same record after every restart;
 * - a header without a value (Java's `headers.add(k, null)`, Kafka Connect) went into the record's dead letter
 *   as `undefined`, whose send threw for ever: the partition was stuck;
 * - a record the topic took whose dead letter (its bytes plus the failure headers) is over the broker's limit
 *   was refused on every try: the partition was stuck too. The letter holds the event's first 10,000 characters,
 *   and none of its attributes (headers) over 200 characters: a record whose bulk was its ce_source gave a cut
 *   letter as large.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Producer, stringSerializer } from '@platformatic/kafka';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import { PermanentError, UNDECODABLE_EVENT_TYPE } from '../../src/bus/types.ts';
import { toBinaryHeaders } from '../../src/contracts/cloudevent.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { waitFor } from '../helpers/app.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { FAST_RETRY, kafkaBrokers } from '../helpers/transports.ts';

const skip = kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS';

describe('records of another producer on Kafka', { skip, timeout: 120_000 }, () => {
  const brokers = kafkaBrokers?.split(',') ?? [];
  const prefix = `kafka-foreign-${randomBytes(3).toString('hex')}.`;
  let bus: ReturnType<typeof createKafkaBus>;
  let raw: Producer<string, Buffer, string, string | undefined>;
  before(() => {
    bus = createKafkaBus(
      { brokers, clientId: 'kafka-foreign', topicPrefix: prefix },
      { log: silentLogger, retry: FAST_RETRY, sessionTimeoutMs: 6_000, heartbeatIntervalMs: 500 },
    );
    raw = new Producer<string, Buffer, string, string | undefined>({
      clientId: 'kafka-foreign-producer',
      bootstrapBrokers: brokers,
      serializers: {
        key: stringSerializer,
        headerKey: stringSerializer,
        headerValue: (v?: string) => (v === undefined ? undefined : Buffer.from(v)),
      },
    });
  });
  after(async () => {
    await raw?.close().catch(() => undefined);
    await bus?.close();
  });

  /**
   * Writes the largest record the broker takes (a foreign producer's, or one written before a limit was
   * lowered): `write(size)` tried 1 KiB at a time down from 1 MiB, refused for its size until then.
   */
  const writeLargest = async (write: (size: number) => Promise<unknown>) => {
    for (let size = 1_048_576; ; size -= 1024) {
      try {
        return await write(size);
      } catch (err) {
        if (size < 900_000) throw err;
      }
    }
  };

  /** Subscribes `group` to `topic`, failing for good the events titled `poison`; the titles handled. */
  const handledBy = async (group: string, topic: string) => {
    const handled: string[] = [];
    const sub = await bus.subscriber.subscribe({
      group,
      topics: [topic],
      handler: async (m) => {
        const title = titleOf(m.event);
        // A long failure (a driver's error quoting the row): the letter's error header is at its longest.
        if (title === 'poison') throw new PermanentError(`cannot store: ${'e'.repeat(3000)}`);
        handled.push(title);
      },
    });
    return { handled, sub };
  };

  it('handles a record stamped beyond what a Date holds, and the next one', async () => {
    const topic = 'stamped';
    await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
    const event = taskCreated('u1', 'far future');
    await raw.send({
      messages: [
        {
          topic: prefix + topic,
          key: 'u1',
          value: Buffer.from(JSON.stringify(event.data)),
          headers: toBinaryHeaders(event),
          timestamp: 10n ** 16n, // past Date's 8.64e15 ms
        },
      ],
    });
    await bus.publisher.publish([{ topic, key: 'u1', event: taskCreated('u1', 'next') }]);
    const { handled, sub } = await handledBy('stamped-group', topic);
    try {
      await waitFor(() => handled.includes('next'), 30_000, 'the record after it');
      assert.deepEqual(handled, ['far future', 'next']);
      const [read] = await bus.admin.read(topic);
      assert.equal(read!.timestamp, new Date(0).toISOString(), 'read as the epoch');
    } finally {
      await sub.close();
    }
  });

  it('dead-letters a record with a header without a value, and reads on', async () => {
    const topic = 'valueless';
    await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
    const poison = taskCreated('u1', 'poison');
    const headers = toBinaryHeaders(poison) as Map<string, string | undefined>;
    headers.set('ce_comexampleext', undefined);
    await raw.send({
      messages: [
        { topic: prefix + topic, key: 'u1', value: Buffer.from(JSON.stringify(poison.data)), headers },
      ],
    });
    await bus.publisher.publish([{ topic, key: 'u1', event: taskCreated('u1', 'next') }]);
    const { handled, sub } = await handledBy('valueless-group', topic);
    try {
      await waitFor(() => handled.includes('next'), 30_000, 'the record after the dead-lettered one');
      const letters = await bus.admin.read('valueless-group.dlq');
      assert.deepEqual(
        letters.map((l) => [l.event.id, l.headers.ce_comexampleext]),
        [[poison.id, '']],
      );
    } finally {
      await sub.close();
    }
  });

  it('dead-letters a record whose letter is over the broker limit as its first 10,000 characters, and reads on', async () => {
    const topic = 'large';
    await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
    const poison = taskCreated('u1', 'poison');
    const task = (poison.data as { task: { description: string } }).task;
    await writeLargest((size) => {
      task.description = 'x'.repeat(size);
      return bus.publisher.publish([{ topic, key: 'u1', event: poison }]);
    });
    await bus.publisher.publish([{ topic, key: 'u1', event: taskCreated('u1', 'next') }]);
    const { handled, sub } = await handledBy('large-group', topic);
    try {
      await waitFor(() => handled.includes('next'), 30_000, 'the record after the dead-lettered one');
      const letters = await bus.admin.read('large-group.dlq');
      assert.equal(letters.length, 1);
      const letter = letters[0]!;
      assert.equal(letter.event.id, poison.id);
      assert.equal(letter.event.type, UNDECODABLE_EVENT_TYPE, 'kept back by a replay: not the event');
      const data = letter.event.data as { raw: string; error: string };
      assert.equal(data.raw.length, 10_000);
      assert.ok(data.raw.startsWith('{'), data.raw.slice(0, 40));
      assert.match(data.error, /too large for the dead-letter topic; the whole record is at large\/0\/0/);
      assert.match(
        letter.headers['x-dlq-error'] ?? '',
        /description must NOT have more than 10000 characters/,
      );
    } finally {
      await sub.close();
    }
  });

  it('dead-letters a record whose bulk is an attribute (its ce_source header), and reads on', async () => {
    const topic = 'long-source';
    await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: 86_400_000 }]);
    const poison = taskCreated('u1', 'poison');
    await writeLargest((size) =>
      raw.send({
        messages: [
          {
            topic: prefix + topic,
            key: 'u1',
            value: Buffer.from(JSON.stringify(poison.data)),
            headers: toBinaryHeaders({ ...poison, source: 'x'.repeat(size) }),
          },
        ],
      }),
    );
    await bus.publisher.publish([{ topic, key: 'u1', event: taskCreated('u1', 'next') }]);
    const { handled, sub } = await handledBy('long-source-group', topic);
    try {
      await waitFor(() => handled.includes('next'), 30_000, 'the record after the dead-lettered one');
      const [letter, ...more] = await bus.admin.read('long-source-group.dlq');
      assert.deepEqual(more, []);
      assert.deepEqual(
        [letter!.event.id, letter!.event.source, letter!.event.type],
        [poison.id, 'taskflow/dead-letter', UNDECODABLE_EVENT_TYPE],
      );
    } finally {
      await sub.close();
    }
  });
});
