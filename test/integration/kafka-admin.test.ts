/**
 * Reads of a Kafka topic, on a real broker: the dead letters' listing (`read`), a relay's read-back after a
 * takeover (`publishedEventIds`) and `taskflow tail`. They fetch from each partition's leader without a consumer
 * group: a new group's first join waits `group.initial.rebalance.delay.ms` on the broker (3 s by default), which
 * a takeover would add to every failover.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Admin, Producer, stringSerializer } from '@platformatic/kafka';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import { connectionOptions, type KafkaSettings } from '../../src/bus/kafka/connection.ts';
import { UNDECODABLE_EVENT_TYPE, type Bus } from '../../src/bus/types.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { waitFor } from '../helpers/app.ts';
import { keyPerPartition, taskCreated, titleOf } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const skip = kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS (scripts/test starts Kafka)';
const PARTITIONS = 3;
/** A raw producer's serializers: records written as another client would, not as the bus does. */
const STRINGS = {
  key: stringSerializer,
  value: stringSerializer,
  headerKey: stringSerializer,
  headerValue: stringSerializer,
};

describe('Kafka admin: reading a topic without a consumer group', { skip }, () => {
  let settings: KafkaSettings;
  let bus: Bus;
  let raw: Admin;
  const topic = 'reads';
  /** Per partition, the titles published, in order. */
  const titles = new Map<number, string[]>();

  before(async () => {
    settings = {
      brokers: kafkaBrokers!.split(','),
      clientId: 'taskflow-test',
      topicPrefix: `a${randomBytes(4).toString('hex')}.`,
    };
    bus = createKafkaBus(settings, { log: silentLogger });
    raw = new Admin(connectionOptions(settings));
    await bus.admin.ensureTopics([{ name: topic, partitions: PARTITIONS, retentionMs: 86_400_000 }]);
    const keys = keyPerPartition(PARTITIONS, 'reader');
    const messages = [];
    for (let i = 0; i < 10; i++)
      for (const key of keys) {
        const title = `${key} ${i}`;
        const partition = partitionFor(key, PARTITIONS);
        titles.set(partition, [...(titles.get(partition) ?? []), title]);
        messages.push({ topic, key, event: taskCreated(key, title) });
      }
    await bus.publisher.publish(messages);
  });

  after(async () => {
    await raw.close().catch(() => undefined);
    await bus.close();
  });

  /** The groups on the broker whose names carry this run's topic prefix. */
  const ourGroups = async () =>
    [...(await raw.listGroups()).keys()].filter((g) => g.startsWith(settings.topicPrefix!)).sort();

  it('reads every message of a topic in order, and no more than a limit', async () => {
    const all = await bus.admin.read(topic);
    assert.equal(all.length, 30);
    for (let p = 0; p < PARTITIONS; p++)
      assert.deepEqual(
        all.filter((m) => m.partition === p).map((m) => titleOf(m.event)),
        titles.get(p),
        `partition ${p}, in offset order`,
      );
    assert.equal((await bus.admin.read(topic, { limit: 4 })).length, 4);
    assert.deepEqual(await bus.admin.read('no-such-topic'), []);
  });

  it("finds the ids of each partition's last messages", async () => {
    const all = await bus.admin.read(topic);
    const lastTwo = new Set<string>();
    for (let p = 0; p < PARTITIONS; p++)
      for (const m of all.filter((x) => x.partition === p).slice(-2)) lastTwo.add(m.event.id);
    assert.deepEqual(await bus.admin.publishedEventIds!(topic, 2), lastTwo);
    assert.equal((await bus.admin.publishedEventIds!(topic, 100)).size, 30, 'a window past the start');
  });

  /** Follows `topic` until `until` holds of what it got (20 s at most), then stops it. */
  async function tailUntil(
    fromBeginning: boolean,
    until: (titles: string[]) => boolean,
    meanwhile?: () => Promise<void>,
  ) {
    const titles: string[] = [];
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 20_000).unref(); // then the caller's assertions say what was missing
    const tailing = bus.admin.tail(topic, { fromBeginning, signal: stop.signal }, (m) => {
      titles.push(titleOf(m.event));
      if (until(titles)) stop.abort();
    });
    while (meanwhile && !stop.signal.aborted) await meanwhile();
    await tailing;
    return titles;
  }

  it('tails a topic from the beginning, in order per partition, until stopped', async () => {
    const titlesNow = [...titles.values()].flat();
    const got = await tailUntil(true, (t) => t.length >= titlesNow.length);
    assert.deepEqual(new Set(got), new Set(titlesNow));
    for (const [p, inOrder] of titles)
      assert.deepEqual(
        got.filter((t) => inOrder.includes(t)),
        inOrder,
        `partition ${p}, in offset order`,
      );
  });

  it('tails a topic from its end: only what is published after it started', async () => {
    const before = new Set([...titles.values()].flat());
    let n = 0;
    const key = keyPerPartition(PARTITIONS, 'reader')[0]!;
    // Published until the tail has one: it starts at the end at some point after it was called.
    const got = await tailUntil(
      false,
      (t) => t.length > 0,
      async () => {
        await bus.publisher.publish([{ topic, key, event: taskCreated(key, `late ${++n}`) }]);
        await new Promise((r) => setTimeout(r, 100));
      },
    );
    assert.ok(got.length > 0 && got.every((t) => t.startsWith('late ') && !before.has(t)), got.join(', '));
  });

  it("reads what is committed when another producer's transaction is open, then what it committed", async () => {
    const txTopic = 'open-transaction';
    await bus.admin.ensureTopics([{ name: txTopic, partitions: 1, retentionMs: 86_400_000 }]);
    const send = (title: string) =>
      bus.publisher.publish([{ topic: txTopic, key: 'k', event: taskCreated('k', title) }]);
    await send('before');
    const producer = new Producer({
      ...connectionOptions(settings),
      idempotent: true,
      transactionalId: `t-${randomBytes(4).toString('hex')}`,
      serializers: STRINGS,
    });
    try {
      const tx = await producer.beginTransaction();
      await tx.send({ messages: [{ topic: settings.topicPrefix + txTopic, key: 'k', value: '{}' }] });
      await send('after'); // beyond the open transaction: not committed reading until it ends
      // The end offset counts the open transaction; the read ends where committed records end.
      const open = await bus.admin.read(txTopic);
      assert.deepEqual(
        open.map((m) => titleOf(m.event)),
        ['before'],
      );
      await tx.abort();
      // The coordinator writes the abort's marker to the partition after it answers EndTxn: the last stable
      // offset moves past the transaction shortly after abort() returns (a read at once can still end before).
      let ended: Awaited<ReturnType<typeof bus.admin.read>> = [];
      await waitFor(
        async () => (ended = await bus.admin.read(txTopic)).length >= 2,
        10_000,
        'the aborted transaction to end on its partition',
      );
      assert.deepEqual(
        ended.map((m) => titleOf(m.event)),
        ['before', 'after'],
        'the aborted record is not read',
      );
    } finally {
      await producer.close().catch(() => undefined);
    }
  });

  it('reads a record that is not an event (plain JSON, no ce_* headers) as undecodable, with an id', async () => {
    const plainTopic = 'plain-json';
    await bus.admin.ensureTopics([{ name: plainTopic, partitions: 1, retentionMs: 86_400_000 }]);
    const producer = new Producer({
      ...connectionOptions(settings),
      serializers: STRINGS,
    });
    try {
      await producer.send({
        messages: [{ topic: settings.topicPrefix + plainTopic, key: 'k', value: '{"hello":"world"}' }],
      });
    } finally {
      await producer.close().catch(() => undefined);
    }
    const [m] = await bus.admin.read(plainTopic);
    assert.equal(m?.event.type, UNDECODABLE_EVENT_TYPE);
    assert.equal(m?.event.id, `undecodable-${settings.topicPrefix}${plainTopic}-0-0`);
    assert.deepEqual(m?.event.data, {
      raw: '{"hello":"world"}',
      error: 'not a CloudEvent: no id or type (ce_id and ce_type headers, or a structured event)',
    });
  });

  it('joins no consumer group to do it', async () => {
    const before = await ourGroups();
    await bus.admin.read(topic);
    await bus.admin.publishedEventIds!(topic, 5);
    await tailUntil(true, (t) => t.length >= 3);
    assert.deepEqual(await ourGroups(), before);
  });
});

