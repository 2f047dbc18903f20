/**
 * Relay defects a review found, each forced with real components (PostgreSQL and a Kafka broker) and checked on
 * what the broker holds afterwards.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { Admin, ConfigResourceTypes, IncrementalAlterConfigOperationTypes } from '@platformatic/kafka';
import { createKafkaBus } from '../../src/bus/kafka/index.ts';
import type { Bus } from '../../src/bus/types.ts';
import { loadConfig } from '../../src/config.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import type { Runtime } from '../../src/runtime.ts';
import { Relay } from '../../src/services/relay/index.ts';
import { openDb, type Db } from '../../src/store/db.ts';
import { migrate } from '../../src/store/migrate.ts';
import { appendEvents } from '../../src/store/outbox.ts';
import { TEST_SECRET } from '../helpers/app.ts';
import { createPgDatabase } from '../helpers/db.ts';
import { keyPerPartition, taskCreated, titleOf } from '../helpers/events.ts';
import { kafkaBrokers } from '../helpers/transports.ts';

const pgUrl = process.env.TEST_DATABASE_URL;
const skip =
  !pgUrl || !kafkaBrokers
    ? 'needs TEST_DATABASE_URL and TEST_KAFKA_BROKERS (scripts/test starts both)'
    : false;

/** The relay's lease statement (taken or renewed). */
const ASKS_LEASE = /INSERT INTO leases/;

/** `db` whose statements go through `around(sql, run)`: it may do anything before or after running one. */
function hooked(db: Db, around: (sql: string, run: () => Promise<unknown>) => Promise<unknown>): Db {
  const wrapped = Object.create(db) as Db;
  wrapped.query = ((sql: string, params?: readonly unknown[]) =>
    around(sql, () => db.query(sql, params))) as Db['query'];
  return wrapped;
}

/** A fresh database whose events go to the outbox, a Kafka bus on topics of its own, and relays on both. */
async function setup(tag: string, env: Record<string, string> = {}) {
  const created = await createPgDatabase(pgUrl!);
  const db = await openDb(created.url);
  await migrate(db);
  const prefix = `${tag}${randomBytes(3).toString('hex')}.`;
  const bus: Bus = createKafkaBus(
    { brokers: kafkaBrokers!.split(','), clientId: `relay-${tag}`, topicPrefix: prefix },
    { log: silentLogger },
  );
  const relayOn = (relayDb: Db, relayBus: Bus = bus) =>
    new Relay({
      config: loadConfig({
        DATABASE_URL: created.url,
        JWT_SECRET: TEST_SECRET,
        BUS: 'kafka',
        KAFKA_BROKERS: kafkaBrokers!,
        KAFKA_TOPIC_PREFIX: prefix,
        ...env,
      }),
      db: relayDb,
      bus: relayBus,
      log: silentLogger,
      metrics: new Metrics(),
    } as unknown as Runtime);
  const holdLease = (relay: Relay) => (relay as unknown as { holdLease(): Promise<boolean> }).holdLease();
  /** Runs the relay's rounds as its loop does (the lease first) until the outbox is empty. */
  const drain = async (relay: Relay, batch = 3) => {
    for (let round = 0; round < 20; round++) {
      if (!(await holdLease(relay))) throw new Error('the relay does not hold the lease');
      await relay.publishPending(batch).catch(() => undefined); // a failed round is retried, as the loop does
      const left = await db.query('SELECT 1 FROM outbox LIMIT 1');
      if (left.rows.length === 0) return;
    }
    throw new Error('the outbox was not drained in 20 rounds');
  };
  const onBroker = async () =>
    (await bus.admin.read('task-events', { limit: Infinity })).map((m) => titleOf(m.event));
  const close = async () => {
    await bus.close();
    await db.close();
    await created.drop();
  };
  return { db, bus, prefix, relayOn, holdLease, drain, onBroker, close };
}

describe('relay review on PostgreSQL and Kafka', { skip }, () => {
  it('loses no event after a send that one partition refused and another one wrote', async () => {
    const s = await setup('rr');
    const admin = new Admin({ clientId: 'relay-review', bootstrapBrokers: kafkaBrokers!.split(',') });
    try {
      // task-events with a record limit one event is above: the broker refuses that partition's part of a
      // request and writes the others' (as NOT_ENOUGH_REPLICAS does for one partition whose replicas are behind).
      const topic = `${s.prefix}task-events`;
      await admin.createTopics({
        topics: [topic],
        partitions: 3,
        replicas: 1,
        configs: [{ name: 'max.message.bytes', value: '4000' }],
      });
      const [big, small] = keyPerPartition(3, 'rr');
      await appendEvents(s.db, [
        taskCreated(small!, 'small-1'),
        taskCreated(big!, 'big-1', { description: 'x'.repeat(6000) }),
      ]);
      const relay = s.relayOn(s.db);
      assert.equal(await s.holdLease(relay), true);
      await assert.rejects(relay.publishPending(3), /larger than the max message size/);
      assert.deepEqual(await s.onBroker(), ['small-1'], 'the other partition was written');

      // The refusal ends (the limit raised; the replicas caught up), and the small user writes again.
      await admin.incrementalAlterConfigs({
        resources: [
          {
            resourceType: ConfigResourceTypes.TOPIC,
            resourceName: topic,
            configs: [
              {
                name: 'max.message.bytes',
                configOperation: IncrementalAlterConfigOperationTypes.SET,
                value: '1048588',
              },
            ],
          },
        ],
      });
      await appendEvents(s.db, [taskCreated(small!, 'small-2')]);
      await s.drain(relay);
      await relay.stop();
      const titles = await s.onBroker();
      assert.deepEqual(
        [...titles].sort(),
        ['big-1', 'small-1', 'small-2'],
        `every event on the broker, once (all: ${titles.join(', ')})`,
      );
    } finally {
      await admin.close().catch(() => undefined);
      await s.close();
    }
  });

  it('sends nothing on a lease renewal whose answer came after the lease it asked for had run out', async () => {
    const leaseMs = 300;
    const s = await setup('rp', { RELAY_LEASE_MS: String(leaseMs) });
    try {
      const b = s.relayOn(s.db);
      let pause: (() => Promise<void>) | undefined;
      const a = s.relayOn(
        hooked(s.db, async (sql, run) => {
          const result = await run();
          if (pause && ASKS_LEASE.test(sql)) {
            const paused = pause;
            pause = undefined;
            await paused(); // the database renewed A's lease; A sees the answer only after this
          }
          return result;
        }),
      );
      await s.drain(a); // A is active and has looked on the bus (nothing pending yet)
      for (const user of ['ann', 'bob', 'cid']) await appendEvents(s.db, [taskCreated(user, `${user}-1`)]);
      await sleep(leaseMs / 2); // less than two thirds of A's lease left: its next send renews it first
      // A stalls (a GC pause, a blocked event loop, SIGSTOP) once the renewal is answered, past the lease:
      // meanwhile B takes over, publishes the three events and marks them.
      pause = async () => {
        await sleep(leaseMs + 100);
        await s.drain(b);
      };
      await a.publishPending(3).catch(() => undefined);
      assert.equal(pause, undefined, 'the renewal was paused');
      await b.stop();
      const titles = await s.onBroker();
      assert.deepEqual(
        [...titles].sort(),
        ['ann-1', 'bob-1', 'cid-1'],
        `each event once on the broker (all: ${titles.join(', ')})`,
      );
    } finally {
      await s.close();
    }
  });
});
