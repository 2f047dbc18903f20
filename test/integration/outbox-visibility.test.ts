/**
 * What an operator sees of a relay stuck on an event the broker refuses for good (a record larger than the
 * topic's max.message.bytes, which an operator lowered): `taskflow lag` names the event that blocks the outbox,
 * its failed attempts and last error, and the relay's gauges say so and keep moving while a send hangs. Real
 * PostgreSQL and a real Kafka broker; the CLI as a separate process.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { Admin } from '@platformatic/kafka';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import type { Bus } from '../../src/bus/types.ts';
import { loadConfig } from '../../src/config.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import type { Runtime } from '../../src/runtime.ts';
import { Relay } from '../../src/services/relay/index.ts';
import { openDb } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { appendEvents } from '../../src/store/outbox.ts';
import { TEST_SECRET, waitFor } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { taskCreated } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const run = promisify(execFile);
const pgUrl = process.env.TEST_DATABASE_URL;
const skip =
  !pgUrl || !kafkaBrokers
    ? 'needs TEST_DATABASE_URL and TEST_KAFKA_BROKERS (scripts/test starts both)'
    : false;

/** A fresh database, a Kafka bus on topics of its own (task-events refuses records above 4,000 bytes). */
async function setup(tag: string) {
  const created = await createPgDatabase(pgUrl!);
  const db = await openDb(created.url);
  await migrate(db);
  const prefix = `${tag}${randomBytes(3).toString('hex')}.`;
  const admin = new Admin({ clientId: `outbox-${tag}`, bootstrapBrokers: kafkaBrokers!.split(',') });
  await admin.createTopics({
    topics: [`${prefix}task-events`],
    partitions: 1,
    replicas: 1,
    configs: [{ name: 'max.message.bytes', value: '4000' }],
  });
  const bus: Bus = createKafkaBus(
    { brokers: kafkaBrokers!.split(','), clientId: `outbox-${tag}`, topicPrefix: prefix },
    { log: silentLogger },
  );
  const env = {
    DATABASE_URL: created.url,
    JWT_SECRET: TEST_SECRET,
    BUS: 'kafka',
    KAFKA_BROKERS: kafkaBrokers!,
    KAFKA_TOPIC_PREFIX: prefix,
  };
  const metrics = new Metrics();
  const relayOn = (relayBus: Bus) =>
    new Relay({
      config: loadConfig(env),
      db,
      bus: relayBus,
      log: silentLogger,
      metrics,
    } as unknown as Runtime);
  const gauge = async (name: string) =>
    (await metrics.registry.getSingleMetric(name)?.get())?.values[0]?.value;
  const cli = (...args: string[]) =>
    run(process.execPath, ['bin/taskflow.js', ...args], {
      env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
      timeout: 120_000,
    });
  const close = async () => {
    await admin.close().catch(() => undefined);
    await bus.close();
    await db.close();
    await created.drop();
  };
  return { db, bus, relayOn, gauge, cli, close };
}

interface LagJson {
  outbox: {
    pending: number;
    oldestPendingAgeSeconds: number;
    head: { eventId: string; type: string; key: string; attempts: number; lastError: string | null } | null;
  };
  lag: { group: string; lag: number }[];
}

describe('the outbox as an operator sees it, on PostgreSQL and Kafka', { skip }, () => {
  it('taskflow lag names the event that blocks the relay, its failed attempts and last error', async () => {
    const s = await setup('ov');
    try {
      const big = taskCreated('u-big', 'big', { description: 'x'.repeat(6000) });
      const behind = taskCreated('u-big', 'behind');
      await appendEvents(s.db, [big, behind]);
      const relay = s.relayOn(s.bus);
      assert.equal(await (relay as unknown as { holdLease(): Promise<boolean> }).holdLease(), true);
      for (let round = 0; round < 2; round++)
        await assert.rejects(relay.publishPending(10), /larger than the max message size/);
      await relay.stop();

      const json = await s.cli('lag', '--json');
      const shown = JSON.parse(json.stdout) as LagJson;
      assert.ok(Array.isArray(shown.lag), `consumer lag under "lag": ${json.stdout}`);
      assert.equal(shown.outbox?.pending, 2, json.stdout);
      assert.ok(shown.outbox.oldestPendingAgeSeconds >= 0);
      assert.equal(shown.outbox.head?.eventId, big.id);
      assert.equal(shown.outbox.head.type, 'task.created');
      assert.equal(shown.outbox.head.key, 'u-big');
      assert.equal(shown.outbox.head.attempts, 2);
      assert.match(shown.outbox.head.lastError ?? '', /larger than the max message size/);

      const table = (await s.cli('lag')).stdout;
      assert.match(table, /^outbox: 2 events? wait/m, table);
      assert.ok(table.includes(big.id), `the head event named:\n${table}`);
      assert.match(table, /failed 2 times/, table);
      assert.match(table, /larger than the max message size/, table);
    } finally {
      await s.close();
    }
  });

  it("the relay's gauges say the failed attempts of the event that blocks the outbox", async () => {
    const s = await setup('og');
    try {
      // A send the broker refuses for good: the relay's loop retries it, and the head row counts the attempts.
      await appendEvents(s.db, [taskCreated('u-big', 'big', { description: 'x'.repeat(6000) })]);
      const relay = s.relayOn(s.bus);
      relay.start();
      try {
        await waitFor(
          async () => ((await s.gauge('taskflow_outbox_head_attempts')) ?? 0) >= 2,
          60_000,
          'taskflow_outbox_head_attempts >= 2',
        );
        assert.ok(((await s.gauge('taskflow_outbox_publish_failures_total')) ?? 0) >= 2);
      } finally {
        await relay.stop();
      }
    } finally {
      await s.close();
    }
  });

  it('the outbox gauges follow the outbox while a send hangs, not the figures read when the round began', async () => {
    const s = await setup('oh');
    try {
      // A broker that takes the request and never answers.
      let release!: () => void;
      const hanging = new Promise<void>((r) => (release = r));
      const hung = Object.create(s.bus) as Bus;
      Object.defineProperty(hung, 'publisher', {
        value: Object.assign(Object.create(s.bus.publisher) as Bus['publisher'], {
          publish: () => hanging,
        }),
      });
      await appendEvents(s.db, [taskCreated('u-1', 'first'), taskCreated('u-1', 'second')]);
      const relay = s.relayOn(hung);
      relay.start();
      try {
        await waitFor(
          async () => (await s.gauge('taskflow_outbox_pending_events')) === 2,
          20_000,
          'two pending',
        );
        await appendEvents(s.db, [taskCreated('u-2', 'third'), taskCreated('u-3', 'fourth')]);
        await waitFor(
          async () => (await s.gauge('taskflow_outbox_pending_events')) === 4,
          20_000,
          'the pending gauge to follow the outbox during a hung send',
        );
        const age = (await s.gauge('taskflow_outbox_oldest_pending_age_seconds')) ?? 0;
        await waitFor(
          async () => ((await s.gauge('taskflow_outbox_oldest_pending_age_seconds')) ?? 0) > age + 1,
          20_000,
          'the oldest age to grow during a hung send',
        );
      } finally {
        release();
        await relay.stop();
      }
    } finally {
      await s.close();
    }
  });
});
