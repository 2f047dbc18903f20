/**
 * The embedded log places a key on the partition Kafka's default partitioner gives it: the same murmur2 as
 * the Kafka client's (`@platformatic/kafka`, used here only as the reference), over keys of every shape.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';
import { murmur2 as reference } from '@platformatic/kafka';
import { murmur2, partitionFor } from '../../src/bus/partitioner.ts';

it('hashes every key as the Kafka client does, so a key has one partition on both transports', () => {
  const keys = ['', 'a', 'ab', 'abc', 'abcd', 'user-1', 'ünïcødé', '😀 emoji', 'x'.repeat(1000)];
  for (let i = 0; i < 20_000; i++) keys.push(randomBytes(i % 64).toString(i % 2 ? 'base64' : 'latin1'));
  for (const key of keys) {
    const bytes = Buffer.from(key, 'utf8');
    assert.equal(murmur2(bytes) & 0x7fffffff, Number(reference(bytes)) & 0x7fffffff, JSON.stringify(key));
  }
  // The partition is the hash made positive (Kafka's toPositive), modulo the partition count.
  assert.deepEqual(
    ['user-1', 'alice', 'bob'].map((k) => partitionFor(k, 3)),
    ['user-1', 'alice', 'bob'].map((k) => (Number(reference(Buffer.from(k))) & 0x7fffffff) % 3),
  );
});