describe('Kafka publisher: a topic missing at the first send', { skip }, () => {
  const sizesOf = async (settings: KafkaSettings) => {
    const bus = createKafkaBus(settings, { log: silentLogger });
    try {
      await bus.publisher.publish([{ topic: 'task-events', key: 'k', event: taskCreated('k', 'first') }]);
      return (await bus.admin.describeTopics()).find((t) => t.name === 'task-events');
    } finally {
      await bus.close();
    }
  };
  const fresh = () => ({
    brokers: kafkaBrokers!.split(','),
    clientId: 'taskflow-test',
    topicPrefix: `p${randomBytes(4).toString('hex')}.`,
  });

  it('is created with the configured partitions and retention (KAFKA_TOPIC_PARTITIONS, KAFKA_TOPIC_RETENTION_MS)', async () => {
    const topic = await sizesOf({
      ...fresh(),
      topicOverrides: { partitions: 5, retentionMs: { 'task-events': 86_400_000 } },
    });
    assert.deepEqual([topic?.partitions, topic?.retentionMs], [5, 86_400_000]);
  });

  it('is not created with KAFKA_ENSURE_TOPICS=false: the send fails, saying so', async () => {
    const settings = { ...fresh(), ensureTopics: false };
    const bus = createKafkaBus(settings, { log: silentLogger });
    try {
      await assert.rejects(
        bus.publisher.publish([{ topic: 'task-events', key: 'k', event: taskCreated('k', 'first') }]),
        /Unknown topic .*task-events.*KAFKA_ENSURE_TOPICS=false/,
      );
      assert.deepEqual(await bus.admin.describeTopics(), []);
    } finally {
      await bus.close();
    }
  });
});
