import assert from 'node:assert/strict';
import { it } from 'node:test';
import {
  MultipleErrors,
  NetworkError,
  ProtocolError,
  TimeoutError,
  UnexpectedCorrelationIdError,
  UserError,
  createRecord,
  createRecordsBatch,
} from '@platformatic/kafka';
import { JSON_CODEC } from '../../src/bus/kafka/codec.ts';
import { MAX_REQUEST_BYTES, chunkBySize, recordSizeBound } from '../../src/bus/kafka/index.ts';
import { mayHaveBeenWritten } from '../../src/bus/kafka/publisher.ts';
import { taskCreated } from '../helpers/events.ts';

it('splits a batch into ordered chunks under the size limit', () => {
  const messages = Array.from({ length: 50 }, (_, i) => ({
    topic: 't',
    key: 'k',
    event: taskCreated('k', `${i}-${'x'.repeat(400)}`),
  }));
  const size = (m: (typeof messages)[number]) => JSON.stringify(m.event).length;
  const chunks = chunkBySize(messages, 8 * 1024, size);
  assert.ok(chunks.length > 1);
  for (const c of chunks)
    if (c.length > 1) assert.ok(c.reduce((n, m) => n + size(m), 0) <= 8 * 1024, 'each chunk under the limit');
  assert.deepEqual(chunks.flat(), messages, 'same messages, same order');
  for (const c of chunks) assert.ok(c.length >= 1);
  assert.deepEqual(chunkBySize([], 1024, size), []);
  assert.equal(
    chunkBySize(messages.slice(0, 1), 10, size).length,
    1,
    'an event larger than the limit still goes, alone',
  );
});

it("sends a relay batch of 500 task events in one request, and counts a header's UTF-8 bytes", () => {
  const records = Array.from({ length: 500 }, (_, i) => {
    const event = taskCreated(`user-${i % 50}`, `task ${i}`, { description: 'd'.repeat(200) });
    return {
      key: event.partitionkey!,
      ...JSON_CODEC.encode(event, { 'taskflow-relay': 'host/1234/0a1b2c3d' }),
    };
  });
  assert.equal(chunkBySize(records, MAX_REQUEST_BYTES, recordSizeBound).length, 1);

  const ascii = { key: 'k', value: Buffer.alloc(10), headers: new Map([['ce_useragent', 'a'.repeat(100)]]) };
  const cjk = { key: 'k', value: Buffer.alloc(10), headers: new Map([['ce_useragent', '日'.repeat(100)]]) };
  assert.equal(recordSizeBound(cjk) - recordSizeBound(ascii), 200, 'three bytes a character, not one');
});

/** A record as the client encodes it: key, header names and values as UTF-8 (the publisher's serializers). */
const encoded = (r: { key: string; value: Buffer; headers: Map<string, string> }, timestamp: bigint) => ({
  topic: 't',
  key: Buffer.from(r.key),
  value: r.value,
  headers: new Map([...r.headers].map(([k, v]) => [Buffer.from(k), Buffer.from(v)])),
  timestamp,
});

it('bounds the bytes the Kafka client writes for each record, and keeps every record batch under 1 MiB', () => {
  const odd = (i: number) => ({
    key: i % 3 ? `user-${i}` : `ユーザー${'名'.repeat(i % 40)}`,
    value: Buffer.alloc((i * 997) % 20_000),
    headers: new Map(
      Array.from({ length: 1 + (i % 20) }, (_, h) => [`ce_x${h}`, h % 2 ? '字'.repeat(i % 300) : '']),
    ),
  });
  const records = Array.from({ length: 2_000 }, (_, i) => odd(i));
  // Far-apart timestamps and large offsets: the varints at their longest.
  for (let i = 0; i < records.length; i += 97) {
    const r = records[i]!;
    const record = createRecord(encoded(r, BigInt(-(2 ** 50))), 2 ** 30, BigInt(2 ** 50));
    assert.ok(
      recordSizeBound(r) >= record.length,
      `record ${i}: bound ${recordSizeBound(r)} < ${record.length}`,
    );
  }
  for (const chunk of chunkBySize(records, MAX_REQUEST_BYTES, recordSizeBound)) {
    const batch = createRecordsBatch(chunk.map((r, i) => encoded(r, BigInt(Date.now() + i))));
    assert.ok(batch.length <= 1_048_588, `a record batch of ${batch.length} bytes`);
  }
});

it("splits the contract test's 1.8 MB batch of one key into two requests", () => {
  const records = Array.from({ length: 800 }, (_, i) => {
    const event = taskCreated('big-batch', String(i));
    event.useragent = `日本語のブラウザ ${'字'.repeat(480)}`;
    return { key: 'big-batch', ...JSON_CODEC.encode(event) };
  });
  assert.equal(chunkBySize(records, MAX_REQUEST_BYTES, recordSizeBound).length, 2);
});

it('a failed send may have written its records unless every error in it is a refusal the broker answered', () => {
  const refused = (id: string) => new ProtocolError(id);
  // Refusals: nothing was written; the producer and its sequence numbers stay.
  assert.equal(mayHaveBeenWritten(refused('MESSAGE_TOO_LARGE')), false);
  assert.equal(mayHaveBeenWritten(refused('UNKNOWN_TOPIC_OR_PARTITION')), false);
  assert.equal(
    mayHaveBeenWritten(
      new MultipleErrors('two partitions', [refused('NOT_LEADER_OR_FOLLOWER'), refused('INVALID_RECORD')]),
    ),
    false,
  );
  assert.equal(mayHaveBeenWritten(new UserError('Cannot close producer while producing messages.')), false);
  // The leader appended, then answered an error (min.insync.replicas lost meanwhile): written, whatever its text.
  assert.equal(mayHaveBeenWritten(refused('NOT_ENOUGH_REPLICAS_AFTER_APPEND')), true);
  assert.equal(mayHaveBeenWritten(refused('REQUEST_TIMED_OUT')), true);
  assert.equal(mayHaveBeenWritten(refused('OUT_OF_ORDER_SEQUENCE_NUMBER')), true);
  // No answer, or one the client could not pair: may be written.
  assert.equal(mayHaveBeenWritten(new TimeoutError('Request timed out after 30000ms')), true);
  assert.equal(mayHaveBeenWritten(new UnexpectedCorrelationIdError('Unexpected correlation ID 17')), true);
  assert.equal(mayHaveBeenWritten(new NetworkError('Connection to 127.0.0.1:9092 lost')), true);
  assert.equal(
    mayHaveBeenWritten(
      new MultipleErrors('retried', [refused('NOT_LEADER_OR_FOLLOWER'), new TimeoutError('x')]),
    ),
    true,
  );
  // An error this code does not know: may be written (a new producer costs one request; a kept one, records).
  assert.equal(mayHaveBeenWritten(new Error('something new')), true);
  assert.equal(mayHaveBeenWritten('a string'), true);
  assert.equal(
    mayHaveBeenWritten(new Error('Kafka publish failed', { cause: refused('MESSAGE_TOO_LARGE') })),
    false,
  );
});
