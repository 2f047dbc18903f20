/**
 * An event whose data is JSON text until read (withDataJson, how the relay reads outbox rows): it behaves as
 * the event it encodes everywhere, and the JSON codec writes the text unparsed only while it is still the data.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { JSON_CODEC } from '../../src/bus/kafka/codec.ts';
import {
  makeEvent,
  toBinaryHeaders,
  unreadDataJson,
  withDataJson,
  type CloudEvent,
} from '../../src/contracts/cloudevent.ts';

const data = { user_id: 'u1', task: { id: 't1', title: 'Write "it"', tags: ['a', 'b'] }, previous: null };
/** The data as PostgreSQL's jsonb prints it (spaces after `:` and `,`), as the relay reads it. */
const text =
  '{"task": {"id": "t1", "tags": ["a", "b"], "title": "Write \\"it\\""}, "user_id": "u1", "previous": null}';

function fromText(): { full: CloudEvent; lazy: CloudEvent } {
  const full = makeEvent({ type: 'task.created', source: '/taskflow/api', subject: 't1', key: 'u1', data });
  const { data: _, ...envelope } = full;
  return { full, lazy: withDataJson(structuredClone(envelope), text) };
}

test('the event reads, serializes and copies as the whole event', () => {
  const { full, lazy } = fromText();
  assert.deepEqual(JSON.parse(JSON.stringify(lazy)), JSON.parse(JSON.stringify(full)));
  assert.deepEqual({ ...lazy }, full);
  assert.deepEqual(lazy.data, data);
  assert.equal(lazy.data, lazy.data, 'parsed once, the same value after');
  assert.deepEqual(Object.keys(lazy).sort(), Object.keys(full).sort());
});

test('the JSON codec writes the text as the value, and the same headers, without parsing it', () => {
  const { full, lazy } = fromText();
  const extra = { 'taskflow-relay': 'r1' };
  const record = JSON_CODEC.encode(lazy, extra);
  assert.equal(record.value.toString(), text);
  assert.deepEqual(record.headers, JSON_CODEC.encode(full, extra).headers);
  assert.deepEqual(toBinaryHeaders(lazy), toBinaryHeaders(full));
  assert.equal(unreadDataJson(lazy), text, 'encoding did not read data');
});

test('once data is read or set, the text is not used again (a change in place is written)', () => {
  const read = fromText().lazy;
  (read.data as typeof data).task.title = 'changed';
  assert.equal(unreadDataJson(read), undefined);
  assert.equal(JSON.parse(JSON_CODEC.encode(read).value.toString()).task.title, 'changed');

  const set = fromText().lazy;
  set.data = { other: 1 };
  assert.equal(unreadDataJson(set), undefined);
  assert.equal(JSON_CODEC.encode(set).value.toString(), '{"other":1}');

  const spread = fromText().lazy;
  const copy = { ...spread };
  assert.equal(unreadDataJson(spread), undefined, 'the spread read data');
  assert.equal(unreadDataJson(copy), undefined);
  (copy.data as typeof data).user_id = 'u2';
  assert.equal(JSON.parse(JSON_CODEC.encode(copy).value.toString()).user_id, 'u2');
});

test('an ordinary event has no text', () => {
  assert.equal(unreadDataJson(fromText().full), undefined);
});
