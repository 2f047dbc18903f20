import assert from 'node:assert/strict';
import { it } from 'node:test';
import { chunkBySize } from '../../src/bus/kafka/index.ts';
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
