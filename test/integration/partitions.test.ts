/**
 * Partitions added to an existing topic. On Kafka (`kafka-topics --alter --partitions`, as `taskflow topics
 * ensure` tells an operator to do): a start leaves an existing topic as it is (KAFKA_TOPIC_PARTITIONS is for
 * topics being created); a running group is assigned an added partition and consumes it (this client does not
 * notice by itself: the group member looks every partitionCheckMs), `lag` and `read` see it, and so does the
 * relay's read-back on takeover. On the embedded bus: a start keeps them too (it grew them, and a user's newer
 * events overtook a backlog on the old partition), and `taskflow topics ensure` adds them only to a topic no
 * group has a backlog on.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Admin, Consumer } from '@platformatic/kafka';
import { createEmbeddedBus } from '../../src/bus/embedded/index.ts';
import { createKafkaBus, KafkaAdmin } from '../../src/bus/kafka/index.ts';
import { TOPICS } from '../../src/contracts/topics.ts';
import { subscribedTopics } from '../../src/runtime.ts';
import { MANIFESTS } from '../../src/services/index.ts';
import { openDb } from '../../src/store/db.ts';
import { backends } from '../helpers/db.ts';
import { partitionFor } from '../../src/bus/partitioner.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { waitFor } from '../helpers/app.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { FAST_RETRY, kafkaBrokers } from '../helpers/transports.ts';

const DAY = 86_400_000;

/** Kafka settings under a topic prefix of their own, a raw admin client, and buses that look for partitions often. */
function onKafka(prefix: string) {
  const settings = {
    brokers: kafkaBrokers!.split(','),
    clientId: 'taskflow-partitions-test',
    topicPrefix: `${prefix}${randomBytes(3).toString('hex')}.`,
  };
  const raw = new Admin({ clientId: 'partitions-test', bootstrapBrokers: settings.brokers });
  const newBus = () =>
    createKafkaBus(settings, {
      log: silentLogger,
      retry: FAST_RETRY,
      sessionTimeoutMs: 6_000,
      heartbeatIntervalMs: 500,
      partitionCheckMs: 500,
    });
  return { settings, raw, newBus };
}
const keyOn = (partition: number, of: number) => {
  for (let i = 0; ; i++) if (partitionFor(`k-${i}`, of) === partition) return `k-${i}`;
};

