/**
 * The relay's pipelined loop (a batch is sent while the next one is read and the previous one marked) under
 * the interleavings that are rare in a run but must not break its guarantees: a transaction that took a
 * smaller outbox id commits after a larger one was read; the relay is paused past its lease between reading a
 * batch and sending it, while another relay takes over and leaves; the database fails a marking while the
 * next batch is on its way; a send the broker wrote in part; a lease renewal whose answer came after the lease
 * ran out. PostgreSQL and a real Kafka broker; each interleaving is forced by a hook on the relay's database
 * handle that runs just before (or after) one of its statements, and the broker's topic is read back.
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

/** A relay's reads of pending rows (a batch, the read-ahead, the read of a round's start). */
const READS_PENDING = /FROM outbox\s+WHERE published_at IS NULL[\s\S]*ORDER BY outbox\.id/;
/** The fenced marking of a sent batch. */
const MARKS = /^\s*WITH marked AS \(\s*DELETE FROM outbox WHERE id = ANY/;
/** The relay's lease statement (taken or renewed). */
const ASKS_LEASE = /INSERT INTO leases/;

/**
 * `db` whose statements go through `around(sql, run)`: it may do anything before or after running the statement
 * (commit other transactions, pause) or fail it instead (throw).
 */
function hooked(db: Db, around: (sql: string, run: () => Promise<unknown>) => Promise<unknown>): Db {
  const wrapped = Object.create(db) as Db;
  wrapped.query = ((sql: string, params?: readonly unknown[]) =>
    around(sql, () => db.query(sql, params))) as Db['query'];
  return wrapped;
}

/**
 * `db` that stops once, after the next statement matching `pattern` was answered, for what `stall` is given
 * (a process paused there: GC, a blocked event loop, SIGSTOP); `stalled` says whether it happened.
 */
function stallingAfter(db: Db, pattern: RegExp) {
  let pause: (() => Promise<void>) | undefined;
  let stalled = false;
  return {
    db: hooked(db, async (sql, run) => {
      const result = await run();
      if (pause && pattern.test(sql)) {
        const paused = pause;
        pause = undefined;
        stalled = true;
        await paused();
      }
      return result;
    }),
    stall: (during: () => Promise<void>) => void (pause = during),
    stalled: () => stalled,
  };
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
  const configOf = (more: Record<string, string> = {}) =>
    loadConfig({
      DATABASE_URL: created.url,
      JWT_SECRET: TEST_SECRET,
      BUS: 'kafka',
      KAFKA_BROKERS: kafkaBrokers!,
      KAFKA_TOPIC_PREFIX: prefix,
      ...env,
      ...more,
    });
  // What the relay uses of a runtime: its configuration, database, bus, log and metrics.
  const relayOn = (relayDb: Db, relayBus: Bus = bus, relayEnv?: Record<string, string>) =>
    new Relay({
      config: configOf(relayEnv),
      db: relayDb,
      bus: relayBus,
      log: silentLogger,
      metrics: new Metrics(),
    } as unknown as Runtime);
  const holdLease = (relay: Relay) => (relay as unknown as { holdLease(): Promise<boolean> }).holdLease();
  /**
   * Runs the relay's rounds as its loop does (the lease first) until the outbox is empty; `retryFailed`: a
   * round that fails is retried, as the loop does (else it fails the test).
   */
  const drain = async (relay: Relay, opts: { retryFailed?: boolean } = {}) => {
    for (let round = 0; round < 20; round++) {
      if (!(await holdLease(relay))) throw new Error('the relay does not hold the lease');
      const published = relay.publishPending(3);
      await (opts.retryFailed ? published.catch(() => undefined) : published);
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

describe('relay interleavings on PostgreSQL and Kafka', { skip }, () => {
  it('keeps per-key order when a smaller outbox id commits after a larger one was read', async () => {
    const s = await setup('ri');
    try {
      // The relay reads the full batch [2, 3, 4] below. Before its next read, ann's first write commits, and
      // her second one (which waited for it on her stream's lock) commits too, with id 5.
      const armed: { beforeSecondRead?: () => Promise<void> } = {};
      let reads = 0;
      const relay = s.relayOn(
        hooked(s.db, async (sql, run) => {
          if (armed.beforeSecondRead && READS_PENDING.test(sql) && ++reads === 2)
            await armed.beforeSecondRead();
          return run();
        }),
      );
      await s.drain(relay); // active, and has looked on the bus (nothing pending yet)

      // ann's first write takes outbox id 1 and stays uncommitted; bob, cid and dan commit ids 2-4.
      let commitX!: () => void;
      const xMayCommit = new Promise<void>((resolve) => (commitX = resolve));
      let xWrote!: () => void;
      const xHasItsId = new Promise<void>((resolve) => (xWrote = resolve));
      const x = s.db.transaction(async (tx) => {
        await appendEvents(tx, [taskCreated('ann', 'ann-1')]);
        xWrote();
        await xMayCommit;
      });
      await xHasItsId;
      for (const user of ['bob', 'cid', 'dan']) await appendEvents(s.db, [taskCreated(user, `${user}-1`)]);
      armed.beforeSecondRead = async () => {
        const y = appendEvents(s.db, [taskCreated('ann', 'ann-2')]);
        commitX();
        await x;
        await y;
      };
      await s.drain(relay);
      await relay.stop();

      const titles = await s.onBroker();
      assert.deepEqual(
        titles.filter((t) => t.startsWith('ann-')),
        ['ann-1', 'ann-2'],
        `ann's events in commit order on the broker (all: ${titles.join(', ')})`,
      );
      assert.equal(titles.length, 5, 'each event once');
    } finally {
      await s.close();
    }
  });

  it('does not send a batch read before a pause past its lease, which another relay published meanwhile', async () => {
    const leaseMs = 300;
    const s = await setup('rl', { RELAY_LEASE_MS: String(leaseMs) });
    try {
      const b = s.relayOn(s.db);
      // A resumes holding rows it read before the pause.
      const aDb = stallingAfter(s.db, READS_PENDING);
      const a = s.relayOn(aDb.db);
      // A is active and has looked on the bus (nothing pending yet).
      await s.drain(a);
      for (const user of ['ann', 'bob', 'cid']) await appendEvents(s.db, [taskCreated(user, `${user}-1`)]);
      aDb.stall(async () => {
        await sleep(leaseMs + 200); // A is stopped past its lease
        await s.drain(b); // B takes over, publishes and marks the three rows
        await b.stop(); // and leaves (its lease released)
      });
      await a.publishPending(3);
      assert.ok(aDb.stalled(), 'A was paused after its read');
      await s.drain(a);
      await a.stop();

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
  it('after a takeover, finds what its predecessor sent unmarked behind any number of late commits', async () => {
    const leaseMs = 300;
    const s = await setup('rt', { RELAY_LEASE_MS: String(leaseMs) });
    // A transaction takes the outbox's first seven ids and stays open; three writes after it commit.
    let commitLate!: () => void;
    const lateMayCommit = new Promise<void>((resolve) => (commitLate = resolve));
    try {
      let lateWrote!: () => void;
      const lateHasItsIds = new Promise<void>((resolve) => (lateWrote = resolve));
      const late = s.db.transaction(async (tx) => {
        await appendEvents(
          tx,
          Array.from({ length: 7 }, (_, i) => taskCreated(`late${i}`, `late-${i}`)),
        );
        lateWrote();
        await lateMayCommit;
      });
      await lateHasItsIds;
      for (const user of ['ann', 'bob', 'cid']) await appendEvents(s.db, [taskCreated(user, `${user}-1`)]);
      // Relay A sends those three and dies before marking them (its marking fails; it is never used again).
      const a = s.relayOn(
        hooked(s.db, async (sql, run) => {
          if (MARKS.test(sql)) throw new Error('Connection terminated unexpectedly');
          return run();
        }),
      );
      assert.equal(await (a as unknown as { holdLease(): Promise<boolean> }).holdLease(), true);
      await assert.rejects(a.publishPending(3), /Connection terminated unexpectedly/);
      assert.deepEqual((await s.onBroker()).sort(), ['ann-1', 'bob-1', 'cid-1']);
      // The late transaction commits: its seven rows now come first among the pending ones, more than the
      // two batches a relay can leave unmarked.
      commitLate();
      await late;
      await sleep(leaseMs + 100); // A's lease runs out
      const b = s.relayOn(s.db);
      await s.drain(b);
      await b.stop();
      const titles = await s.onBroker();
      assert.equal(titles.length, 10, `each event once on the broker (all: ${titles.join(', ')})`);
      assert.equal(new Set(titles).size, 10);
    } finally {
      commitLate(); // a failed assertion must not leave the transaction holding a connection
      await s.close();
    }
  });

  it("after a takeover, reads back by its predecessor's batch size when a rolling deploy lowered it", async () => {
    const leaseMs = 300;
    const s = await setup('rb', { RELAY_LEASE_MS: String(leaseMs) });
    try {
      // One user, so one partition: eight events a relay of batch 8 sends in one batch.
      await appendEvents(
        s.db,
        Array.from({ length: 8 }, (_, i) => taskCreated('ann', `ann-${i}`)),
      );
      const a = s.relayOn(
        hooked(s.db, async (sql, run) => {
          if (MARKS.test(sql)) throw new Error('Connection terminated unexpectedly');
          return run();
        }),
        s.bus,
        { RELAY_BATCH_SIZE: '8' },
      );
      assert.equal(await (a as unknown as { holdLease(): Promise<boolean> }).holdLease(), true);
      await assert.rejects(a.publishPending(8), /Connection terminated unexpectedly/);
      assert.equal((await s.onBroker()).length, 8);
      await sleep(leaseMs + 100); // A's lease runs out
      // B sends batches of 3 (drain): two of them cover six of the partition's last messages, not eight.
      const b = s.relayOn(s.db, s.bus, { RELAY_BATCH_SIZE: '3' });
      await s.drain(b);
      await b.stop();
      const titles = await s.onBroker();
      assert.deepEqual(
        titles,
        Array.from({ length: 8 }, (_, i) => `ann-${i}`),
        'each event once on the broker, in order',
      );
    } finally {
      await s.close();
    }
  });

  it('goes on sending after a read-back that outlasts its lease, and a standby does not take over meanwhile', async () => {
    const leaseMs = 300;
    const s = await setup('rs', { RELAY_LEASE_MS: String(leaseMs) });
    try {
      for (const user of ['ann', 'bob', 'cid', 'dan'])
        await appendEvents(s.db, [taskCreated(user, `${user}-1`)]);
      // Each read of the bus takes twice the lease (a broker that delays a new group's join, say).
      const admin = Object.create(s.bus.admin) as Bus['admin'];
      let readingBack = false;
      admin.publishedEventIds = async (topic, last) => {
        readingBack = true;
        try {
          await sleep(2 * leaseMs);
          return await s.bus.admin.publishedEventIds!(topic, last);
        } finally {
          readingBack = false;
        }
      };
      const slowBus = Object.create(s.bus) as Bus;
      Object.defineProperty(slowBus, 'admin', { value: admin });
      const a = s.relayOn(s.db, slowBus);
      const standby = s.relayOn(s.db);
      const holdOf = (r: Relay) => () => (r as unknown as { holdLease(): Promise<boolean> }).holdLease();
      assert.equal(await holdOf(a)(), true, 'a is active');
      let standbyHeld = false;
      let polling = true;
      const poll = (async () => {
        // A standby asks for the lease as often as a relay's loop does, while the read-back runs (after it, a
        // first send that outlasts this short lease may rightly lose it).
        while (polling) {
          if (readingBack && (await holdOf(standby)())) standbyHeld = true;
          await sleep(leaseMs / 3);
        }
      })();
      try {
        await s.drain(a); // 20 rounds at most: a relay that starts its read-back over at every round fails here
      } finally {
        polling = false;
        await poll;
      }
      assert.equal(standbyHeld, false, 'the standby never held the lease during the read-back');
      await a.stop();
      const titles = await s.onBroker();
      assert.deepEqual([...titles].sort(), ['ann-1', 'bob-1', 'cid-1', 'dan-1'], 'each event once');
    } finally {
      await s.close();
    }
  });

  it('survives a marking that fails while the next batch is on its way, and sends nothing twice after', async () => {
    const s = await setup('rm');
    const unhandled: unknown[] = [];
    const onUnhandled = (err: unknown) => void unhandled.push(err);
    process.on('unhandledRejection', onUnhandled);
    try {
      for (let i = 0; i < 9; i++) await appendEvents(s.db, [taskCreated(`u${i % 4}`, `u${i % 4}-${i}`)]);
      // The connection drops under the first marking (PostgreSQL restarting, say), while the relay is already
      // reading and sending the next batch.
      let failed = false;
      const relay = s.relayOn(
        hooked(s.db, async (sql, run) => {
          if (!failed && MARKS.test(sql)) {
            failed = true;
            throw new Error('Connection terminated unexpectedly');
          }
          return run();
        }),
      );
      const hold = () => (relay as unknown as { holdLease(): Promise<boolean> }).holdLease();
      assert.equal(await hold(), true);
      await assert.rejects(relay.publishPending(3), /Connection terminated unexpectedly/);
      await sleep(100);
      assert.deepEqual(unhandled.map(String), [], 'no unhandled rejection (it would end the process)');
      // The next rounds find on the broker what was sent and not marked, and mark it instead of sending it again.
      await s.drain(relay);
      await relay.stop();
      const titles = await s.onBroker();
      assert.equal(titles.length, 9, `each event once on the broker (all: ${titles.join(', ')})`);
      assert.equal(new Set(titles).size, 9);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await s.close();
    }
  });
});

// Found by a review (2026-12-07), each failing before its fix: a send written in part, a renewal answered late.
describe('relay sends that fail in part, renewals answered late, on PostgreSQL and Kafka', { skip }, () => {
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
      await s.drain(relay, { retryFailed: true });
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
      // The database renewed A's lease; A sees the answer only after the stall.
      const aDb = stallingAfter(s.db, ASKS_LEASE);
      const a = s.relayOn(aDb.db);
      await s.drain(a, { retryFailed: true }); // A is active and has looked on the bus (nothing pending yet)
      for (const user of ['ann', 'bob', 'cid']) await appendEvents(s.db, [taskCreated(user, `${user}-1`)]);
      await sleep(leaseMs / 2); // less than two thirds of A's lease left: its next send renews it first
      // A stalls (a GC pause, a blocked event loop, SIGSTOP) once the renewal is answered, past the lease:
      // meanwhile B takes over, publishes the three events and marks them.
      aDb.stall(async () => {
        await sleep(leaseMs + 100);
        await s.drain(b, { retryFailed: true });
      });
      await a.publishPending(3).catch(() => undefined);
      assert.ok(aDb.stalled(), 'the renewal was paused');
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
