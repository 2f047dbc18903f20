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
  const chunks = chunkBySize(messages, 8 * 1024);
  assert.ok(chunks.length > 1);
  assert.deepEqual(chunks.flat(), messages, 'same messages, same order');
  for (const c of chunks) assert.ok(c.length >= 1);
  assert.deepEqual(chunkBySize([], 1024), []);
  assert.equal(
    chunkBySize(messages.slice(0, 1), 10).length,
    1,
    'an event larger than the limit still goes, alone',
  );
});