describe(
  'partitions added to a Kafka topic',
  { skip: kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS' },
  () => {
    const { settings, raw, newBus } = onKafka('pgrow');
    after(() => raw.close());

    it('start-up leaves an existing topic as it is when KAFKA_TOPIC_PARTITIONS asks for more (documented)', async () => {
      const bus = newBus();
      try {
        await bus.admin.ensureTopics([{ name: 'kept', partitions: 1, retentionMs: DAY }]);
        await bus.admin.ensureTopics([{ name: 'kept', partitions: 3, retentionMs: DAY }]);
        const t = (await bus.admin.describeTopics()).find((x) => x.name === 'kept');
        assert.equal(t?.partitions, 1);
      } finally {
        await bus.close();
      }
    });

    it('a running group consumes a partition added to its topic', async () => {
      const topic = 'grown';
      const group = 'grown-group';
      const bus = newBus();
      await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
      const handled: string[] = [];
      const sub = await bus.subscriber.subscribe({
        group,
        topics: [topic],
        handler: async (m) => void handled.push(titleOf(m.event)),
      });
      try {
        await bus.publisher.publish([{ topic, key: 'a', event: taskCreated('a', 'first') }]);
        await waitFor(() => handled.includes('first'), 30_000, 'the group consuming');
        // The operator adds a partition (kafka-topics --alter --partitions 2).
        await raw.createPartitions({ topics: [{ name: settings.topicPrefix + topic, count: 2 }] });
        // A new process (fresh metadata) writes a user whose key is now on partition 1.
        const key = keyOn(1, 2);
        const writer = newBus();
        await waitFor(
          async () => (await writer.admin.describeTopics()).find((t) => t.name === topic)?.partitions === 2,
          15_000,
          'two partitions in the metadata',
        );
        await writer.publisher.publish([{ topic, key, event: taskCreated(key, 'on-partition-1') }]);
        const stored = await writer.admin.read(topic);
        assert.deepEqual(
          stored.map((m) => [titleOf(m.event), m.partition]),
          [
            ['first', 0],
            ['on-partition-1', 1],
          ],
        );
        // lag sees the new partition (committed nothing there).
        const lag = await writer.admin.lag(group, new Map([[group, [topic]]]));
        assert.deepEqual(
          lag.map((l) => [l.partition, l.lag]),
          [
            [0, 0],
            [1, 1],
          ],
        );
        // The relay's read-back on takeover finds the event on the added partition.
        const readBack = new KafkaAdmin(settings);
        const ids = await readBack.publishedEventIds(topic, 10);
        await readBack.close();
        assert.equal(ids.size, 2);
        await writer.close();
        await waitFor(() => handled.includes('on-partition-1'), 30_000, 'the event on the added partition');
      } finally {
        await sub.close();
        await bus.close();
      }
    });
  },
);

describe(
  'a rejoin for added partitions that fails once',
  { skip: kafkaBrokers ? false : 'needs TEST_KAFKA_BROKERS' },
  () => {
    it('is tried again at the next look, and the group reads the added partition', async () => {
      const { settings, raw, newBus } = onKafka('prejoin');
      const topic = 'grown';
      const bus = newBus();
      await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
      const handled: string[] = [];
      const sub = await bus.subscriber.subscribe({
        group: 'grown-group',
        topics: [topic],
        handler: async (m) => void handled.push(titleOf(m.event)),
      });
      // The coordinator answering the watch's first rejoin with an error (a broker moving it, say): the client's
      // own joinGroup, called by the watch without a callback, rejects once.
      const client = Consumer.prototype as unknown as { joinGroup: (o: unknown, cb?: unknown) => unknown };
      const join = client.joinGroup;
      let failNext = false;
      client.joinGroup = function (this: unknown, o: unknown, cb?: unknown) {
        if (failNext && !cb) {
          failNext = false;
          return Promise.reject(new Error('coordinator not available'));
        }
        return join.call(this, o, cb);
      };
      try {
        await bus.publisher.publish([{ topic, key: 'a', event: taskCreated('a', 'first') }]);
        await waitFor(() => handled.includes('first'), 30_000, 'the group consuming');
        failNext = true;
        await raw.createPartitions({ topics: [{ name: settings.topicPrefix + topic, count: 2 }] });
        const writer = newBus();
        await waitFor(
          async () => (await writer.admin.describeTopics()).find((t) => t.name === topic)?.partitions === 2,
          15_000,
          'two partitions in the metadata',
        );
        const key = keyOn(1, 2);
        await writer.publisher.publish([{ topic, key, event: taskCreated(key, 'on-partition-1') }]);
        await writer.close();
        await waitFor(() => handled.includes('on-partition-1'), 20_000, 'the event on the added partition');
        assert.equal(failNext, false, 'the failing rejoin happened');
      } finally {
        client.joinGroup = join;
        await sub.close();
        await bus.close();
        await raw.close();
      }
    });
  },
);

/** A key on partition 0 of 1 that lands on another partition of `n`. */
const movingKey = (n: number) => {
  for (let i = 0; ; i++) if (partitionFor(`mover-${i}`, n) !== 0) return `mover-${i}`;
};

for (const backend of backends) {
  describe(`partitions of an existing topic on the embedded bus (${backend.name})`, () => {
    it("are kept at a start that asks for more, so a user's backlog is handled in order", async () => {
      const { db, drop } = await backend.fresh();
      const bus = createEmbeddedBus(db, { log: silentLogger, retry: FAST_RETRY, pollIntervalMs: 20 });
      try {
        const topic = 'kept-at-start';
        await bus.admin.ensureTopics([{ name: topic, partitions: 1, retentionMs: DAY }]);
        const key = movingKey(4);
        await bus.publisher.publish(
          Array.from({ length: 20 }, (_, i) => ({ topic, key, event: taskCreated(key, `old-${i}`) })),
        );
        // The operator raises KAFKA_TOPIC_PARTITIONS and restarts: a start's provisioning (no `grow`).
        await bus.admin.ensureTopics([{ name: topic, partitions: 4, retentionMs: DAY }]);
        assert.equal((await bus.admin.describeTopics()).find((t) => t.name === topic)?.partitions, 1);
        await bus.publisher.publish([{ topic, key, event: taskCreated(key, 'new-0') }]);
        const handled: string[] = [];
        const sub = await bus.subscriber.subscribe({
          group: 'kept-group',
          topics: [topic],
          handler: async (m) => void handled.push(titleOf(m.event)),
        });
        await waitFor(() => handled.length >= 21, 20_000, '21 messages');
        await sub.close();
        assert.deepEqual(handled, [...Array.from({ length: 20 }, (_, i) => `old-${i}`), 'new-0']);
      } finally {
        await bus.close();
        await drop();
      }
    });
  });
}

/** `taskflow topics ensure` on the embedded bus in `dir`, with KAFKA_TOPIC_PARTITIONS=`partitions`. */
const ensureTopics = (dir: string, partitions: string) =>
  spawnSync(process.execPath, ['bin/taskflow.js', 'topics', 'ensure'], {
    env: {
      ...process.env,
      DATABASE_URL: dir,
      BUS: 'embedded',
      LOG_LEVEL: 'warn',
      JWT_SECRET: '',
      KAFKA_TOPIC_PARTITIONS: partitions,
    },
    encoding: 'utf8',
    timeout: 120_000,
  });

/** A new embedded database whose topics `topics ensure` made with 3 partitions; `ensure` runs it again there. */
async function topicsAtThree(prefix: string) {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const dir = join(root, 'db');
  const ensure = (partitions: string) => ensureTopics(dir, partitions);
  const db = await openDb(dir);
  await db.close();
  const made = ensure('3');
  assert.equal(made.status, 0, made.stdout + made.stderr);
  return { root, dir, ensure };
}

describe('`taskflow topics ensure` on the embedded bus', () => {
  it('adds partitions only to a topic no group has a backlog on, saying which it kept and why', async () => {
    const { root, dir, ensure } = await topicsAtThree('taskflow-topics-grow-');
    try {
      // One event of a user on task-events that no group consumed yet.
      const written = await openDb(dir);
      const bus = createEmbeddedBus(written, { log: silentLogger });
      await bus.publisher.publish([
        { topic: TOPICS.taskEvents, key: 'u', event: taskCreated('u', 'waiting') },
      ]);
      await bus.close();
      await written.close();
      const kept = ensure('6');
      assert.equal(kept.status, 1, kept.stdout + kept.stderr);
      assert.match(
        kept.stdout,
        /task-events keeps 3 partitions: \d+ event\(s\) not consumed yet by .*taskflow-audit/,
      );
      assert.match(kept.stdout, /^ {2}reminders updated: 3 partitions, .* -> 6 partitions/m);
      assert.match(kept.stdout, /restart every Taskflow process/);
      // The groups catch up: now it grows.
      const caughtUp = await openDb(dir);
      const admin = createEmbeddedBus(caughtUp, { log: silentLogger }).admin;
      for (const [group, topics] of subscribedTopics(MANIFESTS))
        if (topics.includes(TOPICS.taskEvents))
          await admin.advanceOffsets(group, TOPICS.taskEvents, new Map([[partitionFor('u', 3), 1n]]));
      await caughtUp.close();
      const grown = ensure('6');
      assert.equal(grown.status, 0, grown.stdout + grown.stderr);
      assert.match(grown.stdout, /^ {2}task-events updated: 3 partitions, .* -> 6 partitions/m);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("grows a topic a stopped gateway instance's group is behind on (it held it at its size for good)", async () => {
    const { root, dir, ensure } = await topicsAtThree('taskflow-topics-gateway-');
    try {
      // A gateway instance that stopped after reading task-updates up to its start: an event came after.
      const written = await openDb(dir);
      const bus = createEmbeddedBus(written, { log: silentLogger });
      await bus.admin.advanceOffsets(
        'taskflow-gateway-gw-gone',
        TOPICS.taskUpdates,
        new Map([[partitionFor('u', 3), 0n]]),
      );
      await bus.publisher.publish([
        { topic: TOPICS.taskUpdates, key: 'u', event: taskCreated('u', 'missed by a stopped gateway') },
      ]);
      await bus.close();
      await written.close();
      const grown = ensure('6');
      assert.equal(grown.status, 0, grown.stdout + grown.stderr);
      assert.match(grown.stdout, /^ {2}task-updates updated: 3 partitions, .* -> 6 partitions/m);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
