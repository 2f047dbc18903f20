import assert from 'node:assert/strict';
import { it } from 'node:test';
import { JSON_CODEC } from '../../src/bus/kafka/codec.ts';
import { MAX_REQUEST_BYTES, chunkBySize, recordSizeBound } from '../../src/bus/kafka/index.ts';
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
  assert.ok(recordSizeBound(ascii) >= 1 + 10 + 12 + 100, 'key, value, header name and value');
});
