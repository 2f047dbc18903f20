/**
 * Two edges of the Dapr transport, each with real daprd 1.16 sidecars on the suite's Kafka (a review found
 * both): a bulk delivery larger than the server's body limit (30 valid events of 9,000-character descriptions,
 * about 300 KiB in one request) was refused with 413, redelivered and dead-lettered whole; and a process whose
 * sidecar was refused at GET /dapr/subscribe (a rotated APP_API_TOKEN) said ready on /readyz while nothing was
 * subscribed or delivered. And a bulk group's dead letter that daprd 1.16 could not write (the dead-letter topic
 * refusing the record) was committed past and lost: the process writes it, and holds the partition until it can.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DaprPublisher } from '../../src/bus/dapr/publisher.ts';
import { listDeadLetters } from '../../src/bus/dlq.ts';
import { Admin, ConfigResourceTypes, IncrementalAlterConfigOperationTypes } from '@platformatic/kafka';
import { PermanentError, type BatchItem, type BusMessage } from '../../src/bus/types.ts';
import { dlqTopic } from '../../src/contracts/topics.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { consumerTarget } from '../../src/services/consumer-target.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { startApp, waitFor, type TestApp } from '../helpers/app.ts';
import {
  startDaprApp,
  startSidecar,
  type DaprApp,
  type Sidecar,
  daprSkip,
  makeTopicAndDeadLetters,
} from '../helpers/dapr.ts';
import { taskCreated, titleOf } from '../helpers/events.ts';
import { freePorts } from '../helpers/processes.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const id = randomBytes(3).toString('hex');
const root = fileURLToPath(new URL('../..', import.meta.url));

describe('Dapr edges', { skip: daprSkip, timeout: 180_000 }, () => {
  it('hands a bulk delivery over 256 KiB to its batch handler: 30 events of 9,000-character descriptions, none dead-lettered', async () => {
    const group = `dapr-edges-bulk-${id}`;
    const topic = `dapr-edges-bulk-events-${id}`;
    await makeTopicAndDeadLetters(topic, group);
    const db = await openDb('memory://');
    await migrate(db);
    const handled: string[] = [];
    let dapr: DaprApp | undefined;
    try {
      dapr = await startDaprApp(db, {
        appId: group,
        name: group,
        targets: [
          consumerTarget({
            manifest: { name: 'edges-bulk', consumes: { group, topics: [topic] } },
            batchIntervalMs: 500,
            setup: async () => ({
              handle: async (m: BusMessage) => void handled.push(titleOf(m.event)),
              handleBatch: async (items: readonly BatchItem[]) =>
                void handled.push(...items.map((i) => titleOf(i.message.event))),
            }),
          }),
        ],
        topics: [topic],
        kafkaBrokers: kafkaBrokers!,
      });
      const events = Array.from({ length: 30 }, (_, i) =>
        taskCreated(`user-${i}`, `big-${i}`, { description: 'x'.repeat(9_000) }),
      );
      const bus = dapr.app.proc.runtime.bus;
      await bus.publisher.publish(events.map((event) => ({ topic, key: event.partitionkey!, event })));
      const outcome = await waitFor(
        async () => {
          const letters = await listDeadLetters(bus.admin, group);
          return handled.length + letters.length >= 30
            ? { handled: handled.length, deadLettered: letters.length }
            : undefined;
        },
        90_000,
        'every event handled or dead-lettered',
      );
      assert.deepEqual(outcome, { handled: 30, deadLettered: 0 });
    } finally {
      await dapr?.stop();
      await db.close();
    }
  });

  it("publishes a relay batch whose round is over daprd's 4 MiB body limit: 450 events of 10,000-character descriptions", async () => {
    const topic = `dapr-edges-size-${id}`;
    await makeTopicAndDeadLetters(topic, `dapr-edges-size-${id}`);
    const sidecar = await startSidecar({
      appId: `dapr-edges-size-${id}`,
      name: `dapr-edges-size-${id}`,
      kafkaBrokers: kafkaBrokers!,
    });
    try {
      const publisher = new DaprPublisher(
        { httpPort: sidecar.httpPort, pubsubName: 'pubsub-kafka' },
        silentLogger,
      );
      // Valid events of distinct users, one round: before, one bulk request of 4.7 MB, refused (400) every time,
      // and the relay sent the same batch again for ever.
      const events = Array.from({ length: 450 }, (_, i) =>
        taskCreated(`user-${i}`, `t${i}`, { description: 'x'.repeat(10_000) }),
      );
      await publisher.publish(events.map((event) => ({ topic, key: event.partitionkey!, event })));
    } finally {
      await sidecar.stop();
    }
  });

  it('is not ready while its sidecar has not read its subscriptions (refused: another APP_API_TOKEN)', async () => {
    const group = `dapr-edges-ready-${id}`;
    const topic = `dapr-edges-ready-events-${id}`;
    await makeTopicAndDeadLetters(topic, group);
    const db = await openDb('memory://');
    await migrate(db);
    let sidecar: Sidecar | undefined;
    let app: TestApp | undefined;
    let handled = 0;
    try {
      const [appPort, httpPort] = await freePorts(2);
      sidecar = await startSidecar({
        appId: group,
        name: group,
        kafkaBrokers: kafkaBrokers!,
        appPort: appPort!,
        httpPort: httpPort!,
        apiToken: 'sidecar-token-0123456789abcdef-new',
      });
      app = await startApp(db, {
        targets: [
          consumerTarget({
            manifest: { name: 'edges-ready', consumes: { group, topics: [topic] } },
            setup: async () => ({ handle: async () => void handled++ }),
          }),
        ],
        env: {
          BUS: 'dapr',
          PORT: String(appPort),
          DAPR_HTTP_PORT: String(httpPort),
          KAFKA_BROKERS: kafkaBrokers!,
          APP_API_TOKEN: 'app-token-0123456789abcdef-old',
          DAPR_API_TOKEN: 'sidecar-token-0123456789abcdef-new',
        },
      });
      await app.proc.runtime.bus.publisher.publish([{ topic, key: 'u', event: taskCreated('u', 'x') }]);
      await sleep(10_000); // daprd asked for the subscriptions and was refused
      const readyz = await fetch(`${app.url}/readyz`);
      const body = JSON.stringify(await readyz.json());
      assert.equal(handled, 0, 'the premise: nothing delivered');
      assert.equal(readyz.status, 503, body);
      assert.match(body, /has not read this app's subscriptions/);
    } finally {
      await app?.stop();
      await sidecar?.stop();
      await db.close();
    }
  });

  it("keeps one user's handlings one at a time when the sidecar dies while the app handles an event", async () => {
    const group = `dapr-edges-restart-${id}`;
    const topic = `dapr-edges-restart-events-${id}`;
    await makeTopicAndDeadLetters(topic, group);
    const db = await openDb('memory://');
    await migrate(db);
    const log: string[] = [];
    let slow = true;
    let sidecar: Sidecar | undefined;
    let app: TestApp | undefined;
    try {
      const [appPort, httpPort] = await freePorts(2);
      const start = () =>
        startSidecar({ appId: group, name: group, kafkaBrokers: kafkaBrokers!, appPort, httpPort });
      sidecar = await start();
      app = await startApp(db, {
        targets: [
          consumerTarget({
            manifest: { name: 'edges-restart', consumes: { group, topics: [topic] } },
            setup: async () => ({
              handle: async (m: BusMessage) => {
                const title = titleOf(m.event);
                log.push(`start ${title}`);
                // Longer than the new sidecar takes to get the partition (about 10 s).
                if (title === 'e1' && slow) {
                  slow = false;
                  await sleep(16_000);
                }
                log.push(`end ${title}`);
              },
            }),
          }),
        ],
        env: {
          BUS: 'dapr',
          PORT: String(appPort),
          DAPR_HTTP_PORT: String(httpPort),
          KAFKA_BROKERS: kafkaBrokers!,
        },
      });
      await waitFor(async () => (await sidecar!.subscribedTopics()).includes(topic), 30_000, 'subscribed');
      const events = ['e1', 'e2', 'e3'].map((t) => taskCreated('u1', t));
      await app.proc.runtime.bus.publisher.publish(events.map((event) => ({ topic, key: 'u1', event })));
      await waitFor(() => log.includes('start e1'), 30_000, 'e1 in flight');
      process.kill(
        Number(readFileSync(join(root, '.cache/dapr/run', group, 'daprd.pid'), 'utf8')),
        'SIGKILL',
      );
      await sleep(300);
      await sidecar.stop();
      sidecar = await start();
      await waitFor(() => log.includes('end e3'), 60_000, 'e3 handled');
      // Each start is followed by its end before the next start: one handling at a time, in order.
      for (let i = 0; i < log.length; i += 2)
        assert.equal(log[i + 1], log[i]!.replace('start', 'end'), log.join(', '));
      assert.deepEqual([...new Set(log.filter((l) => l.startsWith('end')))], ['end e1', 'end e2', 'end e3']);
    } finally {
      await app?.stop();
      await sidecar?.stop();
      await db.close();
    }
  });
  it("holds a bulk group's partition while its dead-letter topic refuses a letter, and writes it once it can: nothing committed past it", async () => {
    const group = `dapr-edges-letter-${id}`;
    const topic = `dapr-edges-letter-events-${id}`;
    await makeTopicAndDeadLetters(topic, group);
    const kafka = new Admin({ clientId: 'dapr-edges', bootstrapBrokers: kafkaBrokers!.split(',') });
    /** The dead-letter topic's largest record: 200 bytes (refuses every letter), or the broker's default. */
    const letterLimit = (limit: number | null) =>
      kafka.incrementalAlterConfigs({
        resources: [
          {
            resourceType: ConfigResourceTypes.TOPIC,
            resourceName: dlqTopic(group),
            configs: [
              limit === null
                ? { name: 'max.message.bytes', configOperation: IncrementalAlterConfigOperationTypes.DELETE }
                : {
                    name: 'max.message.bytes',
                    configOperation: IncrementalAlterConfigOperationTypes.SET,
                    value: String(limit),
                  },
            ],
          },
        ],
      });
    await letterLimit(200);
    const db = await openDb('memory://');
    await migrate(db);
    const handled: string[] = [];
    let dapr: DaprApp | undefined;
    try {
      dapr = await startDaprApp(db, {
        appId: group,
        name: group,
        targets: [
          consumerTarget({
            manifest: { name: 'edges-letter', consumes: { group, topics: [topic] } },
            batchIntervalMs: 200,
            setup: async () => ({
              handle: async (m: BusMessage) => {
                if (titleOf(m.event) === 'poison') throw new PermanentError('never works');
                handled.push(titleOf(m.event));
              },
              handleBatch: async (items: readonly BatchItem[]) => {
                if (items.some((i) => titleOf(i.message.event) === 'poison'))
                  throw new Error('poison in batch');
                handled.push(...items.map((i) => titleOf(i.message.event)));
              },
            }),
          }),
        ],
        topics: [topic],
        kafkaBrokers: kafkaBrokers!,
      });
      const bus = dapr.app.proc.runtime.bus;
      const lag = async () => (await bus.admin.lag(group)).reduce((n, p) => n + Number(p.lag), 0);
      // One event handled first: the group has a committed position to be behind of.
      await bus.publisher.publish([{ topic, key: 'u', event: taskCreated('u', 'before') }]);
      await waitFor(async () => handled.includes('before') && (await lag()) === 0, 60_000, 'the first event');
      const poison = taskCreated('u', 'poison');
      await bus.publisher.publish([{ topic, key: 'u', event: poison }]);
      await sleep(8_000);
      assert.deepEqual(
        await listDeadLetters(bus.admin, group),
        [],
        'the premise: the topic refuses the letter',
      );
      assert.equal(
        await lag(),
        1,
        'the poison event is not committed past while its dead letter is not written',
      );
      const later = taskCreated('u', 'after the poison');
      await bus.publisher.publish([{ topic, key: 'u', event: later }]);
      await sleep(2_000);
      assert.deepEqual(handled, ['before'], "the user's next event waits behind it");

      await letterLimit(null);
      const letters = await waitFor(
        async () => {
          const found = await listDeadLetters(bus.admin, group);
          return found.length > 0 ? found : undefined;
        },
        60_000,
        'the dead letter written once the topic takes it',
      );
      assert.equal(letters.length, 1);
      assert.equal(letters[0]!.event.id, poison.id);
      assert.match(letters[0]!.error, /never works/, 'the letter says why (x-dlq-error)');
      assert.equal(letters[0]!.source.topic, topic);
      await waitFor(() => handled.includes('after the poison'), 30_000, 'the next event handled after it');
      assert.deepEqual(handled, ['before', 'after the poison']);
    } finally {
      await dapr?.stop();
      await db.close();
      await kafka.close();
    }
  });
});
