/**
 * Event contracts at their edges, as other producers write them: a CloudEvents Kafka binary-mode record whose
 * content-type carries a parameter (`application/json; charset=utf-8`, allowed by RFC 2046 and CloudEvents) is
 * read as the valid event it is, by the record codec, the Dapr delivery path and a Kafka consumer on a real
 * broker; what Taskflow writes keeps the bare media type.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { eventFromDelivery } from '../../src/bus/dapr/wire.ts';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import { decodeRecord, JSON_CODEC, type StoredRecord } from '../../src/bus/kafka/codec.ts';
import type { CloudEvent } from '../../src/contracts/cloudevent.ts';
import { dlqTopic } from '../../src/contracts/topics.ts';
import { eventProblems } from '../../src/contracts/schemas.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { waitFor } from '../helpers/app.ts';
import { taskCreated } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const WITH_CHARSET = 'application/json; charset=utf-8';

describe('content-type with a parameter', () => {
  it('a binary-mode JSON record with content-type application/json; charset=utf-8 is read as a valid event', () => {
    const event = taskCreated('u', 'x');
    const { headers, value } = JSON_CODEC.encode(event);
    assert.equal(headers.get('content-type'), 'application/json', 'what we write is unchanged');
    headers.set('content-type', WITH_CHARSET);
    const record: StoredRecord = {
      topic: 'task-events',
      partition: 0,
      offset: 0n,
      key: 'u',
      value,
      headers,
      timestamp: 0n,
    };
    const m = decodeRecord(record, (t) => t, JSON_CODEC);
    assert.equal(m.event.type, 'task.created', 'decoded as the event');
    assert.deepEqual(m.event, event);
    // It was dead-lettered: "/datacontenttype must be equal to constant".
    assert.deepEqual(eventProblems(m.event), []);
    // Case and spaces of the media type do not matter either (RFC 2045: case-insensitive).
    headers.set('content-type', 'Application/JSON ;charset="UTF-8"');
    assert.deepEqual(eventProblems(decodeRecord(record, (t) => t, JSON_CODEC).event), []);
  });

  it('the Dapr delivery path reads a structured event whose datacontenttype has a parameter as valid', () => {
    const event = taskCreated('u', 'x');
    const structured = eventFromDelivery({ ...event, datacontenttype: WITH_CHARSET, pubsubname: 'p' }, {});
    assert.deepEqual(eventProblems(structured), []);
    assert.deepEqual(structured, event);
  });

  it(
    'a Kafka consumer handles such a record from another producer instead of dead-lettering it',
    { skip: kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS' },
    async () => {
      const p = `charset${randomBytes(3).toString('hex')}.`;
      const bus = createKafkaBus(
        { brokers: kafkaBrokers!.split(','), clientId: 'charset', topicPrefix: p },
        { log: silentLogger, retry: { maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1 } },
      );
      const producer = new Kafka({
        clientId: 'other',
        brokers: kafkaBrokers!.split(','),
        logLevel: logLevel.NOTHING,
      }).producer();
      const got: CloudEvent[] = [];
      let sub: { close(): Promise<void> } | undefined;
      try {
        await bus.admin.ensureTopics([{ name: 'task-events', partitions: 1, retentionMs: 3_600_000 }]);
        await producer.connect();
        const event = taskCreated('u', 'from another producer');
        const { headers, value } = JSON_CODEC.encode(event);
        headers.set('content-type', WITH_CHARSET);
        await producer.send({
          topic: `${p}task-events`,
          messages: [{ key: 'u', value, headers: Object.fromEntries(headers) }],
        });
        sub = await bus.subscriber.subscribe({
          group: 'charset-readers',
          topics: ['task-events'],
          handler: async (m) => void got.push(m.event),
        });
        await waitFor(() => got.length >= 1, 20_000, 'the event handled (not dead-lettered)');
        assert.deepEqual(got, [event]);
        assert.deepEqual(await bus.admin.read(dlqTopic('charset-readers')).catch(() => []), []);
      } finally {
        await sub?.close();
        await producer.disconnect();
        await bus.close();
      }
    },
  );
});
