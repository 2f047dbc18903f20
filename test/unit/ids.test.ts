import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { uuidv7 } from '../../src/ids.ts';

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('uuidv7 (buffered random words)', () => {
  it('gives version-7 ids, all distinct and in order, across many refills of its buffer', () => {
    const ids = Array.from({ length: 5_000 }, () => uuidv7());
    for (const id of ids) assert.match(id, V7);
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual([...ids].sort(), ids, 'monotonic: each id sorts after the one before');
  });

  it('carries the current time in its first 48 bits', () => {
    const before = Date.now();
    const id = uuidv7();
    const ms = parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
    assert.ok(ms >= before && ms <= Date.now(), `${ms} within the call`);
  });

  it('draws fresh random bits for each id (its last 32 bits), past a refill of its buffer', () => {
    // The counter makes ids of one millisecond distinct anyway; the last 32 bits come from the random words
    // only, so a buffer that is not filled (zeros) or not advanced (one word repeated) shows here.
    const last = Array.from({ length: 2_000 }, () => uuidv7().slice(-8));
    assert.ok(new Set(last).size >= 1_990, `${new Set(last).size} distinct of 2,000`);
  });
});
